"""Per-subgroup Dice of two segmentation methods side by side, and their difference (the FairMedSeg
paper's Figure 2: age group x breast density and age group x menopausal status heatmaps).

:func:`dice_heatmap_comparison` reads the per-case score files (``scores_<split>.csv`` of
:class:`fairmonai.handlers.SegmentationScoresWriter`) of a base and a compared method, possibly
several runs each (seeds), pools the cases of each method, and for each pair of attributes writes
three heatmaps (base, method, method - base) and one long CSV of the cells.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..data.manifest import is_missing, load_schema
from . import plots
from ._inputs import ReportInputError, check_unit_interval, encode_attribute, read_predictions
from .report import dice_matrix

__all__ = ["FIGURE2_PAIRS", "dice_heatmap_comparison"]

#: The attribute pairs of the FairMedSeg paper's Figure 2.
FIGURE2_PAIRS = (("age_group", "breast_density"), ("age_group", "menopausal_status"))


def _pooled(files: Sequence[str | os.PathLike], name: str) -> pd.DataFrame:
    if not files:
        raise ReportInputError(f"no score files for '{name}'")
    frames = [read_predictions(f) for f in files]
    for f, df in zip(files, frames):
        if "dice" not in df.columns:
            raise ReportInputError(f"{f}: no 'dice' column (expected a segmentation scores file)")
        df["dice"] = check_unit_interval(df, "dice", f)
    return pd.concat(frames, ignore_index=True)


def dice_heatmap_comparison(
    base_files: Sequence[str | os.PathLike],
    method_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    pairs: Sequence[tuple[str, str]] = FIGURE2_PAIRS,
    schema: str | os.PathLike | None = "mama_mia",
    labels: tuple[str, str] = ("base", "FairMedSeg"),
) -> pd.DataFrame:
    """Mean Dice per cell of each attribute pair for both methods, and method minus base.

    Cases of all files of one method are pooled (a case scored in three seeds counts three times);
    a case with an empty attribute cell (excluded value) is in no cell of the pairs using it. A cell
    empty for either method has no difference (NaN, blank in the figure).

    Args:
        base_files: score CSVs of the base method (one per run).
        method_files: score CSVs of the compared method.
        out_dir: folder of the PNGs and ``subgroup_dice.csv``.
        pairs: attribute pairs (rows, columns). Defaults to :data:`FIGURE2_PAIRS`.
        schema: dataset schema giving the category order (``None``: sorted values).
        labels: names of the two methods in titles and file names.

    Returns:
        One row per (pair, row value, column value): ``n_base``, ``dice_base``, ``n_method``,
        ``dice_method``, ``difference``; also written to ``out_dir/subgroup_dice.csv``.

    Raises:
        ReportInputError: no file for a method, a file without ``dice``, a Dice outside [0, 1] or not
            finite, an attribute column missing or a value outside the schema's categories.
    """
    out = Path(out_dir)
    base, method = _pooled(base_files, labels[0]), _pooled(method_files, labels[1])
    attrs = list(dict.fromkeys(a for p in pairs for a in p))
    for df, name in ((base, labels[0]), (method, labels[1])):
        missing = [a for a in attrs if a not in df.columns]
        if missing:
            raise ReportInputError(f"the '{name}' score files have no column(s) {missing}")
    specs = load_schema(schema).attributes if schema is not None else {}
    # without a schema entry both methods share one category order: the sorted values of either
    cats = {a: sorted({str(v).strip() for df in (base, method) for v in df[a] if not is_missing(v)}) for a in attrs}
    rows = []
    tag = [lab.lower().replace(" ", "_") for lab in labels]
    for a, b in pairs:
        mats = []
        for df, name in ((base, labels[0]), (method, labels[1])):
            where = f"the '{name}' score files"
            ca, na, _, _ = encode_attribute(df, where, a, specs.get(a), cats[a])
            cb, nb, _, _ = encode_attribute(df, where, b, specs.get(b), cats[b])
            mats.append(dice_matrix(df["dice"].to_numpy(dtype=float), ca, cb, len(na), len(nb)))
        (m0, n0), (m1, n1) = mats
        diff = m1 - m0
        for lab, m, n in ((tag[0], m0, n0), (tag[1], m1, n1)):
            plots.heatmap(m, na, nb, out / f"heatmap_{a}_x_{b}_{lab}.png", counts=n, row_name=a, col_name=b,
                          title=f"Mean Dice, {lab}: {a} x {b}")
        plots.heatmap(diff, na, nb, out / f"heatmap_{a}_x_{b}_difference.png", row_name=a, col_name=b,
                      title=f"Dice {labels[1]} - {labels[0]}: {a} x {b}", diverging=True)
        for i, ra in enumerate(na):
            for j, cb_name in enumerate(nb):
                rows.append({"pair": f"{a} x {b}", "row": ra, "column": cb_name, "n_base": int(n0[i, j]),
                             "dice_base": m0[i, j], "n_method": int(n1[i, j]), "dice_method": m1[i, j],
                             "difference": diff[i, j]})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "subgroup_dice.csv", index=False, lineterminator="\n")
    return table
