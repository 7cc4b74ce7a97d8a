"""Synthetic rectal cancer T2w MRI cohort: pelvis-like volumes, tumour masks, pCR learnable from the tumour.

Each case is a float32 image and a uint8 mask, NIfTI, shape ``(X, Y, Z)`` (default 96x96x24) with
**anisotropic spacing** in the affine (default 0.75 x 0.75 x 3 mm: axial slices), so that a 1 mm
isotropic resampling step downstream has work to do. Anatomy is laid out in millimetres relative
to the in-plane field of view (half-width ``h = min(X sx, Y sy) / 2``), so it scales with the
shape: an elliptic body (subcutaneous fat 0.8, pelvic muscle 0.35), mesorectal fat (0.75), the
rectal wall (0.3) around a dark lumen (0.15), constant along z; air (0) outside the body, so the
corner blocks ``[:X//8, :Y//8, :]`` hold pure noise. Intensities are not clipped (noise is
additive Gaussian, values may go slightly negative).

**Label** (``pcr``): the tumour is a textured ellipsoid on the rectal wall. pCR tumours
(label 1) tend to be smaller (radius ``U(0.13, 0.21) h`` against ``U(0.18, 0.28) h``, per axis
x U(0.9, 1.1)), darker (mean 0.50 against 0.60, + N(0, 0.03) per case) and more homogeneous
(texture amplitude 0.03 against 0.08): the mask volume and the mean intensity inside it separate
the classes well but not perfectly.

**Spurious mask components**: in a share ``spurious_fraction`` (default 0.2) of the cases, one or
two small boxes of 2-18 voxels (< 20, and < 20 after resampling to 1 mm where the spacing allows)
are added to the *mask only* (annotation noise), at least
two voxels from the tumour and from each other, so they are separate 26-connected components. A
connected-components step keeping the largest component removes them; ``cohort.json`` lists the
affected cases under ``spurious_components``. The tumour itself always has at least
``MIN_TUMOUR_VOXELS`` = 27 voxels.

**Knobs** (attribute ``sex``: female, male): ``prevalence`` (pCR rate, exact), ``cue_strength``
(stripes along axis 0, multiplying the body), ``difficulty`` (multiplies the standard deviation
of the additive Gaussian noise, ``noise`` default 0.05), ``group_proportions`` /
``group_counts`` / ``metadata_from``; and, for this dataset, ``split_counts``, ``label_signal``,
``sites`` (below).

**The paper's counts** (``split_counts="paper"``): the FaMI paper (Sadri et al., cohort C2)
reports only the margins: train 130 (20 pCR / 110 non-pCR; 95 male / 35 female), test 56
(11 / 45; 34 / 22). The joint cells chosen here (:data:`PAPER_SPLIT_COUNTS`):

=====  ======  =========  =============  =====
split  sex     pCR (1)    non-pCR (0)    total
=====  ======  =========  =============  =====
train  female  14         21             35
train  male    6          89             95
test   female  4          18             22
test   male    7          27             34
=====  ======  =========  =============  =====

Why: in **train** pCR is planted on sex (40 % of women against 6.3 % of men; phi(sex, pCR) =
0.41, odds ratio 9.9), so sex predicts the label and a model that can see sex is rewarded for
using it. In **test** pCR is as independent of sex as whole numbers allow (4/22 = 18 % against
7/34 = 21 %, phi = -0.03: the 11 pCR split 22:34 would be 4.3 : 6.7): the shortcut earns nothing
there, and a model that leaned on it shows it as a gap in TPR and FPR between the sexes
(over-calling pCR in women, missing it in men), the gap FaMI is meant to shrink. The minority sex
carries the high training rate so the shortcut flags the smaller group.

**The planted sex shortcut** needs two things: the cells above (sex correlates with pCR in
training) *and* sex visible in the image, through the stripe cue (``cue_strength`` > 0: 5 cycles
across axis 0 for women, 11 for men at X = 32, 16 and 32 at X = 96; see
:func:`~fairmonai.data.synth.common.cue_cycles`). With ``cue_strength=0`` sex is invisible and no
image model can use it. The real signal (the tumour) is weakened with ``label_signal`` < 1 so
that the shortcut is the easier cue. The bundle default::

    "synthetic_cohort": {"split_counts": "paper", "cue_strength": 3.0, "label_signal": 0.5, "sites": 4}

Measured at shape (32, 32, 8) with that default (``tests/data/test_rectal_cohort.py``): the
image's sex (the stronger of the two stripe frequencies of the mean profile along axis 0) is
right for 186 of 186 cases; a logistic regression fitted on train on the tumour's mean
intensity and that image sex puts weight +1.2 (standardised) on female beside -1.9 on the
intensity, and on test gives a false-positive rate of 0.56 for women against 0.04 for men
(without the sex feature: 0.17 against 0.19). A plain 3-D CNN (three conv layers, per-image
z-scored input, 80 epochs on CPU, one-off check, not a test) used sex at ``cue_strength`` 3:
re-rendering each test case with the other sex's stripes moved its predicted pCR probability by
+0.24 and +0.56 (two seeds) towards the female version; at ``cue_strength`` 1 by 0.00 and 0.01
(the stripes, a 10 % modulation, were not picked up), hence 3. That small CNN did not learn the
tumour at this size (test AUC about 0.5 at either strength); check both at the bundle's shape.
The stripes survive the rectal preprocessing (:mod:`fairmonai.data.preprocess`: 1 mm linear
resampling, 79 x 79 x 40 crop around the tumour, z-score): at the default shape their periods,
4.5 mm (women) and 2.25 mm (men), stayed among the three strongest peaks of the crop's profile
along axis 0 (six cases checked once).

``split_counts`` also takes any cells, as a mapping ``{split: {sex: {label: count}}}`` (splits
``train`` and ``test``; cells not named hold 0) or the text ``"train/female/1=14,..."``. The
manifest's ``split`` column then holds exactly those cases, in shuffled order; the training
part's ``fold`` column is stratified on pCR x sex (seeded as :func:`fairmonai.data.assign_splits`
seeds its folds, ``seed + 1``). It fixes sizes, sexes and labels, so it is given without ``n``
(or with ``n`` equal to its total) and without ``prevalence``, ``group_proportions``,
``group_counts`` and ``metadata_from``.

**Label signal** (``label_signal`` in [0, 1], default 1): every tumour parameter of each class
(radius range, mean, texture) is moved towards the midpoint of the two classes,
``v(s) = v + (1 - s) (mid - v)``: 1 keeps the classes as above, 0 makes them identical (pCR then
not learnable from the image).

**Sites** (``sites``, default 0 = no column): an integer K >= 1 adds a ``site`` column
(``site1`` .. ``siteK``, the paper pooled four institutions): equal counts (largest remainder,
ties to the lower site), shuffled by a generator of its own (``SeedSequence(seed,
spawn_key=(2,))``), so adding sites changes nothing else. Sites are bookkeeping only: they do
not change the images.

**DICOM fixture**: :func:`write_dicom_series` writes a volume as a DICOM MR series (one int16 slice
per file, oblique geometry and shuffled file names allowed) for the tests of
:mod:`fairmonai.data.preprocess.io`; the cohort itself stays NIfTI.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ..manifest import load_schema
from ..splits import strata_keys, stratified_kfold
from . import common as C

__all__ = [
    "DATASET",
    "ATTRIBUTE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "DEFAULT_NOISE",
    "DEFAULT_PREVALENCE",
    "DEFAULT_SPURIOUS_FRACTION",
    "MAX_SPURIOUS_VOXELS",
    "MIN_TUMOUR_VOXELS",
    "PAPER_SPLIT_COUNTS",
    "SPLIT_COUNT_PRESETS",
    "parse_split_counts",
    "render_rectal_case",
    "make_rectal_mri",
    "write_dicom_series",
]

DATASET = "rectal_mri"
ATTRIBUTE = "sex"
DEFAULT_SHAPE = (96, 96, 24)
MIN_SHAPE = (32, 32, 8)
DEFAULT_SPACING = (0.75, 0.75, 3.0)
DEFAULT_NOISE = 0.05
DEFAULT_PREVALENCE = 0.3
DEFAULT_SPURIOUS_FRACTION = 0.2
MAX_SPURIOUS_VOXELS = 19
MIN_TUMOUR_VOXELS = 27
_TUMOUR = {"1": ((0.13, 0.21), 0.50, 0.03), "0": ((0.18, 0.28), 0.60, 0.08)}  # radius / h, mean, texture
_MEAN_JITTER = 0.03
_SPLITS = ("train", "test")
_LABELS = ("0", "1")

#: FaMI cohort C2's margins with the joint cells chosen here (see the module docstring):
#: split -> sex -> pCR label -> cases.
PAPER_SPLIT_COUNTS = {
    "train": {"female": {"0": 21, "1": 14}, "male": {"0": 89, "1": 6}},
    "test": {"female": {"0": 18, "1": 4}, "male": {"0": 27, "1": 7}},
}
#: named presets of ``split_counts``
SPLIT_COUNT_PRESETS = {"paper": PAPER_SPLIT_COUNTS}
#: knobs that ``split_counts`` replaces
_CELL_CONFLICTS = ("prevalence", "group_proportions", "group_counts", "metadata_from")


def parse_split_counts(spec, groups=("female", "male")) -> dict[str, dict[str, dict[str, int]]] | None:
    """The ``split_counts`` knob as ``{split: {sex: {label: count}}}`` with every cell present.

    Accepts ``None`` (-> ``None``), a preset name (``"paper"``, any case), a mapping
    ``{split: {sex: {label: count}}}`` or the text ``"split/sex/label=count,..."``. Splits are
    ``train`` and ``test``, sexes the schema's, labels ``0`` and ``1`` (keys compared as
    strings); cells not named hold 0.

    Raises:
        ValueError: an unknown preset, split, sex or label, a malformed item, a count that is not
            a whole number >= 0, a cell given twice, fewer than 2 training cases; each naming the
            value.
    """
    if spec is None:
        return None
    groups = [str(g) for g in groups]
    if isinstance(spec, str):
        text = spec.strip()
        if "=" not in text:
            preset = SPLIT_COUNT_PRESETS.get(text.lower())
            if preset is None:
                raise ValueError(f"split_counts: unknown preset '{spec}'; presets are {sorted(SPLIT_COUNT_PRESETS)} "
                                 "(or give cells as 'split/sex/label=count,...' or a mapping)")
            spec = preset
        else:
            nested: dict = {}
            for part in (q.strip() for q in text.split(",")):
                if not part:
                    continue
                key, _, value = part.partition("=")
                path = [k.strip() for k in key.split("/")]
                if len(path) != 3 or "=" in value:
                    raise ValueError(f"split_counts: item '{part}' is not of the form split/sex/label=count")
                cell = nested.setdefault(path[0], {}).setdefault(path[1], {})
                if path[2] in cell:
                    raise ValueError(f"split_counts: cell '{key.strip()}' is given twice")
                cell[path[2]] = value.strip()
            spec = nested
    if not isinstance(spec, Mapping):
        raise ValueError(f"split_counts: expected a preset name, 'split/sex/label=count,...' or a mapping, "
                         f"got {spec!r}")
    out = {sp: {g: {lab: 0 for lab in _LABELS} for g in groups} for sp in _SPLITS}
    for sp, by_sex in spec.items():
        sp = str(sp).strip()
        if sp not in _SPLITS:
            raise ValueError(f"split_counts: unknown split '{sp}'; expected one of {list(_SPLITS)}")
        if not isinstance(by_sex, Mapping):
            raise ValueError(f"split_counts: split '{sp}' must map sex -> label -> count, got {by_sex!r}")
        for g, by_label in by_sex.items():
            g = str(g).strip()
            if g not in groups:
                raise ValueError(C.ERR_UNKNOWN_GROUP.format(knob="split_counts", name=g, attribute=ATTRIBUTE,
                                                            groups=groups))
            if not isinstance(by_label, Mapping):
                raise ValueError(f"split_counts: '{sp}/{g}' must map label -> count, got {by_label!r}")
            for lab, count in by_label.items():
                lab = str(lab).strip()
                if lab not in _LABELS:
                    raise ValueError(f"split_counts: unknown label '{lab}' in '{sp}/{g}'; expected one of "
                                     f"{list(_LABELS)}")
                x = C.parse_number(count, "split_counts")
                if x < 0 or not x.is_integer():
                    raise ValueError(f"split_counts: count {count} of '{sp}/{g}/{lab}' is not a whole number >= 0")
                out[sp][g][lab] = int(x)
    n_train = sum(sum(v.values()) for v in out["train"].values())
    if n_train < 2:
        raise ValueError(f"split_counts: the training part has {n_train} case(s); at least 2 are needed for its folds")
    return out


def _cell_plan(cells: Mapping, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(split, sex, label)`` object arrays (N,) holding each cell's count, in a seeded random order."""
    rows = [(sp, g, lab) for sp, by_sex in cells.items() for g, by_label in by_sex.items()
            for lab, count in by_label.items() for _ in range(count)]
    order = rng.permutation(len(rows))
    split, sex, label = (np.array([rows[i][k] for i in order], dtype=object) for k in range(3))
    return split, sex, label


