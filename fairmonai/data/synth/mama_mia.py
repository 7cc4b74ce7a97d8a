"""Synthetic MAMA-MIA cohort: three-phase breast DCE-MRI, tumour masks, clinical metadata, a hard subgroup.

Each case has four NIfTI files of shape ``(X, Y, Z)`` (default 64x64x32, spacing 1 mm): the
pre-contrast and first two post-contrast phases (float32; manifest columns ``image_pre``,
``image_post1``, ``image_post2``) and the tumour mask (uint8, column ``label``: the segmentation
target). Axes: x = array axis 0 (left-right), y = axis 1 (anterior-posterior; y = 0 is anterior),
z = axis 2 (slices).

**Anatomy.** Posterior of the chest wall (``y >= ~0.6 Y``) is body (0.30 pre-contrast); in
front of it two half-ellipsoidal breasts of fat (0.12) and fibroglandular tissue (0.40), the
glandular share set by the breast density (a / b / c / d: 10 / 30 / 55 / 80 % of the breast, a
smoothed random field thresholded at that quantile); air (0) elsewhere, so rows ``y < 0.1 Y``
hold pure noise. After contrast, glandular tissue enhances mildly (background parenchymal
enhancement, 0.05-0.15 at post1, 1.5x that at post2, more area in denser breasts) and the
tumour (0.35 pre) strongly: ``+E`` at post1 with ``E = 0.6 x U(0.9, 1.1)``; at post2 ``+0.75 E``
(wash-out) for pCR = 1, ``+1.2 E`` (persistent) for pCR = 0, ``+0.95 E`` when pCR is unknown.
The tumour is a lobulated ellipsoid of radius ``0.07 min(X sx, Y sy)`` mm x U(0.8, 1.2) per
axis inside one breast (left or right at random).

**Breast bounding box** (``bbox_x_min`` ... ``bbox_z_max``): the bounding box of the breast that
holds the tumour, in voxel indices of the written arrays, x/y/z = array axes 0/1/2, **min
inclusive, max exclusive**: ``image[x_min:x_max, y_min:y_max, z_min:z_max]`` is the crop.

**Metadata.** ``age`` (years), ``age_group`` (:func:`~fairmonai.data.attributes.age_to_group`),
``menopausal_status`` (pre / post / unknown) and ``breast_density`` (a-d, empty when missing: the
schema excludes it). Without ``metadata_from``, the group attribute (``group_attribute``,
default ``age_group``) gets exact counts from ``group_proportions`` / ``group_counts`` (default
equal), and the others are drawn from it with the cohort generator: age uniform in the age group's
range (0-40: 25-40, 71+: 71-85) or, when the group attribute is not age, uniform in 28-85 (pre:
28-52, post: 50-85); menopause post with probability ``clip((age - 45) / 10, 0, 1)``, then
``unknown`` with probability ``menopause_unknown`` (default 0.25); density from
``P(a, b, c, d | age)`` = (.05, .30, .45, .20) up to 50, (.10, .40, .40, .10) up to 60,
(.15, .50, .30, .05) above, then missing with probability ``density_missing`` (default 0.2; the
real table lacks it for 96 % of cases). With ``metadata_from`` the rows of a real manifest give
all of these, missing values included (an image whose density is missing is drawn with a density
from ``P(density | age)``).

**pCR** (optional column ``pcr``): the prevalence knob's label, exact per group; learnable from
the tumour's post2 / post1 enhancement ratio.

**Knobs** (keyed by values of ``group_attribute``): ``prevalence`` (pCR rate), ``cue_strength``
(stripes along axis 0 in all three phases), ``difficulty`` (multiplies the standard deviation
of the additive Gaussian noise, ``noise`` default 0.05, independent per phase),
``group_proportions`` / ``group_counts`` / ``metadata_from``, and the *hard subgroup*:
``hard_subgroup = "age_group=71+,breast_density=d"`` selects the cases matching every item (an
intersection, rare under realistic marginals), and ``hard_strength = s`` (default 1) makes them
harder: tumour enhancement ``E / (1 + s)``, tumour radii ``x (1 + s) ** (-1/3)`` (volume
``/ (1 + s)``), noise standard deviation ``x (1 + s)`` (on top of ``difficulty``).

**Splits**: stratified on pCR x the group attribute's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ..attributes import age_to_group
from ..manifest import is_missing, load_schema
from . import common as C

__all__ = [
    "DATASET",
    "ATTRIBUTES",
    "DEFAULT_GROUP_ATTRIBUTE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "DEFAULT_NOISE",
    "DEFAULT_PREVALENCE",
    "DEFAULT_DENSITY_MISSING",
    "DEFAULT_MENOPAUSE_UNKNOWN",
    "GLANDULAR_FRACTION",
    "AIR_DEPTH",
    "parse_hard_subgroup",
    "render_mama_case",
    "make_mama_mia",
]

DATASET = "mama_mia"
ATTRIBUTES = ("age_group", "menopausal_status", "breast_density")
DEFAULT_GROUP_ATTRIBUTE = "age_group"
DEFAULT_SHAPE = (64, 64, 32)
MIN_SHAPE = (24, 24, 12)
DEFAULT_SPACING = (1.0, 1.0, 1.0)
DEFAULT_NOISE = 0.05
DEFAULT_PREVALENCE = 0.3
DEFAULT_DENSITY_MISSING = 0.2
DEFAULT_MENOPAUSE_UNKNOWN = 0.25
GLANDULAR_FRACTION = {"a": 0.10, "b": 0.30, "c": 0.55, "d": 0.80}
AIR_DEPTH = 0.10
ENHANCEMENT = 0.6
WASHOUT = {"1": 0.75, "0": 1.2, "": 0.95}
MIN_TUMOUR_VOXELS = 10
_AGE_RANGE = {"0-40": (25, 40), "41-50": (41, 50), "51-60": (51, 60), "61-70": (61, 70), "71+": (71, 85)}
_MENOPAUSE_AGE = {"pre": (28, 52), "post": (50, 85), "unknown": (28, 85)}
_DENSITY_GIVEN_AGE = ((50, (0.05, 0.30, 0.45, 0.20)), (60, (0.10, 0.40, 0.40, 0.10)), (999, (0.15, 0.50, 0.30, 0.05)))


def parse_hard_subgroup(spec, schema=None) -> dict[str, str]:
    """``"age_group=71+,breast_density=d"`` (or a mapping) as ``{attribute: value}``; ``{}`` for None.

    Raises:
        ValueError: an attribute not among ``age_group``, ``menopausal_status``,
            ``breast_density``, or a value outside its categories, naming it.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return {}
    schema = schema or load_schema(DATASET)
    if isinstance(spec, str):
        items = {}
        for part in spec.split(","):
            if not part.strip():
                continue
            if part.count("=") != 1:
                raise ValueError(f"hard_subgroup: item '{part.strip()}' is not of the form attribute=value")
            k, v = (s.strip() for s in part.split("="))
            items[k] = v
        spec = items
    if not isinstance(spec, Mapping):
        raise ValueError(f"hard_subgroup: expected 'attribute=value,...', got {spec!r}")
    out = {}
    for k, v in spec.items():
        if k not in ATTRIBUTES:
            raise ValueError(f"hard_subgroup: unknown attribute '{k}'; expected one of {list(ATTRIBUTES)}")
        cats = list(schema.attributes[k].categories)
        if str(v) not in cats:
            raise ValueError(f"hard_subgroup: value '{v}' of '{k}' is not one of {cats}")
        out[k] = str(v)
    return out


