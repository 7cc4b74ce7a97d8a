"""Pieces shared by the synthetic cohorts: knob parsing, exact allocation, the group cue, writers.

Every synthetic cohort is drawn in two stages from one integer ``seed``:

1. *The cohort table* (who is in which group, which label, which split) from the generator
   :func:`cohort_rng` ``(seed)``.
2. *One image per case* from its own generator :func:`case_rng` ``(seed, i)``, so case ``i``'s
   image depends only on the seed, its index and its row, never on the order of generation.

Both are numpy ``PCG64`` generators keyed by :class:`numpy.random.SeedSequence`, so the same seed
gives byte-identical manifests and images on any machine.

**Exact counts.** Group sizes and positives are set by construction, not sampled:

* group sizes from proportions by largest-remainder apportionment (:func:`apportion`): each group
  first gets ``floor(n * p_g)``, the ``n - sum`` cases left go one each to the groups with the
  largest fractional parts (ties: schema order). When every ``n * p_g`` is a whole number the count
  is exactly ``n * p_g``;
* positives in a group of ``n_g`` cases with prevalence ``p_g``: ``round_half_up(n_g * p_g)``.

**The group cue** (:func:`stripe_cue`): a multiplicative stripe texture along one image axis,
``1 + CUE_AMPLITUDE * cue_strength * sin(2 pi c_k x / L + phase)``, whose number of cycles
``c_k`` across the axis (length ``L``) identifies group ``k`` of ``G`` (:func:`cue_cycles`). It
survives cropping and per-image intensity normalisation; its phase is random per case.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...attribute_codes import EXCLUDED_CODE, code_key
from ..manifest import load_manifest, load_schema
from ..splits import assign_splits

__all__ = [
    "CUE_AMPLITUDE",
    "TRAIN_FRACTION",
    "NUM_FOLDS",
    "MANIFEST_NAME",
    "COHORT_NAME",
    "CohortPlan",
    "cohort_rng",
    "case_rng",
    "check_seed",
    "parse_positive",
    "record_value",
    "split_columns",
    "summary_line",
    "number_text",
    "split_counts",
    "parse_number",
    "parse_group_map",
    "parse_prevalence",
    "parse_difficulty",
    "parse_cue_strength",
    "parse_fraction",
    "parse_shape",
    "parse_spacing",
    "round_half_up",
    "apportion",
    "resolve_group_counts",
    "assign_groups",
    "allocate_exact",
    "allocate_binary_labels",
    "sample_metadata",
    "plan_cohort",
    "cue_cycles",
    "stripe_cue",
    "write_nifti",
    "write_png",
    "Progress",
    "prepare_out_dir",
    "write_outputs",
    "count_table",
]

#: Relative stripe amplitude at ``cue_strength = 1`` (10 % modulation of the clean image).
CUE_AMPLITUDE = 0.1
TRAIN_FRACTION = 0.7
NUM_FOLDS = 5
MANIFEST_NAME = "manifest.csv"
COHORT_NAME = "cohort.json"

ERR_UNKNOWN_GROUP = "{knob}: unknown group '{name}'; the groups of '{attribute}' are {groups}"
ERR_NOT_NUMBER = "{knob}: '{value}' is not a number"
ERR_PREVALENCE = "{knob}: {value} for group '{group}' is outside [0, 1]"
ERR_DIFFICULTY = "{knob}: {value} for group '{group}' must be > 0"
ERR_PROPORTIONS_SUM = "group_proportions: the proportions {values} sum to {total}, not 1"
ERR_PROPORTION_NEG = "group_proportions: proportion {value} of group '{group}' is negative"
ERR_COUNTS_SUM = "group_counts: the counts {values} sum to {total}, but n={n}"
ERR_TOO_SMALL = "n={n} is too small to give group '{group}' (proportion {p:g}) one case"
ERR_BOTH = "give at most one of group_proportions, group_counts and metadata_from"


# --------------------------------------------------------------------------------------- seeds
def cohort_rng(seed: int) -> np.random.Generator:
    """The generator of the cohort table (groups, labels, metadata) for ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0,)))


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of case ``index``'s image for ``seed`` (independent of every other case)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1, int(index))))


