"""Seeded, stratified, reproducible splits, and the data lists bundles read.

Stratification is on label and sensitive attribute(s) jointly: a stratum is one combination of
their values. Inside each stratum the cases are shuffled with a seeded generator, then

* :func:`stratified_train_test_split` puts ``round(train_fraction * n)`` of them in train (70 % per
  class, as the FaMI paper states). A stratum too small to split (one case) goes to train, so
  "where counts allow" is automatic and no case is dropped.
* :func:`stratified_train_val_test_split` takes the same training cases and cuts the rest into
  validation and test (70/20/10, as Hänel et al. split ISIC 2020).
* :func:`stratified_kfold` deals them to the folds round-robin, continuing where the previous stratum
  stopped, so every stratum is spread as evenly as its size allows and fold sizes differ by at
  most one overall.

Both are pure functions of (strata, seed): the same inputs give the same split on any machine
(numpy's PCG64 generator).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .manifest import ManifestError, ManifestSchema, load_schema, log_missing_values, read_manifest_records

__all__ = [
    "strata_keys",
    "stratified_train_test_split",
    "stratified_train_val_test_split",
    "stratified_kfold",
    "assign_splits",
    "class_counts",
    "load_datalist",
    "require_split_parts",
]

DATALIST_SPLITS = ("train", "val", "test", "trainval", "all")


def strata_keys(*columns: Sequence) -> np.ndarray:
    """One integer stratum id per case from the joint values of ``columns`` (all of equal length)."""
    if not columns:
        raise ValueError("strata_keys needs at least one column")
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError(f"strata columns differ in length: {[len(c) for c in columns]}")
    joint = np.array(["\x1f".join(str(c[i]) for c in columns) for i in range(n)], dtype=object)
    _, inverse = np.unique(joint.astype(str), return_inverse=True)
    return inverse.reshape(-1)


def stratified_train_test_split(strata: Sequence[int], train_fraction: float = 0.7, seed: int = 0) -> np.ndarray:
    """Boolean mask of training cases: ``round(train_fraction * n_s)`` of each stratum ``s``.

    Args:
        strata: stratum id per case, shape (N,).
        train_fraction: share of each stratum in train, in (0, 1).
        seed: seed of the shuffle inside each stratum.

    Returns:
        ``is_train``, bool array of shape (N,).
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    is_train = np.zeros(len(strata), dtype=bool)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        rng.shuffle(idx)
        n_train = max(1, int(round(train_fraction * len(idx))))
        is_train[idx[:n_train]] = True
    return is_train


def stratified_train_val_test_split(strata: Sequence[int], train_fraction: float = 0.7, val_fraction: float = 0.0,
                                    seed: int = 0) -> np.ndarray:
    """``"train"`` / ``"val"`` / ``"test"`` per case, stratified: the three parts of each stratum ``s``
    of ``n_s`` cases have ``n_train = max(1, round(train_fraction * n_s))``,
    ``n_val = round((train_fraction + val_fraction) * n_s) - n_train`` (at least 0, at most what is
    left) and the rest cases.

    The training cases are exactly those of :func:`stratified_train_test_split` with the same
    ``strata``, ``train_fraction`` and ``seed`` (the same shuffle), so ``val_fraction=0`` gives its
    split; validation takes the next cases of each shuffled stratum. The bounds are cumulative, so
    the three shares of a stratum add up to ``n_s`` and round as the fractions do (a stratum of 10:
    7 / 2 / 1 at 0.7 / 0.2). A stratum of one or two cases has no room for all three parts (its
    cases go to train first, then validation).

    Args:
        strata: stratum id per case, shape (N,).
        train_fraction: share of each stratum in train, in (0, 1).
        val_fraction: share in validation, ``>= 0``, with ``train_fraction + val_fraction < 1`` (the
            test share is the rest).
        seed: seed of the shuffle inside each stratum.

    Returns:
        ``split``, object array of shape (N,).

    Raises:
        ValueError: a fraction out of range, naming it.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not (val_fraction >= 0.0 and train_fraction + val_fraction < 1.0):
        raise ValueError(f"val_fraction must be >= 0 with train_fraction + val_fraction < 1 (a test part is left); "
                         f"got train_fraction {train_fraction}, val_fraction {val_fraction}")
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    split = np.full(len(strata), "test", dtype=object)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        rng.shuffle(idx)
        n_train = max(1, int(round(train_fraction * len(idx))))
        n_val = min(max(int(round((train_fraction + val_fraction) * len(idx))) - n_train, 0), len(idx) - n_train)
        split[idx[:n_train]] = "train"
        split[idx[n_train:n_train + n_val]] = "val"
    return split


def stratified_kfold(strata: Sequence[int], num_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number in ``[0, num_folds)`` per case, each stratum dealt round-robin after a seeded shuffle.

    Args:
        strata: stratum id per case, shape (N,).
        num_folds: number of folds, at least 2 and at most N.
        seed: seed of the shuffle.

    Returns:
        ``fold``, int array of shape (N,).
    """
    strata = np.asarray(strata)
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if num_folds > len(strata):
        raise ValueError(f"num_folds={num_folds} exceeds the number of cases ({len(strata)})")
    rng = np.random.default_rng(seed)
    fold = np.full(len(strata), -1, dtype=int)
    offset = 0
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        rng.shuffle(idx)
        fold[idx] = (offset + np.arange(len(idx))) % num_folds
        offset = (offset + len(idx)) % num_folds
    return fold