def _density_probs(age: float) -> tuple:
    a = 50.0 if np.isnan(age) else age
    for upper, probs in _DENSITY_GIVEN_AGE:
        if a <= upper:
            return probs
    return _DENSITY_GIVEN_AGE[-1][1]


def _draw_density(ages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(len(ages))
    out = np.empty(len(ages), dtype=object)
    cats = list(GLANDULAR_FRACTION)
    for i, a in enumerate(ages):
        out[i] = cats[int(np.searchsorted(np.cumsum(_density_probs(a)), u[i], side="right").clip(0, 3))]
    return out


def render_mama_case(rng: np.random.Generator, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING, *, density: str = "b",
                     pcr: str = "0", hard_strength: float = 0.0, group_index: int = 0, num_groups: int = 5,
                     cue_strength: float = 0.0, noise: float = DEFAULT_NOISE):
    """One DCE-MRI case (see the module docstring).

    Args:
        rng: the case's generator.
        shape: ``(X, Y, Z)``; spacing: mm per voxel.
        density: breast density ``a``-``d`` used to draw the glandular tissue.
        pcr: ``"1"`` (wash-out), ``"0"`` (persistent) or ``""`` (plateau) tumour kinetics.
        hard_strength: ``s`` of the hard subgroup (0 for other cases).
        group_index, num_groups, cue_strength: the stripe cue along axis 0.
        noise: standard deviation of the additive Gaussian noise, before the ``(1 + s)`` factor.

    Returns:
        ``(pre, post1, post2, mask, bbox)``: three float32 arrays and a uint8 mask of shape
        ``(X, Y, Z)``; ``bbox = (x_min, x_max, y_min, y_max, z_min, z_max)``, max exclusive.
    """
    X, Y, Z = shape
    sx, sy, sz = spacing
    s = float(hard_strength)
    x = ((np.arange(X) + 0.5) / X)[:, None, None]
    y = ((np.arange(Y) + 0.5) / Y)[None, :, None]
    z = ((np.arange(Z) + 0.5) / Z)[None, None, :]
    chest = 0.60 + rng.uniform(-0.03, 0.03)
    body = np.broadcast_to(y >= chest, shape)
    breasts = []
    for cx in (0.27, 0.73):
        rx, ry, rz = 0.20 * rng.uniform(0.9, 1.1), (chest - 0.14) * rng.uniform(0.9, 1.0), 0.42
        cxj = cx + rng.uniform(-0.02, 0.02)
        b = (((x - cxj) / rx) ** 2 + ((y - chest) / ry) ** 2 + ((z - 0.5) / rz) ** 2 <= 1.0) & (y < chest)
        breasts.append((b, (cxj, chest, 0.5), (rx, ry, rz)))
    breast = breasts[0][0] | breasts[1][0]
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    gland = breast & (field > np.quantile(field[breast], 1.0 - GLANDULAR_FRACTION[density]))
    bpe = 0.10 * rng.uniform(0.5, 1.5)
    pre = np.where(body, 0.30, 0.0) + np.where(breast, 0.12, 0.0) + np.where(gland, 0.28, 0.0)
    post1 = pre + np.where(body, 0.10, 0.0) + np.where(breast, 0.02, 0.0) + np.where(gland, bpe, 0.0)
    post2 = pre + np.where(body, 0.12, 0.0) + np.where(breast, 0.03, 0.0) + np.where(gland, 1.5 * bpe, 0.0)

    side = int(rng.integers(2))
    side_mask, (cx, cy, cz), (rx, ry, rz) = breasts[side]
    centre = np.array([cx + rng.uniform(-0.35, 0.35) * rx, cy - rng.uniform(0.3, 0.65) * ry,
                       cz + rng.uniform(-0.35, 0.35) * rz]) * np.array([X * sx, Y * sy, Z * sz])
    radius = 0.07 * min(X * sx, Y * sy) * rng.uniform(0.8, 1.2, size=3) * (1.0 + s) ** (-1.0 / 3.0)
    radius = np.maximum(radius, 1.5 * np.array(spacing))
    lobes = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    lobes /= lobes.std() + 1e-12
    mm = [(np.arange(L) + 0.5) * d for L, d in zip(shape, spacing)]
    for _ in range(10):
        d2 = (((mm[0] - centre[0]) / radius[0]) ** 2)[:, None, None] \
            + (((mm[1] - centre[1]) / radius[1]) ** 2)[None, :, None] \
            + (((mm[2] - centre[2]) / radius[2]) ** 2)[None, None, :]
        tumour = (d2 + 0.25 * lobes <= 1.0) & side_mask
        if tumour.sum() >= MIN_TUMOUR_VOXELS:
            break
        radius = radius * 1.2
    E = ENHANCEMENT * rng.uniform(0.9, 1.1) / (1.0 + s)
    pre = np.where(tumour, 0.35, pre)
    post1 = np.where(tumour, 0.35 + E, post1)
    post2 = np.where(tumour, 0.35 + WASHOUT[pcr] * E, post2)

    cue = C.stripe_cue(X, group_index, num_groups, cue_strength, rng.uniform(0, 2 * np.pi))[:, None, None]
    sigma = noise * (1.0 + s)
    phases = [(img * cue + sigma * rng.standard_normal(shape)).astype(np.float32) for img in (pre, post1, post2)]
    nz = np.nonzero(side_mask)
    bbox = tuple(v for a in nz for v in (int(a.min()), int(a.max()) + 1))
    return (*phases, tumour.astype(np.uint8), bbox)


def _plan_attributes(n, rng, group_attribute, groups, group_proportions, group_counts, menopause_unknown,
                     density_missing):
    """Exact counts of the group attribute, then age / menopause / density drawn given it."""
    n, counts = C.resolve_group_counts(n, groups, group_proportions=group_proportions, group_counts=group_counts,
                                       attribute=group_attribute)
    g = C.assign_groups(counts, rng)
    if group_attribute == "age_group":
        lo = np.array([_AGE_RANGE[v][0] for v in g])
        hi = np.array([_AGE_RANGE[v][1] for v in g])
    elif group_attribute == "menopausal_status":
        lo = np.array([_MENOPAUSE_AGE[v][0] for v in g])
        hi = np.array([_MENOPAUSE_AGE[v][1] for v in g])
    else:
        lo, hi = np.full(n, 28), np.full(n, 85)
    ages = rng.integers(lo, hi + 1).astype(float)
    if group_attribute == "menopausal_status":
        meno = g.copy()
    else:
        post = rng.random(n) < np.clip((ages - 45.0) / 10.0, 0.0, 1.0)
        meno = np.where(post, "post", "pre").astype(object)
        meno[rng.random(n) < menopause_unknown] = "unknown"
    if group_attribute == "breast_density":
        dens = g.copy()
        dens_render = g.copy()
    else:
        dens_render = _draw_density(ages, rng)
        dens = dens_render.copy()
        dens[rng.random(n) < density_missing] = ""
    cols = {"age": ages, "age_group": np.array([age_to_group(a) for a in ages], dtype=object),
            "menopausal_status": meno, "breast_density": dens}
    return n, cols, dens_render


def _plan_from_metadata(path, n, rng):
    records = C.sample_metadata(path, DATASET, n, rng)
    ages = np.array([r.get("age", np.nan) for r in records], dtype=float)
    cols = {"age": ages}
    for a in ATTRIBUTES:
        cols[a] = np.array([C.record_value(r, a) for r in records], dtype=object)
    dens = cols["breast_density"]
    drawn = _draw_density(ages, rng)
    dens_render = np.where(dens == "", drawn, dens).astype(object)
    return len(records), cols, dens_render, records


def _pcr_text(value) -> str:
    if is_missing(value):
        return ""
    v = str(value).strip()
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"metadata_from: pcr value '{value}' is not 0 or 1") from None
    if f not in (0.0, 1.0):
        raise ValueError(f"metadata_from: pcr value '{value}' is not 0 or 1")
    return str(int(f))