def check_seed(seed) -> int:
    """``seed`` as a non-negative int, else ``ValueError`` naming it."""
    if isinstance(seed, (bool, np.bool_)):
        raise ValueError(f"seed '{seed}' must be an integer >= 0")
    if isinstance(seed, (int, np.integer)):
        s = int(seed)
    elif isinstance(seed, str) and re.fullmatch(r"\s*\+?\d+\s*", seed):
        s = int(seed)
    else:
        raise ValueError(f"seed '{seed}' must be an integer >= 0")
    if s < 0:
        raise ValueError(f"seed '{seed}' must be an integer >= 0")
    return s


# --------------------------------------------------------------------------------------- knobs
def parse_number(value, knob: str) -> float:
    """``value`` (a number or a string holding one) as a finite float; ``ValueError`` naming it."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(ERR_NOT_NUMBER.format(knob=knob, value=value)) from None
    if not math.isfinite(x):
        raise ValueError(ERR_NOT_NUMBER.format(knob=knob, value=value))
    return x


def parse_group_map(spec, groups: Sequence[str], knob: str, *, attribute: str = "group",
                    allow_scalar: bool = True) -> dict[str, float]:
    """Parse a per-group knob into ``{group: float}`` (only the groups it names).

    Accepts ``None`` (-> ``{}``), a mapping ``{group: value}`` (keys compared as strings, so
    ``{1: 0.2}`` names Fitzpatrick type ``"1"``), a string ``"A=0.2,B=0.3"``, or, when
    ``allow_scalar``, one number (or numeric string) that applies to every group.

    Raises:
        ValueError: an unknown group name, a malformed item or a value that is not a number, each
            naming the knob and the value.
    """
    groups = [str(g) for g in groups]
    if spec is None:
        return {}
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        if not allow_scalar:
            raise ValueError(f"{knob}: expected 'group=value,...', got the single number {spec}")
        x = parse_number(spec, knob)
        return {g: x for g in groups}
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            return {}
        if "=" not in text:
            if not allow_scalar:
                raise ValueError(f"{knob}: expected 'group=value,...', got '{spec}'")
            x = parse_number(text, knob)
            return {g: x for g in groups}
        items = {}
        for part in text.split(","):
            if not part.strip():
                continue
            if part.count("=") != 1:
                raise ValueError(f"{knob}: item '{part.strip()}' is not of the form group=value")
            name, value = (s.strip() for s in part.split("="))
            if name in items:
                raise ValueError(f"{knob}: group '{name}' is given twice")
            items[name] = value
        spec = items
    if not isinstance(spec, Mapping):
        raise ValueError(f"{knob}: expected a mapping or 'group=value,...', got {spec!r}")
    out = {}
    for name, value in spec.items():
        key = str(name).strip()
        if key not in groups:
            raise ValueError(ERR_UNKNOWN_GROUP.format(knob=knob, name=key, attribute=attribute, groups=groups))
        out[key] = parse_number(value, knob)
    return out


def parse_prevalence(spec, groups: Sequence[str], default: float, *, attribute: str = "group",
                     knob: str = "prevalence") -> dict[str, float]:
    """Per-group prevalence in ``[0, 1]`` for every group; groups not named get ``default``."""
    given = parse_group_map(spec, groups, knob, attribute=attribute)
    for g, p in given.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(ERR_PREVALENCE.format(knob=knob, value=p, group=g))
    return {str(g): given.get(str(g), float(default)) for g in groups}


def parse_difficulty(spec, groups: Sequence[str], *, attribute: str = "group",
                     knob: str = "difficulty") -> dict[str, float]:
    """Per-group noise multiplier (> 0) for every group; groups not named get 1."""
    given = parse_group_map(spec, groups, knob, attribute=attribute)
    for g, d in given.items():
        if not d > 0:
            raise ValueError(ERR_DIFFICULTY.format(knob=knob, value=d, group=g))
    return {str(g): given.get(str(g), 1.0) for g in groups}


def parse_cue_strength(value) -> float:
    """``cue_strength`` as a float >= 0 (0 = no cue)."""
    x = parse_number(0.0 if value is None else value, "cue_strength")
    if x < 0:
        raise ValueError(f"cue_strength {x} must be >= 0")
    return x


def parse_fraction(value, knob: str) -> float:
    """A share in ``[0, 1]``."""
    x = parse_number(value, knob)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{knob} {x} is outside [0, 1]")
    return x


def parse_positive(value, knob: str) -> float:
    """A number > 0."""
    x = parse_number(value, knob)
    if not x > 0:
        raise ValueError(f"{knob} {x} must be > 0")
    return x


def _parse_tuple(value, ndim: int, knob: str) -> tuple:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,x\s]+", value.strip()) if p]
    elif isinstance(value, (int, float, np.integer, np.floating)):
        parts = [value] * ndim
    else:
        parts = list(value)
    if len(parts) == 1:
        parts = parts * ndim
    if len(parts) != ndim:
        raise ValueError(f"{knob} '{value}' must have {ndim} values (or one for all axes)")
    return tuple(parts)


def parse_shape(value, ndim: int, minimum: Sequence[int], knob: str = "shape") -> tuple[int, ...]:
    """An image shape of ``ndim`` ints, each at least ``minimum[i]``; ``"32,32,32"``, ``"32x32x32"``,
    ``32`` or a sequence."""
    out = []
    for p, lo in zip(_parse_tuple(value, ndim, knob), minimum):
        x = parse_number(p, knob)
        if not float(x).is_integer():
            raise ValueError(f"{knob} '{value}': {p} is not an integer")
        if x < lo:
            raise ValueError(f"{knob} '{value}' is too small: each axis needs at least {list(minimum)}")
        out.append(int(x))
    return tuple(out)


def parse_spacing(value, ndim: int = 3, knob: str = "spacing") -> tuple[float, ...]:
    """Voxel spacing in mm, ``ndim`` numbers > 0."""
    out = tuple(parse_number(p, knob) for p in _parse_tuple(value, ndim, knob))
    if any(s <= 0 for s in out):
        raise ValueError(f"{knob} '{value}' must be > 0 on every axis")
    return out


# ----------------------------------------------------------------------------- exact allocation
def round_half_up(x: float) -> int:
    """Nearest integer, halves rounded up (``round_half_up(2.5) == 3``, unlike ``round``)."""
    return int(math.floor(x + 0.5 + 1e-9))


def apportion(n: int, proportions: Mapping[str, float], groups: Sequence[str]) -> dict[str, int]:
    """Group sizes summing to ``n`` from proportions (largest remainder, ties in ``groups`` order).

    Raises:
        ValueError: negative proportions, proportions not summing to 1 (tolerance 1e-6), or a group
            with a positive proportion that would get no case.
    """
    props = {g: float(proportions.get(g, 0.0)) for g in groups}
    for g, p in props.items():
        if p < 0:
            raise ValueError(ERR_PROPORTION_NEG.format(value=p, group=g))
    total = sum(props.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(ERR_PROPORTIONS_SUM.format(values={g: p for g, p in props.items() if g in proportions},
                                                    total=round(total, 6)))
    exact = {g: n * p for g, p in props.items()}
    counts = {g: int(math.floor(x + 1e-9)) for g, x in exact.items()}
    left = n - sum(counts.values())
    order = sorted(groups, key=lambda g: (-(exact[g] - counts[g]), list(groups).index(g)))
    for g in order[:left]:
        counts[g] += 1
    for g in groups:
        if props[g] > 0 and counts[g] == 0:
            raise ValueError(ERR_TOO_SMALL.format(n=n, group=g, p=props[g]))
    return counts


def resolve_group_counts(n, groups: Sequence[str], *, group_proportions=None, group_counts=None,
                         attribute: str = "group") -> tuple[int, dict[str, int]]:
    """``(n, {group: count})`` from ``n`` and proportions, or from explicit counts.

    Without either knob the proportions are equal. ``group_counts`` (``"A=20,B=10"``) fixes the
    sizes; groups it does not name get none, and ``n`` (if given) must equal their sum.

    Raises:
        ValueError: see :func:`apportion`; both knobs given; counts that are not whole numbers >= 0
            or do not sum to ``n``; ``n`` missing or < 1.
    """
    groups = [str(g) for g in groups]
    if group_proportions is not None and group_counts is not None:
        raise ValueError(ERR_BOTH)
    if group_counts is not None:
        raw = parse_group_map(group_counts, groups, "group_counts", attribute=attribute, allow_scalar=False)
        for g, c in raw.items():
            if c < 0 or not float(c).is_integer():
                raise ValueError(f"group_counts: count {c:g} of group '{g}' is not a whole number >= 0")
        counts = {g: int(raw.get(g, 0)) for g in groups}
        total = sum(counts.values())
        if n is not None and _check_n(n) != total:
            raise ValueError(ERR_COUNTS_SUM.format(values={g: c for g, c in counts.items() if g in raw}, total=total,
                                                   n=n))
        if total < 1:
            raise ValueError("group_counts: the counts sum to 0; a cohort needs at least one case")
        return total, counts
    n = _check_n(n)
    if group_proportions is None:
        props = {g: 1.0 / len(groups) for g in groups}
    else:
        props = parse_group_map(group_proportions, groups, "group_proportions", attribute=attribute,
                                allow_scalar=False)
    return n, apportion(n, props, groups)


def _check_n(n) -> int:
    if n is None:
        raise ValueError("n is required (the number of cases) unless group_counts or metadata_from gives it")
    x = parse_number(n, "n")
    if not x.is_integer() or x < 1:
        raise ValueError(f"n={n} must be an integer >= 1")
    return int(x)


def assign_groups(counts: Mapping[str, int], rng: np.random.Generator) -> np.ndarray:
    """A shuffled object array holding ``counts[g]`` copies of each group ``g``, shape ``(sum,)``."""
    arr = np.array([g for g, c in counts.items() for _ in range(c)], dtype=object)
    return arr[rng.permutation(len(arr))]


def allocate_exact(idx: np.ndarray, counts: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Split the indices ``idx`` at random into consecutive parts of the given sizes (sum = len)."""
    idx = np.asarray(idx)[rng.permutation(len(idx))]
    bounds = np.cumsum([0, *counts])
    if bounds[-1] != len(idx):
        raise ValueError(f"part sizes {list(counts)} do not add up to {len(idx)} cases")
    return [idx[bounds[i]:bounds[i + 1]] for i in range(len(counts))]