def assign_splits(
    labels: Sequence, groups: Sequence | None = None, *, train_fraction: float = 0.7, val_fraction: float = 0.0,
    num_folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``split`` ("train"/"test", and "val" when ``val_fraction > 0``) and ``fold`` (-1 outside train) per
    case, stratified on label x group (:func:`stratified_train_val_test_split`).

    The k folds partition the training part only; validation for monitoring is one of them, unless
    the split has its own validation part (``val_fraction > 0``), which :func:`load_datalist` then
    uses instead of a fold.
    """
    strata = strata_keys(labels) if groups is None else strata_keys(labels, groups)
    split = stratified_train_val_test_split(strata, train_fraction, val_fraction, seed)
    is_train = split == "train"
    fold = np.full(len(strata), -1, dtype=int)
    train_idx = np.flatnonzero(is_train)
    fold[train_idx] = stratified_kfold(strata[train_idx], num_folds=min(num_folds, len(train_idx)), seed=seed + 1)
    return split, fold


def load_datalist(
    manifest: str | os.PathLike,
    schema: str | os.PathLike | Mapping | ManifestSchema,
    split: str = "train",
    *,
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 0,
    stratify_on: Sequence[str] | None = None,
    check_files: bool = True,
    manifest_folds: bool = True,
) -> list[dict]:
    """The records of one part of a manifest, for a MONAI dataset.

    Parts: ``train`` (training part minus fold ``fold``), ``val`` (fold ``fold`` of the training
    part, or the manifest's ``split == "val"`` rows when it has any), ``trainval`` (the whole
    training part), ``test`` (``split == "test"``), ``all``.

    Logs at INFO, per attribute, how many cases of the returned part have no value and were
    excluded or counted in the missing category by the schema's policy (see
    :func:`fairmonai.data.manifest.log_missing_values`).

    A manifest's own ``split`` / ``fold`` columns win (a dataset's official split). Where they are
    absent, the split is made here with :func:`assign_splits`, stratified on the label and the
    attributes in ``stratify_on`` (default: all schema attributes), seeded by ``seed``; the training
    part's folds are made the same way when the manifest has none. The test split is never part of ``train`` or ``val``.
    A manifest's fold column must have ``num_folds`` folds: with another number the call is an error
    (a 10-fold experiment never runs silently on a 5-fold column), unless ``manifest_folds`` is False,
    which ignores the column and makes ``num_folds`` folds here.

    Raises:
        ManifestError: an invalid manifest (see :func:`load_manifest`).
        ValueError: an unknown part, or a fold out of range, or an empty part.
    """
    if split not in DATALIST_SPLITS:
        raise ValueError(f"split '{split}' is not one of {list(DATALIST_SPLITS)}")
    schema = load_schema(schema)
    records, missing = read_manifest_records(manifest, schema, check_files=check_files)
    if split == "all":
        log_missing_values(manifest, "all cases", records, missing)
        return records
    attrs = list(schema.attributes) if stratify_on is None else list(stratify_on)
    unknown = [a for a in attrs if a not in schema.attributes]
    if unknown:
        raise ValueError(f"stratify_on names attributes not in schema '{schema.name}': {unknown}")

    def strata_of(recs):
        label_col = [r.get("label_name", "") for r in recs]
        return strata_keys(label_col, *[[r[a] for r in recs] for a in attrs])

    if any(r["split"] == "" for r in records):
        if not all(r["split"] == "" for r in records):
            rows = [i + 2 for i, r in enumerate(records) if r["split"] == ""][:5]
            raise ManifestError(f"'split' is empty on some rows (first: {rows}); fill it on every row or on none",
                                file=manifest, column="split")
        is_train = stratified_train_test_split(strata_of(records), 0.7, seed)
        for r, t in zip(records, is_train):
            r["split"] = "train" if t else "test"
    train = [r for r in records if r["split"] == "train"]
    if split == "test":
        out = [r for r in records if r["split"] == "test"]
    elif split == "trainval":
        out = train + [r for r in records if r["split"] == "val"]
    else:
        explicit_val = [r for r in records if r["split"] == "val"]
        if explicit_val:
            out = explicit_val if split == "val" else train
        else:
            if not manifest_folds or all(r["fold"] < 0 for r in train):
                folds = stratified_kfold(strata_of(train), num_folds=min(num_folds, len(train)), seed=seed + 1)
                for r, f in zip(train, folds):
                    r["fold"] = int(f)
            elif any(r["fold"] < 0 for r in train):
                raise ManifestError("'fold' is empty on some training rows; fill it on every training row or on none",
                                    file=manifest, column="fold")
            n_folds = max(r["fold"] for r in train) + 1
            if manifest_folds and n_folds != min(num_folds, len(train)):
                raise ValueError(
                    f"{manifest}: its fold column has {n_folds} folds (0..{n_folds - 1}) but num_folds is {num_folds}: "
                    f"set num_folds {n_folds}, or manifest_folds False to make {num_folds} folds here (stratified, "
                    "seeded)")
            if not 0 <= fold < n_folds:
                raise ValueError(f"fold {fold} is out of range: the training part has folds 0..{n_folds - 1}")
            out = [r for r in train if (r["fold"] == fold) == (split == "val")]
    if not out:
        raise ValueError(f"the '{split}' part of {manifest} is empty")
    log_missing_values(manifest, f"split '{split}'", out, missing)
    return out


def class_counts(records: Sequence[Mapping], num_classes: int, key: str = "label") -> list[int]:
    """Cases per class ``0 .. num_classes - 1`` of a data list (e.g. the training part, for class weights).

    Raises:
        ValueError: a record without ``key`` or with a value outside ``[0, num_classes)``, naming the case;
            a class with no case (class weights need every class), naming it and the counts.
    """
    counts = [0] * int(num_classes)
    for i, r in enumerate(records):
        value = r.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < num_classes:
            raise ValueError(f"class_counts: case {r.get('case_id', i)!r} has {key} {value!r}, not a class index in "
                             f"[0, {num_classes})")
        counts[int(value)] += 1
    empty = [c for c, n in enumerate(counts) if n == 0]
    if empty:
        raise ValueError(f"class_counts: no case of class(es) {empty} among the {len(records)} records (counts "
                         f"{counts}); class weights need every class in the training part")
    return counts


def require_split_parts(manifest: str | os.PathLike, parts: Sequence[str] = ("train", "val", "test")) -> str:
    """``manifest`` (as a string) when its ``split`` column holds every one of ``parts``, else an error.

    A bundle whose procedure needs its own validation part (Hänel et al.'s 70/20/10) checks that the
    manifest has one: :func:`load_datalist` would otherwise take fold ``fold`` of the training part as
    validation, a run on another split that would still succeed.

    Raises:
        ManifestError: no ``split`` column, or a part missing (the parts present named).
    """
    from .manifest import read_manifest_table

    table = read_manifest_table(manifest)
    if "split" not in table.columns:
        raise ManifestError(f"the manifest has no 'split' column; this run needs the parts {list(parts)}",
                            file=manifest, column="split")
    present = sorted(set(table["split"].astype(str)))
    missing = [x for x in parts if x not in present]
    if missing:
        raise ManifestError(f"the 'split' column has no {missing} rows (it holds {present}); this run needs the "
                            f"parts {list(parts)}: build the manifest with a validation part (the converter's "
                            "--val-fraction, the synthetic cohort's val_fraction)", file=manifest, column="split")
    return str(manifest)