def make_mama_mia(out_dir, n=None, seed=0, *, group_attribute=DEFAULT_GROUP_ATTRIBUTE, prevalence=None,
                  cue_strength=0.0, difficulty=None, group_proportions=None, group_counts=None, metadata_from=None,
                  hard_subgroup=None, hard_strength=1.0, density_missing=DEFAULT_DENSITY_MISSING,
                  menopause_unknown=DEFAULT_MENOPAUSE_UNKNOWN, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING,
                  noise=DEFAULT_NOISE, verbose: bool = False) -> Path:
    """Write a synthetic ``mama_mia`` cohort: ``images/mama_NNNNN_{pre,post1,post2}.nii.gz``,
    ``masks/mama_NNNNN.nii.gz``, ``cohort.json``, ``manifest.csv``.

    Args:
        out_dir, n, seed, verbose: as :func:`~fairmonai.data.synth.oct_glaucoma.make_oct_glaucoma`.
        group_attribute: ``age_group`` (default), ``menopausal_status`` or ``breast_density``:
            the attribute whose values key ``prevalence``, ``difficulty``, ``group_proportions``,
            ``group_counts`` and the stripe cue.
        prevalence: pCR rate, one number or per group; default 0.3. Without it and with
            ``metadata_from``, the table's ``pcr`` column is used when it has one.
        cue_strength: stripe cue strength >= 0 (default 0).
        difficulty: noise multiplier per group (default 1).
        group_proportions / group_counts: the group attribute's shares (sum 1) or sizes.
        metadata_from: a ``mama_mia`` manifest whose rows give age, the three attributes (with
            their missing values) and pCR.
        hard_subgroup: ``"attribute=value,..."``: the cases matching every item are made harder.
        hard_strength: ``s >= 0`` (default 1); see the module docstring for what it scales.
        density_missing, menopause_unknown: shares of missing density / unknown menopause when
            drawing metadata (not with ``metadata_from``).
        shape: ``(X, Y, Z)``, at least (24, 24, 12); spacing: mm, written to the affine.
        noise: base standard deviation of the additive Gaussian noise.

    Returns:
        path of ``manifest.csv``.

    Raises:
        ValueError: a bad knob, naming the value.
    """
    seed = C.check_seed(seed)
    schema = load_schema(DATASET)
    if group_attribute not in ATTRIBUTES:
        raise ValueError(f"group_attribute '{group_attribute}' is not one of {list(ATTRIBUTES)}")
    groups = list(schema.attributes[group_attribute].categories)
    shape = C.parse_shape(shape, 3, MIN_SHAPE)
    spacing = C.parse_spacing(spacing)
    cue = C.parse_cue_strength(cue_strength)
    base_noise = C.parse_positive(noise, "noise")
    diff = C.parse_difficulty(difficulty, groups, attribute=group_attribute)
    hard = parse_hard_subgroup(hard_subgroup, schema)
    s_hard = C.parse_number(hard_strength, "hard_strength")
    if s_hard < 0:
        raise ValueError(f"hard_strength {s_hard} must be >= 0")
    density_missing = C.parse_fraction(density_missing, "density_missing")
    menopause_unknown = C.parse_fraction(menopause_unknown, "menopause_unknown")
    if cue > 0:
        C.cue_cycles(shape[0], len(groups))

    rng = C.cohort_rng(seed)
    records = None
    if metadata_from is not None:
        if group_proportions is not None or group_counts is not None:
            raise ValueError(C.ERR_BOTH)
        n, cols, dens_render, records = _plan_from_metadata(metadata_from, n, rng)
    else:
        n, cols, dens_render = _plan_attributes(n, rng, group_attribute, groups, group_proportions, group_counts,
                                                menopause_unknown, density_missing)
    case_groups = cols[group_attribute]
    missing = case_groups == ""
    render_groups = case_groups.copy()
    if group_attribute == "breast_density":
        render_groups = dens_render.copy()
    else:
        render_groups[missing] = rng.choice(np.array(groups, dtype=object), size=int(missing.sum()))
    if prevalence is None and records is not None and any("pcr" in r for r in records):
        prev = None
        pcr = np.array([_pcr_text(r.get("pcr", "")) for r in records], dtype=object)
    else:
        prev = C.parse_prevalence(prevalence, groups, DEFAULT_PREVALENCE, attribute=group_attribute)
        pcr = C.allocate_binary_labels(case_groups, prev, rng, DEFAULT_PREVALENCE)
    is_hard = np.ones(n, dtype=bool) if hard else np.zeros(n, dtype=bool)
    for k, v in hard.items():
        is_hard &= cols[k] == v
    split, fold = C.split_columns(pcr, case_groups, seed)

    out = C.prepare_out_dir(out_dir)
    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    ids = [f"mama_{i:05d}" for i in range(n)]
    bboxes = np.zeros((n, 6), dtype=int)
    progress = C.Progress(DATASET, n, verbose)
    for i, cid in enumerate(ids):
        g = render_groups[i]
        pre, post1, post2, mask, bbox = render_mama_case(
            C.case_rng(seed, i), shape, spacing, density=dens_render[i], pcr=pcr[i],
            hard_strength=s_hard if is_hard[i] else 0.0, group_index=groups.index(g), num_groups=len(groups),
            cue_strength=cue, noise=base_noise * diff.get(case_groups[i], 1.0))
        for name, arr in (("pre", pre), ("post1", post1), ("post2", post2)):
            C.write_nifti(out / "images" / f"{cid}_{name}.nii.gz", arr, spacing)
        C.write_nifti(out / "masks" / f"{cid}.nii.gz", mask, spacing)
        bboxes[i] = bbox
        progress.step(i + 1)

    data = {"case_id": ids}
    for name in ("pre", "post1", "post2"):
        data[f"image_{name}"] = [f"images/{c}_{name}.nii.gz" for c in ids]
    data["label"] = [f"masks/{c}.nii.gz" for c in ids]
    data["age"] = [C.number_text(a) for a in cols["age"]]
    for a in ATTRIBUTES:
        data[a] = cols[a]
    for j, name in enumerate(["bbox_x_min", "bbox_x_max", "bbox_y_min", "bbox_y_max", "bbox_z_min", "bbox_z_max"]):
        data[name] = [str(v) for v in bboxes[:, j]]
    data["pcr"] = pcr
    data["split"], data["fold"] = split, fold
    table = pd.DataFrame(data)
    counts = C.count_table(case_groups, pcr, groups, ["0", "1"])
    cohort = {
        "dataset": DATASET, "seed": seed, "n": n, "group_attribute": group_attribute, "groups": groups,
        "knobs": {"prevalence": prev, "cue_strength": cue, "difficulty": diff,
                  "group_proportions": group_proportions, "group_counts": group_counts,
                  "metadata_from": None if metadata_from is None else str(metadata_from), "noise": base_noise,
                  "hard_subgroup": hard or None, "hard_strength": s_hard, "density_missing": density_missing,
                  "menopause_unknown": menopause_unknown},
        "image": {"shape": list(shape), "spacing": list(spacing), "dtype": "float32", "mask_dtype": "uint8",
                  "format": "nifti", "phases": ["pre", "post1", "post2"],
                  "axes": "x = axis 0 (left-right), y = axis 1 (anterior-posterior, 0 = anterior), z = axis 2",
                  "bbox": "breast holding the tumour; min inclusive, max exclusive (slice bounds)",
                  "noise_region": f"rows y < {AIR_DEPTH} * Y (air)"},
        "cue": {"axis": 0, "amplitude_per_strength": C.CUE_AMPLITUDE,
                "cycles": dict(zip(groups, C.cue_cycles(shape[0], len(groups))))},
        "tumour": {"enhancement": ENHANCEMENT, "post2_over_post1": WASHOUT},
        "hard_subgroup": {"spec": hard or None, "strength": s_hard, "n_cases": int(is_hard.sum()),
                          "case_ids": [ids[i] for i in np.flatnonzero(is_hard)]},
        "attribute_counts": {a: _value_counts(cols[a], schema.attributes[a].categories) for a in ATTRIBUTES},
        "counts": counts, "splits": C.split_counts(split), "stratified_on": ["pcr", group_attribute],
    }
    manifest = C.write_outputs(out, DATASET, table, cohort)
    if verbose:
        print(C.summary_line(DATASET, manifest, group_attribute, counts, "1", "pcr")
              + f" | hard subgroup: {int(is_hard.sum())} cases", flush=True)
    return manifest


def _value_counts(values: np.ndarray, categories) -> dict[str, int]:
    out = {c: int((values == c).sum()) for c in categories}
    if (values == "").any():
        out["missing"] = int((values == "").sum())
    return out