def _cell_folds(split: np.ndarray, sex: np.ndarray, label: np.ndarray, seed: int) -> np.ndarray:
    """``fold`` cells: the training part stratified on pCR x sex (as :func:`fairmonai.data.assign_splits`
    makes its folds: :func:`fairmonai.data.splits.stratified_kfold` with ``seed + 1``), ``""`` on test."""
    fold = np.full(len(split), "", dtype=object)
    train = np.flatnonzero(split == "train")
    strata = strata_keys(list(label[train]), list(sex[train]))
    folds = stratified_kfold(strata, num_folds=min(C.NUM_FOLDS, len(train)), seed=seed + 1)
    fold[train] = [str(int(f)) for f in folds]
    return fold


def _parse_sites(value) -> int:
    x = C.parse_number(0 if value is None else value, "sites")
    if x < 0 or not x.is_integer():
        raise ValueError(f"sites {value} must be a whole number >= 0")
    return int(x)


def _site_column(n: int, sites: int, seed: int) -> np.ndarray:
    """``site1`` .. ``siteK`` in equal counts, shuffled by the generator ``SeedSequence(seed, spawn_key=(2,))``."""
    names = [f"site{k + 1}" for k in range(sites)]
    counts = C.apportion(n, {s: 1.0 / sites for s in names}, names) if n >= sites else \
        {s: int(k < n) for k, s in enumerate(names)}
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2,)))
    return C.assign_groups(counts, rng)


