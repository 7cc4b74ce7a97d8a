"""Per-subgroup Dice of two methods and their difference, checked on hand-built score files."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fairmonai.reports import ReportInputError, dice_heatmap_comparison


def _write(path, rows):
    pd.DataFrame(rows, columns=["case_id", "dice", "age_group", "breast_density", "menopausal_status"]).to_csv(
        path, index=False)
    return path


def test_cells_pooled_over_runs_and_difference(tmp_path):
    base1 = _write(tmp_path / "b1.csv", [("a", 0.2, "71+", "d", "post"), ("b", 0.6, "71+", "d", "post"),
                                         ("c", 0.9, "0-40", "a", "pre"), ("d", 0.5, "", "a", "unknown")])
    base2 = _write(tmp_path / "b2.csv", [("a", 0.4, "71+", "d", "post")])
    meth = _write(tmp_path / "m.csv", [("a", 0.7, "71+", "d", "post"), ("c", 0.8, "0-40", "a", "pre"),
                                       ("e", 0.3, "41-50", "b", "pre")])
    table = dice_heatmap_comparison([base1, base2], [meth], tmp_path / "out")
    cell = table.set_index(["pair", "row", "column"])
    # 71+ x d: base pooled (0.2 + 0.6 + 0.4) / 3 = 0.4 over 3 cases; method 0.7; difference 0.3
    c = cell.loc[("age_group x breast_density", "71+", "d")]
    assert (c.n_base, c.n_method) == (3, 1)
    assert c.dice_base == pytest.approx(0.4) and c.dice_method == pytest.approx(0.7)
    assert c.difference == pytest.approx(0.3)
    # 0-40 x a: 0.9 vs 0.8; the case without age (d) is in no age cell
    c = cell.loc[("age_group x breast_density", "0-40", "a")]
    assert c.n_base == 1 and c.difference == pytest.approx(-0.1)
    assert cell.loc[("age_group x breast_density", "51-60", "a")].n_base == 0
    # a cell with no base case has no difference
    c = cell.loc[("age_group x menopausal_status", "41-50", "pre")]
    assert c.n_base == 0 and c.n_method == 1 and math.isnan(c.difference)
    # schema order: 5 age groups x 4 densities + 5 x 3 menopause cells
    assert len(table) == 5 * 4 + 5 * 3
    for name in ("base", "fairmedseg", "difference"):
        assert (tmp_path / "out" / f"heatmap_age_group_x_breast_density_{name}.png").stat().st_size > 0
    assert pd.read_csv(tmp_path / "out" / "subgroup_dice.csv").shape == table.shape


def test_errors_name_the_problem(tmp_path):
    good = _write(tmp_path / "g.csv", [("a", 0.2, "71+", "d", "post")])
    with pytest.raises(ReportInputError, match="no score files for 'FairMedSeg'"):
        dice_heatmap_comparison([good], [], tmp_path)
    pd.DataFrame({"case_id": ["a"], "dice": [0.5], "age_group": ["71+"]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ReportInputError, match=r"have no column\(s\) \['breast_density', 'menopausal_status'\]"):
        dice_heatmap_comparison([good], [tmp_path / "short.csv"], tmp_path)
    bad = _write(tmp_path / "bad.csv", [("a", 0.2, "90+", "d", "post")])
    with pytest.raises(ReportInputError) as err:
        dice_heatmap_comparison([good], [bad], tmp_path)
    assert str(err.value) == ("the 'FairMedSeg' score files: case 'a', column 'age_group': value '90+' is not one of "
                              "the schema's categories ['0-40', '41-50', '51-60', '61-70', '71+']")
    over = _write(tmp_path / "over.csv", [("a", 1.2, "71+", "d", "post")])
    with pytest.raises(ReportInputError) as err:
        dice_heatmap_comparison([over], [good], tmp_path)
    assert str(err.value) == f"{over}: case 'a', column 'dice': value 1.2 is outside [0, 1]"