def allocate_binary_labels(groups: np.ndarray, prevalence: Mapping[str, float], rng: np.random.Generator,
                           default: float) -> np.ndarray:
    """Labels ``"0"``/``"1"`` per case: ``round_half_up(n_g * p_g)`` positives in each group ``g``.

    Groups absent from ``prevalence`` (e.g. a missing attribute, ``""``) use ``default``.
    """
    labels = np.full(len(groups), "0", dtype=object)
    for g in _ordered_unique(groups):
        idx = np.flatnonzero(groups == g)
        k = round_half_up(len(idx) * prevalence.get(g, default))
        _, pos = allocate_exact(idx, [len(idx) - k, k], rng)
        labels[pos] = "1"
    return labels


def _ordered_unique(values) -> list:
    return sorted(set(values), key=str)


# ------------------------------------------------------------------------------- metadata table
def sample_metadata(path, dataset: str, n: int | None, rng: np.random.Generator) -> list[dict]:
    """``n`` records of a real manifest of ``dataset`` (validated, images not required).

    Every row is used ``n // N`` times (``N`` rows in the table) and ``n % N`` further rows are
    drawn without replacement, then the order is shuffled: subgroup sizes follow the table's up
    to the sampling of the remainder (exactly when ``N`` divides ``n``). ``n=None`` takes ``N``.

    Raises:
        ManifestError: the table does not validate under the dataset's schema.
    """
    records = load_manifest(path, dataset, check_files=False)
    total = len(records)
    n = total if n is None else _check_n(n)
    reps, rest = divmod(n, total)
    idx = np.concatenate([np.tile(np.arange(total), reps), rng.choice(total, size=rest, replace=False)])
    idx = idx[rng.permutation(len(idx))].astype(int)
    return [dict(records[i]) for i in idx]