def _tumour_params(pcr: bool, label_signal: float = 1.0):
    """``((radius lo, hi) / h, mean, texture)`` of a class, moved towards the classes' midpoint by
    ``1 - label_signal`` (exactly the table's values at 1)."""
    own, other = _TUMOUR["1" if pcr else "0"], _TUMOUR["0" if pcr else "1"]
    if label_signal == 1.0:
        return own
    t = 1.0 - float(label_signal)

    def mix(a, b):
        return a + t * ((a + b) / 2.0 - a)

    return ((mix(own[0][0], other[0][0]), mix(own[0][1], other[0][1])), mix(own[1], other[1]), mix(own[2], other[2]))


def _anatomy(shape, spacing, rng):
    """In-plane (X, Y) T2w-like slice, the rectum centre and wall radius (in mm), and the body mask."""
    X, Y, _ = shape
    sx, sy, _ = spacing
    h = min(X * sx, Y * sy) / 2.0
    x = (np.arange(X) - (X - 1) / 2.0)[:, None] * sx / h
    y = (np.arange(Y) - (Y - 1) / 2.0)[None, :] * sy / h
    a, b = 0.90 * rng.uniform(0.95, 1.0), 0.75 * rng.uniform(0.95, 1.0)
    body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    inner = (x / (a - 0.1)) ** 2 + (y / (b - 0.1)) ** 2 <= 1.0
    cx, cy = rng.uniform(-0.05, 0.05), 0.25 + rng.uniform(-0.04, 0.04)
    rr = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    img = np.where(body, 0.8, 0.0)
    img = np.where(inner, 0.35, img)
    img = np.where(inner & (rr <= 0.32), 0.75, img)
    img = np.where(rr <= 0.16, 0.30, img)
    img = np.where(rr <= 0.09, 0.15, img)
    img = ndimage.gaussian_filter(img, 0.6) * body
    return img, (cx * h, cy * h), 0.125 * h, h, body


