"""Columns read from hand-written run outputs (columns.py); expected values computed by hand."""

from __future__ import annotations

import json

import pytest

from fairmonai.experiments.columns import ColumnError, column_value, csv_value, json_value

REPORT = {"attributes": {"race": {"n_samples": 90, "metrics": {"auc": {"overall": 0.75, "by_group": {"Black": None}}},
                                  "disparities": {"eom": {"value": 0.625}, "flag": {"value": True}}}}}
# per-case scores: the hard cells (61-70, b) are rows 1 and 4; row 5 has an empty density
SCORES = """case_id,dice,age_group,breast_density
001,0.5,61-70,b
002,0.25,61-70,c
003,1.0,71+,b
004,0.75,61-70,b
005,0.125,61-70,
"""
# a penalty curve of 6 logged steps: the last quarter starts at row floor(0.75 * 6) = 4
CURVE = "step,mi_knn\n1,0.9\n2,0.8\n3,0.7\n4,0.6\n5,0.3\n6,0.2\n"


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "eval" / "report_test").mkdir(parents=True)
    (tmp_path / "eval" / "report_test" / "report.json").write_text(json.dumps(REPORT))
    (tmp_path / "eval" / "scores_test.csv").write_text(SCORES)
    (tmp_path / "eval" / "penalty_curve.csv").write_text(CURVE)
    return tmp_path


HARD = {"age_group": "61-70", "breast_density": "b"}


@pytest.mark.parametrize("source, expected", [
    ({"json": "eval/report_{split}/report.json", "key": "attributes.race.disparities.eom.value"}, 0.625),
    ({"json": "eval/report_{split}/report.json", "key": "attributes.race.n_samples"}, 90),
    ({"json": "eval/report_{split}/report.json", "key": "attributes.race.metrics.auc.by_group.Black"}, None),
    # (0.5 + 0.75) / 2
    ({"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "mean", "where": HARD}, 0.625),
    # the others: 0.25, 1.0, 0.125 -> 1.375 / 3
    ({"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "mean", "unless": HARD}, 1.375 / 3),
    ({"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "count", "where": HARD}, 2),
    ({"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "count", "unless": HARD}, 3),
    # an empty cell matches "": row 5 only
    ({"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "sum", "where": {"breast_density": ""}}, 0.125),
    ({"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "max", "where": {"age_group": "61-70"}}, 0.75),
    ({"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "min", "where": {"age_group": "61-70"}}, 0.125),
    ({"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "mean", "where": {"age_group": "0-40"}}, None),
    # last quarter of the curve: rows 5, 6 -> (0.3 + 0.2) / 2
    ({"csv": "eval/penalty_curve.csv", "column": "mi_knn", "reduce": "mean", "from_fraction": 0.75}, 0.25),
    ({"csv": "eval/penalty_curve.csv", "column": "mi_knn", "reduce": "last"}, 0.2),
    # from row floor(0.5 * 6) = 3: 0.6, 0.3, 0.2
    ({"csv": "eval/penalty_curve.csv", "column": "mi_knn", "reduce": "count", "from_fraction": 0.5}, 3),
])
def test_column_values(run_dir, source, expected):
    value = column_value(run_dir, "test", source)
    assert value == pytest.approx(expected) if expected is not None else value is None
    assert type(value) is (int if isinstance(expected, int) else type(value))


def test_case_ids_and_categories_stay_text(run_dir):
    # "001" stays "001" (not 1) when it is a filter column
    assert csv_value(run_dir / "eval" / "scores_test.csv", "dice", "mean", where={"case_id": "001"}) == 0.5


def test_column_errors(run_dir):
    report = run_dir / "eval" / "report_test" / "report.json"
    scores = run_dir / "eval" / "scores_test.csv"
    with pytest.raises(ColumnError) as e:
        json_value(report, "attributes.race.metrics.acc.overall")
    assert str(e.value) == (f"{report}: no key 'acc' at 'attributes.race.metrics' (key path "
                            "'attributes.race.metrics.acc.overall'); found ['auc']")
    with pytest.raises(ColumnError) as e:
        json_value(report, "attributes.race.disparities.flag.value")
    assert str(e.value) == f"{report}: 'attributes.race.disparities.flag.value' is True, not a number"
    with pytest.raises(ColumnError) as e:
        column_value(run_dir, "val", {"json": "eval/report_{split}/report.json", "key": "x"})
    assert str(e.value) == f"{run_dir}/eval/report_val/report.json: no such file (column source 'json')"
    with pytest.raises(ColumnError) as e:
        csv_value(scores, "hd95", "mean")
    assert str(e.value) == f"{scores}: no column 'hd95'; columns ['case_id', 'dice', 'age_group', 'breast_density']"
    with pytest.raises(ColumnError) as e:
        csv_value(scores, "dice", "mean", where={"menopause": "post"})
    assert str(e.value) == (f"{scores}: no column 'menopause' to filter on; columns ['case_id', 'dice', 'age_group', "
                            "'breast_density']")
    with pytest.raises(ColumnError) as e:
        csv_value(scores, "age_group", "mean")
    assert str(e.value) == f"{scores}: column 'age_group' is not numeric"