def record_value(record: Mapping, attribute: str) -> str:
    """An attribute of a loaded manifest record as written, ``""`` where it was missing/excluded."""
    if record.get(code_key(attribute), 0) == EXCLUDED_CODE:
        return ""
    return str(record.get(attribute, ""))


@dataclass
class CohortPlan:
    """The cohort table before images: one entry per case, in manifest order.

    Attributes:
        n: number of cases.
        attribute: the sensitive attribute the group knobs refer to.
        groups: its value per case, object array (N,); ``""`` where a metadata row lacks it.
        render_groups: the group each image is drawn as, never missing (a missing value gets a
            seeded uniform draw among the groups).
        labels: label category per case, object array (N,).
        prevalence: the prevalence knob per group, or ``None`` when labels came from metadata.
        records: the metadata rows used (``metadata_from``), else ``None``.
    """

    n: int
    attribute: str
    groups: np.ndarray
    render_groups: np.ndarray
    labels: np.ndarray
    prevalence: dict | None
    records: list[dict] | None = None


def plan_cohort(dataset: str, n, rng: np.random.Generator, *, attribute: str, groups: Sequence[str],
                group_proportions=None, group_counts=None, prevalence=None, default_prevalence: float = 0.5,
                metadata_from=None) -> CohortPlan:
    """Groups and binary labels of a cohort (the shared part of the class-label datasets).

    Without ``metadata_from``: group sizes from :func:`resolve_group_counts`, labels from
    :func:`allocate_binary_labels`. With it: groups (and, if ``prevalence`` is ``None``, labels) of
    :func:`sample_metadata` rows; a given ``prevalence`` is then applied exactly inside the sampled
    groups.
    """
    groups = [str(g) for g in groups]
    if metadata_from is not None:
        if group_proportions is not None or group_counts is not None:
            raise ValueError(ERR_BOTH)
        records = sample_metadata(metadata_from, dataset, n, rng)
        case_groups = np.array([record_value(r, attribute) for r in records], dtype=object)
        missing = case_groups == ""
        render = case_groups.copy()
        render[missing] = rng.choice(np.array(groups, dtype=object), size=int(missing.sum()))
        if prevalence is None:
            labels = np.array([str(r["label_name"]) for r in records], dtype=object)
            prev = None
        else:
            prev = parse_prevalence(prevalence, groups, default_prevalence, attribute=attribute)
            labels = allocate_binary_labels(case_groups, prev, rng, default_prevalence)
        return CohortPlan(len(records), attribute, case_groups, render, labels, prev, records)
    n, counts = resolve_group_counts(n, groups, group_proportions=group_proportions, group_counts=group_counts,
                                     attribute=attribute)
    prev = parse_prevalence(prevalence, groups, default_prevalence, attribute=attribute)
    case_groups = assign_groups(counts, rng)
    labels = allocate_binary_labels(case_groups, prev, rng, default_prevalence)
    return CohortPlan(n, attribute, case_groups, case_groups.copy(), labels, prev, None)