def render_rectal_case(rng: np.random.Generator, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING, *, pcr: bool,
                       group_index: int = 0, num_groups: int = 2, cue_strength: float = 0.0,
                       noise: float = DEFAULT_NOISE, spurious: int = 0,
                       label_signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One T2w-like volume and its tumour mask (see the module docstring).

    Args:
        rng: the case's generator.
        shape: ``(X, Y, Z)``; spacing: ``(sx, sy, sz)`` in mm.
        pcr: draw a pCR (small, dark, homogeneous) tumour.
        group_index, num_groups, cue_strength: the stripe cue along axis 0.
        noise: standard deviation of the additive Gaussian noise (already times the difficulty).
        spurious: number (0-2) of small spurious components added to the mask.
        label_signal: in [0, 1], how far the tumour's class parameters stay apart (1: as in the
            module docstring; 0: pCR and non-pCR tumours drawn alike).

    Returns:
        ``(image, mask)``: float32 and uint8 arrays of shape ``(X, Y, Z)``.
    """
    X, Y, Z = shape
    sx, sy, sz = spacing
    plane, (rcx, rcy), wall_r, h, body = _anatomy(shape, spacing, rng)
    img = np.repeat(plane[:, :, None], Z, axis=2)
    # tumour: ellipsoid centred on the rectal wall
    (lo, hi), mean, texture = _tumour_params(pcr, label_signal)
    radius = rng.uniform(lo, hi) * h * rng.uniform(0.9, 1.1, size=3)
    radius = np.maximum(radius, 1.5 * np.array(spacing))
    theta = rng.uniform(0, 2 * np.pi)
    centre_mm = np.array([rcx + wall_r * np.cos(theta), rcy + wall_r * np.sin(theta),
                          rng.uniform(0.35, 0.65) * Z * sz])
    xs = (np.arange(X) - (X - 1) / 2.0) * sx
    ys = (np.arange(Y) - (Y - 1) / 2.0) * sy
    zs = (np.arange(Z) + 0.5) * sz
    for _ in range(10):
        d2 = (((xs - centre_mm[0]) / radius[0]) ** 2)[:, None, None] \
            + (((ys - centre_mm[1]) / radius[1]) ** 2)[None, :, None] \
            + (((zs - centre_mm[2]) / radius[2]) ** 2)[None, None, :]
        tumour = d2 <= 1.0
        if tumour.sum() >= MIN_TUMOUR_VOXELS:
            break
        radius = radius * 1.2
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    field /= field.std() + 1e-12
    img = np.where(tumour, mean + rng.normal(0.0, _MEAN_JITTER) + texture * field, img)
    img = img * C.stripe_cue(X, group_index, num_groups, cue_strength, rng.uniform(0, 2 * np.pi))[:, None, None]
    img = img + noise * rng.standard_normal(shape)
    mask = tumour.astype(np.uint8)
    if spurious:
        _add_spurious(mask, body, spurious, rng, spacing)
    return img.astype(np.float32), mask


def _add_spurious(mask: np.ndarray, body: np.ndarray, count: int, rng: np.random.Generator,
                  spacing=DEFAULT_SPACING) -> None:
    """Add ``count`` boxes of < 20 voxels inside the body, >= 2 voxels clear of everything in ``mask``.

    A box is small on both grids: at most :data:`MAX_SPURIOUS_VOXELS` voxels on the acquisition grid,
    and under 20 voxels after resampling to 1 mm, bounded by the product over the axes of
    ``ceil(size_i * spacing_i)`` (a half-open extent of ``L`` mm holds at most ``ceil(L)`` centres of a
    1 mm grid); nor does a box touch the last row, column or slice (see below). Without the second bound a 2 x 2 x 2 box at 0.75 x 0.75 x 3 mm (8 voxels) covers
    24 voxels at 1 mm, survives the 20-voxel rule of the rectal preprocessing and can pull its union
    bounding box off the tumour."""
    small = {(a, b, c) for a in range(1, 4) for b in range(1, 4) for c in range(1, 3)
             if 2 <= a * b * c <= MAX_SPURIOUS_VOXELS}
    resampled_small = {t for t in small if np.prod(np.ceil(np.multiply(t, spacing) - 1e-9)) < 20}
    allowed = resampled_small or small  # voxels of 2 mm or more: no 2-voxel box stays under 20 at 1 mm
    X, Y, Z = mask.shape
    cube = np.ones((3, 3, 3), dtype=bool)
    blocked = ndimage.binary_dilation(mask > 0, structure=cube, iterations=2)
    placed = 0
    for _ in range(200):
        if placed == count:
            break
        while True:
            size = rng.integers(1, [4, 4, 3])
            if tuple(int(v) for v in size) in allowed:
                break
        # not on the last row, column or slice: a resampler that extends the last voxel past its centre
        # (the rectal preprocessing's) would grow a box there by up to 2 slices
        corner = rng.integers(0, [X - size[0], Y - size[1], Z - size[2]])
        sl = tuple(slice(c, c + s) for c, s in zip(corner, size))
        if blocked[sl].any() or not body[sl[0], sl[1]].all():
            continue
        mask[sl] = 1
        grown = np.zeros_like(blocked)
        grown[sl] = True
        blocked |= ndimage.binary_dilation(grown, structure=cube, iterations=2)
        placed += 1


def make_rectal_mri(out_dir, n=None, seed=0, *, prevalence=None, cue_strength=0.0, difficulty=None,
                    group_proportions=None, group_counts=None, metadata_from=None, shape=DEFAULT_SHAPE,
                    spacing=DEFAULT_SPACING, noise=DEFAULT_NOISE, spurious_fraction=DEFAULT_SPURIOUS_FRACTION,
                    split_counts=None, label_signal=1.0, sites=0, verbose: bool = False) -> Path:
    """Write a synthetic ``rectal_mri`` cohort: ``images/`` and ``masks/rectal_NNNNN.nii.gz``, manifest.

    Args:
        out_dir, n, seed, verbose: as :func:`~fairmonai.data.synth.oct_glaucoma.make_oct_glaucoma`.
        prevalence: pCR rate, one number or per sex (``"female=0.4,male=0.2"``); default 0.3.
        cue_strength: stripe cue strength >= 0 (default 0).
        difficulty: noise multiplier per sex (default 1).
        group_proportions / group_counts: sex shares (sum 1) or sizes; default equal.
        metadata_from: a ``rectal_mri`` manifest giving sex, age and (without ``prevalence``) pCR.
        shape: ``(X, Y, Z)``, at least (32, 32, 8); spacing: mm, written to the affine.
        noise: base standard deviation of the additive Gaussian noise.
        spurious_fraction: share of masks that get 1-2 spurious components (exact:
            ``round_half_up(n * fraction)`` cases, chosen at random).
        split_counts: cases per split x sex x pCR (:func:`parse_split_counts`): ``"paper"``
            (:data:`PAPER_SPLIT_COUNTS`, 186 cases), a mapping or ``"split/sex/label=count,..."``;
            default ``None``: ``n`` cases, split 70/30 stratified on pCR x sex.
        label_signal: in [0, 1], how far pCR and non-pCR tumours stay apart (default 1).
        sites: number of sites in a ``site`` column (default 0: no column).

    Returns:
        path of ``manifest.csv``.

    Raises:
        ValueError: a bad knob, naming the value; ``split_counts`` with a knob it replaces or with
            an ``n`` other than its total.

    Example:
        The paper's counts with the planted sex shortcut, as a bundle config gives them to
        :func:`fairmonai.data.cohort_cache.ensure_cohort`::

            "synthetic_cohort": {"split_counts": "paper", "cue_strength": 3.0, "label_signal": 0.5, "sites": 4},
            "manifest": "$fairmonai.data.cohort_cache.ensure_cohort('rectal_mri', @dataset_dir, seed=@seed, **@synthetic_cohort)"
    """
    seed = C.check_seed(seed)
    groups = list(load_schema(DATASET).attributes[ATTRIBUTE].categories)
    shape = C.parse_shape(shape, 3, MIN_SHAPE)
    spacing = C.parse_spacing(spacing)
    cue = C.parse_cue_strength(cue_strength)
    base_noise = C.parse_positive(noise, "noise")
    spurious_fraction = C.parse_fraction(spurious_fraction, "spurious_fraction")
    diff = C.parse_difficulty(difficulty, groups, attribute=ATTRIBUTE)
    if cue > 0:
        C.cue_cycles(shape[0], len(groups))
    signal = C.parse_fraction(label_signal, "label_signal")
    n_sites = _parse_sites(sites)
    cells = parse_split_counts(split_counts, groups)
    rng = C.cohort_rng(seed)
    if cells is not None:
        given = {"prevalence": prevalence, "group_proportions": group_proportions, "group_counts": group_counts,
                 "metadata_from": metadata_from}
        clash = [k for k in _CELL_CONFLICTS if given[k] is not None]
        if clash:
            raise ValueError(f"split_counts fixes the sexes, labels and splits: give none of {clash} with it")
        total = sum(c for by_sex in cells.values() for by_label in by_sex.values() for c in by_label.values())
        if n is not None and C.parse_number(n, "n") != total:
            raise ValueError(f"split_counts: the cells sum to {total}, but n={n}")
        split, case_groups, labels = _cell_plan(cells, rng)
        plan = C.CohortPlan(total, ATTRIBUTE, case_groups, case_groups.copy(), labels, None, None)
    else:
        plan = C.plan_cohort(DATASET, n, rng, attribute=ATTRIBUTE, groups=groups, group_proportions=group_proportions,
                             group_counts=group_counts, prevalence=prevalence, default_prevalence=DEFAULT_PREVALENCE,
                             metadata_from=metadata_from)
    if plan.records is not None:
        ages = [C.number_text(r.get("age")) for r in plan.records]
    else:
        ages = [str(a) for a in rng.integers(35, 86, size=plan.n)]
    n_spurious = np.zeros(plan.n, dtype=int)
    chosen = rng.permutation(plan.n)[:C.round_half_up(plan.n * spurious_fraction)]
    n_spurious[chosen] = rng.integers(1, 3, size=len(chosen))
    if cells is not None:
        fold = _cell_folds(split, plan.groups, plan.labels, seed)
    else:
        split, fold = C.split_columns(plan.labels, plan.groups, seed)

    out = C.prepare_out_dir(out_dir)
    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    ids = [f"rectal_{i:05d}" for i in range(plan.n)]
    progress = C.Progress(DATASET, plan.n, verbose)
    for i, cid in enumerate(ids):
        g = plan.render_groups[i]
        img, mask = render_rectal_case(C.case_rng(seed, i), shape, spacing, pcr=plan.labels[i] == "1",
                                       group_index=groups.index(g), num_groups=len(groups), cue_strength=cue,
                                       noise=base_noise * diff[g], spurious=int(n_spurious[i]),
                                       label_signal=signal)
        C.write_nifti(out / "images" / f"{cid}.nii.gz", img, spacing)
        C.write_nifti(out / "masks" / f"{cid}.nii.gz", mask, spacing)
        progress.step(i + 1)

    table = pd.DataFrame({
        "case_id": ids, "image": [f"images/{c}.nii.gz" for c in ids], "mask": [f"masks/{c}.nii.gz" for c in ids],
        "label": plan.labels, ATTRIBUTE: plan.groups, "age": ages, "split": split, "fold": fold,
    })
    if n_sites:
        table.insert(table.columns.get_loc("split"), "site", _site_column(plan.n, n_sites, seed))
    counts = C.count_table(plan.groups, plan.labels, groups, ["0", "1"])
    cohort = {
        "dataset": DATASET, "seed": seed, "n": plan.n, "group_attribute": ATTRIBUTE, "groups": groups,
        "knobs": {"prevalence": plan.prevalence, "cue_strength": cue, "difficulty": diff,
                  "group_proportions": group_proportions, "group_counts": group_counts,
                  "metadata_from": None if metadata_from is None else str(metadata_from), "noise": base_noise,
                  "spurious_fraction": spurious_fraction, "split_counts": cells, "label_signal": signal,
                  "sites": n_sites},
        "image": {"shape": list(shape), "spacing": list(spacing), "dtype": "float32", "mask_dtype": "uint8",
                  "format": "nifti", "axes": "0 = x, 1 = y (in-plane), 2 = z (slices)",
                  "noise_region": "corner blocks [:X//8, :Y//8, :] (air)"},
        "cue": {"axis": 0, "amplitude_per_strength": C.CUE_AMPLITUDE,
                "cycles": dict(zip(groups, C.cue_cycles(shape[0], len(groups))))},
        "label": {"name": "pcr", "tumour": {k: {"radius_fraction_of_half_fov": list(v[0]), "mean": v[1],
                                                 "texture": v[2]}
                                             for k, v in ((k, _tumour_params(k == "1", signal)) for k in _TUMOUR)}},
        "spurious_components": {ids[i]: int(n_spurious[i]) for i in range(plan.n) if n_spurious[i]},
        "max_spurious_voxels": MAX_SPURIOUS_VOXELS,
        "counts": counts, "splits": C.split_counts(split),
        "split_cells": {sp: C.count_table(plan.groups[split == sp], plan.labels[split == sp], groups, list(_LABELS))
                        for sp in _SPLITS},
    }
    manifest = C.write_outputs(out, DATASET, table, cohort)
    if verbose:
        print(C.summary_line(DATASET, manifest, ATTRIBUTE, counts, "1", "pcr"), flush=True)
    return manifest


def write_dicom_series(image: np.ndarray, out_dir, *, spacing=DEFAULT_SPACING, origin=(0.0, 0.0, 0.0),
                       direction=None, series_uid: str | None = None, study_uid: str | None = None,
                       series_description: str = "T2w", shuffle_names_seed: int | None = None,
                       patient_id: str = "synth") -> str:
    """Write a volume as a DICOM MR series, one slice per file (a fixture for the DICOM readers).

    Geometry is LPS (SimpleITK's and DICOM's convention): slice ``k`` has
    ``ImagePositionPatient = origin + k * spacing[2] * direction[:, 2]``,
    ``ImageOrientationPatient = direction[:, 0], direction[:, 1]`` (row and column cosines),
    ``PixelSpacing = (spacing[1], spacing[0])``, ``SliceThickness`` and ``SpacingBetweenSlices``
    ``spacing[2]``; an oblique ``direction`` is kept. Pixels are int16 (``Rows = Y``,
    ``Columns = X``) with one ``RescaleSlope`` / ``RescaleIntercept`` for the series, so the
    floats come back to within ``(max - min) / 131068`` (1e-3 for a range up to 131). Files are
    MR Image Storage, explicit VR little endian, with the 128-byte preamble. Other UIDs
    (study, frame of reference, SOP instances) are new random UIDs (``pydicom.uid.generate_uid``)
    unless given.

    Args:
        image: ``(X, Y, Z)`` array of finite numbers (``Z = 1`` gives a one-slice series).
        out_dir: folder, created if needed; existing files are never overwritten.
        spacing: ``(sx, sy, sz)`` mm, > 0.
        origin: LPS position (mm) of voxel ``(0, 0, 0)``.
        direction: 3x3 rotation (columns: the LPS directions of the x, y, z index axes);
            default identity. It must have determinant +1: a DICOM series stores no slice axis,
            readers stack slices along ``row x column``, so a left-handed direction would come
            back with its slices reversed.
        series_uid, study_uid: UIDs to write (default new).
        series_description: ``SeriesDescription``.
        shuffle_names_seed: when given, files get random 8-hex-digit names drawn from this seed
            (so ordering by name is wrong); otherwise ``MR.<series_uid>.<k+1:04d>.dcm``.
        patient_id: ``PatientID`` and ``PatientName``.

    Returns:
        the ``SeriesInstanceUID``.

    Raises:
        ValueError: a non-3-D or non-finite image, a bad spacing or direction, an existing file.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
    from pydicom.valuerep import DSfloat

    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"image must be a non-empty (X, Y, Z) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("image has non-finite values")
    spacing = np.asarray(spacing, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    if spacing.shape != (3,) or not (spacing > 0).all():
        raise ValueError(f"spacing must be three numbers > 0, got {spacing.tolist()}")
    if origin.shape != (3,):
        raise ValueError(f"origin must be three numbers, got {origin.tolist()}")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    if d.shape != (3, 3) or not np.allclose(d.T @ d, np.eye(3), atol=1e-6) or np.linalg.det(d) < 0:
        raise ValueError(f"direction must be a 3x3 rotation (orthonormal, determinant +1), got {d.tolist()}")

    def ds_value(x: float) -> DSfloat:
        return DSfloat(float(x), auto_format=True)

    lo, hi = float(arr.min()), float(arr.max())
    slope = ds_value((hi - lo) / 65534.0) if hi > lo else ds_value(1.0)
    intercept = ds_value((hi + lo) / 2.0)
    q = np.rint((arr - float(intercept)) / float(slope))
    q = np.clip(q, -32768, 32767).astype("<i2")

    X, Y, Z = arr.shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    if shuffle_names_seed is None:
        names = [f"MR.{series_uid}.{k + 1:04d}.dcm" for k in range(Z)]
    else:
        rng = np.random.default_rng(shuffle_names_seed)
        names = []
        while len(names) < Z:
            name = f"{int(rng.integers(16 ** 8)):08x}.dcm"
            if name not in names:
                names.append(name)
    clash = [n for n in names if (out / n).exists()]
    if clash:
        raise ValueError(f"{out}: file(s) {clash[:3]} exist; write_dicom_series does not overwrite")
    iop = [ds_value(v) for v in (*d[:, 0], *d[:, 1])]
    for k in range(Z):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = patient_id
        ds.PatientName = patient_id
        ds.Modality = "MR"
        ds.SeriesDescription = series_description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        position = origin + k * spacing[2] * d[:, 2]
        ds.ImagePositionPatient = [ds_value(v) for v in position]
        ds.ImageOrientationPatient = iop
        ds.SliceLocation = ds_value(position @ d[:, 2])
        ds.PixelSpacing = [ds_value(spacing[1]), ds_value(spacing[0])]
        ds.SliceThickness = ds_value(spacing[2])
        ds.SpacingBetweenSlices = ds_value(spacing[2])
        ds.Rows, ds.Columns = Y, X
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "US"
        ds.PixelData = np.ascontiguousarray(q[:, :, k].T).tobytes()  # (rows = Y, columns = X)
        ds.save_as(out / names[k], enforce_file_format=True)
    return str(series_uid)