# ------------------------------------------------------------------------------------ the cue
def cue_cycles(length: int, num_groups: int) -> list[int]:
    """Stripe cycles across an axis of ``length`` voxels for groups ``0..G-1``.

    ``c_k = round_half_up(length * (k + 1) / (2 * (G + 1)))``: evenly spread below the Nyquist
    limit ``length / 2`` (for 32 voxels and 3 groups: 4, 8, 12 cycles).
    """
    cycles = [max(1, round_half_up(length * (k + 1) / (2 * (num_groups + 1)))) for k in range(num_groups)]
    if len(set(cycles)) != len(cycles) or max(cycles) >= length / 2:
        raise ValueError(f"an axis of {length} voxels is too short for a distinct stripe cue per group "
                         f"({num_groups} groups); enlarge the image")
    return cycles


def stripe_cue(length: int, group_index: int, num_groups: int, strength: float, phase: float) -> np.ndarray:
    """Multiplicative stripe profile ``1 + CUE_AMPLITUDE * strength * sin(2 pi c_k x / L + phase)``.

    Returns:
        float32 array of shape ``(length,)``; all ones when ``strength == 0``.
    """
    if strength == 0:
        return np.ones(length, dtype=np.float32)
    c = cue_cycles(length, num_groups)[group_index]
    x = np.arange(length, dtype=np.float64)
    return (1.0 + CUE_AMPLITUDE * strength * np.sin(2 * np.pi * c * x / length + phase)).astype(np.float32)


# ------------------------------------------------------------------------------------ writers
def write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float]) -> None:
    """Write ``array`` (X, Y, Z) as NIfTI-1 with affine ``diag(spacing, 1)`` (origin 0, RAS axes)."""
    import nibabel as nib

    affine = np.diag([*map(float, spacing), 1.0])
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` float image in [0, 1] as 8-bit RGB PNG (clipped, rounded)."""
    from PIL import Image

    arr = np.clip(np.rint(np.asarray(rgb, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(arr, mode="RGB").save(str(path), format="PNG")


class Progress:
    """Prints ``dataset: i/n cases (p%)`` about every 10 % when ``verbose`` and ``n >= 100``."""

    def __init__(self, dataset: str, n: int, verbose: bool):
        self.dataset, self.n = dataset, n
        self.enabled = verbose and n >= 100
        self.next_pct = 10

    def step(self, done: int) -> None:
        if not self.enabled:
            return
        pct = 100 * done // self.n
        if pct >= self.next_pct:
            print(f"{self.dataset}: {done}/{self.n} cases ({pct}%)", flush=True)
            self.next_pct = (pct // 10 + 1) * 10


def prepare_out_dir(out_dir) -> Path:
    """Create ``out_dir`` and remove a manifest (and cohort.json) a previous run left there, so that
    a run that fails before its end leaves no manifest pointing at images it never wrote."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST_NAME, COHORT_NAME, MANIFEST_NAME + ".tmp"):
        (out / name).unlink(missing_ok=True)
    return out


def count_table(groups: np.ndarray, labels: np.ndarray, group_order: Sequence[str],
                label_order: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{group: {label: count}}`` in the given orders (missing group values under ``"missing"``)."""
    out = {}
    gs = list(group_order) + (["missing"] if (groups == "").any() else [])
    for g in gs:
        sel = groups == ("" if g == "missing" else g)
        out[g] = {lab: int(((labels == lab) & sel).sum()) for lab in label_order}
        extra = sorted(set(labels[sel]) - set(label_order), key=str)
        for lab in extra:
            out[g][lab or "missing"] = int(((labels == lab) & sel).sum())
    return out


def split_columns(labels, strata_groups, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``split`` (train/test) and ``fold`` (``""`` for test) columns, stratified on label x group."""
    groups = np.array([g if g != "" else "missing" for g in strata_groups], dtype=object)
    split, fold = assign_splits(list(labels), list(groups), train_fraction=TRAIN_FRACTION, num_folds=NUM_FOLDS,
                                seed=seed)
    return split, np.array(["" if f < 0 else str(int(f)) for f in fold], dtype=object)


def write_outputs(out: Path, dataset: str, table: pd.DataFrame, cohort: dict) -> Path:
    """Validate ``table`` under the dataset's schema, write ``cohort.json``, then the manifest.

    The manifest goes to ``manifest.csv.tmp``, is validated with :func:`load_manifest` (files
    checked), and only then renamed to ``manifest.csv``: the manifest is the last file written.
    """
    tmp = out / (MANIFEST_NAME + ".tmp")
    table.to_csv(tmp, index=False, lineterminator="\n")
    load_manifest(tmp, load_schema(dataset), check_files=True)
    (out / COHORT_NAME).write_text(json.dumps(_jsonable(cohort), indent=2) + "\n")
    final = out / MANIFEST_NAME
    os.replace(tmp, final)
    return final


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def summary_line(dataset: str, manifest: Path, attribute: str, counts: Mapping[str, Mapping[str, int]],
                 positive: str, positive_name: str) -> str:
    """One line: where the manifest is, then ``group n=.. <positive_name>=..`` per group."""
    parts = []
    for g, by_label in counts.items():
        total = sum(by_label.values())
        rate = by_label.get(positive, 0) / total if total else float("nan")
        parts.append(f"{g} n={total} {positive_name}={rate:.2f}")
    n = sum(sum(v.values()) for v in counts.values())
    return f"{dataset}: wrote {n} cases to {manifest} | {attribute}: " + ", ".join(parts)


def number_text(value) -> str:
    """A numeric cell: ``""`` for None/nan, else the shortest float text (``61`` not ``61.0``)."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return ""
    return f"{float(value):g}"


def split_counts(split) -> dict[str, int]:
    """``{"train": k, "test": m}``."""
    return {s: int((np.asarray(split) == s).sum()) for s in ("train", "test")}
