"""Segmentation scores as the MAMA-MIA challenge (Task 1) computes them: DSC, HD95, NormHD, PS, FS, TS.

Per case, on the case's original image grid:

.. math::

    \\mathrm{DSC} = \\frac{2\\,TP}{2\\,TP + FP + FN}, \\qquad
    \\mathrm{NormHD} = \\min\\left(1, \\frac{\\mathrm{HD95}}{150}\\right)

with HD95 the symmetric 95th-percentile Hausdorff distance between the two mask surfaces, in voxel
units (the challenge measures on the voxel index grid, without spacing). Over the test set,

.. math::

    PS = \\tfrac12\\left(\\overline{\\mathrm{DSC}} + 1 - \\overline{\\mathrm{NormHD}}\\right), \\qquad
    D_v = \\tfrac12\\left(\\max_g \\overline{\\mathrm{DSC}}_g - \\min_g \\overline{\\mathrm{DSC}}_g
          + \\max_g \\overline{\\mathrm{NormHD}}_g - \\min_g \\overline{\\mathrm{NormHD}}_g\\right),

    FS = \\frac{1}{|V|} \\sum_{v \\in V} (1 - D_v), \\qquad TS = w\\,PS + (1 - w)\\,FS,

where :math:`g` runs over the groups of variable :math:`v` (age in five bins, menopausal status, breast
density) and :math:`w` is ``ts_weight`` (0.5 in the challenge).

Checked against the public scoring code, LidiaGarrucho/MAMA-MIA at commit 3b40cf6
(``src/challenge/metrics.py``, ``src/challenge/scoring_task1.py``). Where we follow it and where not:

* **DSC** is ``2 TP / (2 TP + FP + FN)`` and 0 when ``TP + FP + FN = 0``: an empty prediction on an empty
  ground truth scores 0 in the challenge (MONAI's ``compute_dice(ignore_empty=False)`` would give 1;
  we follow the challenge). We compute it from the voxel counts in float64, as the challenge does.
* **HD95** (``hd_method="challenge"``, the default) is the challenge's, bit for bit (``metrics.py``,
  ``hausdorff_distance(method='95perc')``, called by ``compute_segmentation_metrics`` on the arrays read
  with ``sitk.GetArrayFromImage``):

  - the *contour* of a mask is ``sitk.LabelContour`` with its defaults (``fullyConnected=False``,
    ``backgroundValue=0``): the mask voxels with a face neighbour (4 in 2D, 6 in 3D) **inside the
    image** that is background. Voxels outside the image are no neighbours, so a mask voxel on the
    image border is contour only if it has a background face neighbour inside the image, and a
    whole-image mask has no contour at all;
  - distances are Euclidean between voxel *indices* (``np.argwhere`` of the contour arrays, nearest
    neighbour by ``scipy.spatial.cKDTree``): voxel units, the spacing is never used (the images are
    rebuilt from arrays, spacing 1);
  - for each direction (every contour voxel of one mask to the nearest contour voxel of the other)
    the 95th percentile with ``numpy.percentile``'s default linear interpolation, and HD95 is the
    larger of the two (not the percentile of the pooled distances);
  - **empty contours** (an empty *or whole-image* mask): both empty give HD95 0 (so NormHD 0), exactly
    one empty gives HD95 ``inf`` (NormHD 1). An empty prediction on a whole-image ground truth thus
    scores HD95 0 (DSC 0), and a whole-image prediction on a small tumour HD95 ``inf``.

  We take the same contours (face-neighbour test inside the image) and the same distances (exact
  Euclidean distance maps of each contour, ``scipy.ndimage.distance_transform_edt``, on the bounding
  box of both masks: the nearest contour voxel is the same set of squared integer distances as the
  k-d tree's) and the same percentile, so the values are equal to the last bit (tested against a
  transcription of the challenge's code on random masks, border-touching, empty and whole-image ones
  included).
* ``hd_method="monai"`` keeps MONAI's ``compute_hausdorff_distance(percentile=95)`` (the value before
  this option existed). It differs from the challenge's in three ways: (1) MONAI crops with a margin
  of one voxel padded with background and erodes with ``border_value=0``, i.e. it treats the outside
  of the image as background, so mask voxels on the image border are edges; where a mask touches the
  border the values differ (by up to several voxels on random masks), and a whole-image mask has the
  image border as its edge (a finite HD95 against a small cube instead of ``inf``); (2) emptiness is
  judged on the masks, not the contours (one empty mask: ``inf``; both empty: 0), so a whole-image
  mask is never "empty"; (3) it computes in float32 (``torch.quantile``), so equal definitions still
  differ by about 1e-7. Away from the border the definitions agree.
* **NormHD** is ``HD95 / 150``. The public script does *not* clip it (an HD95 of 300 voxels gives 2;
  only ``inf`` becomes 1). This package clips it to [0, 1] by default (``clip_normhd=True``), as its
  specification asks, so that NormHD and PS stay in [0, 1]. Pass ``clip_normhd=False`` to reproduce
  the public script exactly.
* **Groups**: the challenge bins age with ``pd.cut(bins=[0, 40, 50, 60, 70, 100])`` (right-inclusive:
  0-40, 41-50, 51-60, 61-70, 71+), as :func:`fairmonai.data.attributes.age_to_group` (which also puts
  ages 0 and > 100 in the end bins, where ``pd.cut`` gives NaN; no MAMA-MIA age is there: 21-77), maps
  menopause ``peri`` to ``pre`` and a missing value to the group ``unknown`` (as
  :func:`~fairmonai.data.attributes.normalise_menopause`; its substring tests give the same result on
  every string of the v2 clinical table), and lets ``groupby`` drop
  cases with a missing age or breast density from that variable only. We do the same: a case with
  excluded code ``-1`` (or a missing value) leaves that variable's groups only; PS still uses it.
* **Empty groups** are skipped in the max-min gaps. In the public script an empty age bin (a
  categorical column) yields a NaN group mean, and Python's ``max``/``min`` over a list holding NaN
  depend on its position; we take the gaps over the non-empty groups. A variable with fewer than two
  non-empty groups has :math:`D_v = 0` (no measurable gap), with a ``UserWarning``.
* **TS weight**: the public script writes ``(1 - alpha) PS + alpha FS`` with ``alpha = 0.5`` weighting
  fairness; ``ts_weight`` here weights performance (``TS = ts_weight PS + (1 - ts_weight) FS``), named so
  because the FairMedSeg loss has its own ``alpha``. Equal at the challenge's 0.5.
* The public script stores per-case values with ``df.loc[patient_id, ...]`` on a frame indexed
  0..N-1, which appends rows instead of filling the case's row; we implement the evident intent
  (group means over the cases of each group).

Metrics computed on a resampled or cropped grid are not comparable with the challenge's: HD95 is in
voxels of the original image, so compute them after inverting any resampling and cropping.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_hausdorff_distance
from monai.metrics.metric import CumulativeIterationMetric
from scipy import ndimage

from ..attribute_codes import EXCLUDED_CODE

__all__ = [
    "HD_MAX",
    "HD_METHODS",
    "VariableDisparity",
    "ChallengeScores",
    "case_scores",
    "challenge_scores",
    "ChallengeScoreMetric",
]

#: HD95 (voxels) that maps to NormHD 1 in the MAMA-MIA challenge.
HD_MAX = 150.0

#: ``hd_method`` values of :func:`case_scores`: the challenge's contours (default) or MONAI's edges.
HD_METHODS = ("challenge", "monai")

# Error messages (tests compare the exact text).
_MSG_SHAPE_MISMATCH = "pred and label must have the same shape, got {pred} and {label}."
_MSG_BAD_NDIM = (
    "pred must be HW, HWD (one case) or B1HW, B1HWD (a batch), got shape {shape}; "
    "add a batch dimension to a channel-first case (pred[None])."
)
_MSG_NOT_BINARY = "{name} must be binary (values 0 and 1 only), found {value}."
_MSG_HD_MAX = "hd_max must be a positive number, got {value!r}."
_MSG_HD_METHOD = "hd_method must be one of {allowed}, got {value!r}."
_MSG_TS_WEIGHT = "ts_weight must be a number in [0, 1], got {value!r}."
_MSG_SCORES_SHAPE = "{name} must be a 1-D array of per-case values, got shape {shape}."
_MSG_LENGTHS = "dsc has {n_dsc} cases and normhd {n_hd}: they must be equal."
_MSG_NO_CASES = "no cases to score (dsc is empty)."
_MSG_NOT_FINITE = "{name} has non-finite values at case index {index}."
_MSG_NO_VARIABLES = "sensitive_features must name at least one variable."
_MSG_FEATURE_LENGTH = "sensitive feature '{name}' has {n} values for {n_cases} cases."
_MSG_BAD_CODE = (
    "sensitive feature '{name}': code {code} at case index {index} is not a group code "
    "(0..{n_groups_minus_1}) nor the excluded code {excluded}."
)
_MSG_UNKNOWN_VALUE = "sensitive feature '{name}': value {value!r} at case index {index} is not one of {groups}."
_MSG_FEW_GROUPS = (
    "sensitive feature '{name}' has {n} non-empty group(s) ({groups}); its disparity is set to 0."
)
_MSG_METRIC_KEYS = "sensitive must hold exactly the keys {expected}, got {got}."


# ----------------------------------------------------------------------------------------------------
# per case
# ----------------------------------------------------------------------------------------------------


def _check_hd_max(hd_max: Any) -> None:
    if isinstance(hd_max, bool) or not isinstance(hd_max, (int, float)) or not 0 < hd_max < math.inf:
        raise ValueError(_MSG_HD_MAX.format(value=hd_max))


def _check_ts_weight(ts_weight: Any) -> None:
    if isinstance(ts_weight, bool) or not isinstance(ts_weight, (int, float)) or not 0.0 <= ts_weight <= 1.0:
        raise ValueError(_MSG_TS_WEIGHT.format(value=ts_weight))


def _check_hd_method(hd_method: Any) -> str:
    if not isinstance(hd_method, str) or hd_method not in HD_METHODS:
        raise ValueError(_MSG_HD_METHOD.format(allowed=HD_METHODS, value=hd_method))
    return hd_method


def _as_batch(x: Any, name: str) -> torch.Tensor:
    t = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)  # a MetaTensor's plain data
    if t.dtype != torch.bool:
        bad = ~((t == 0) | (t == 1))
        if bool(bad.any()):
            raise ValueError(_MSG_NOT_BINARY.format(name=name, value=t[bad].flatten()[0].item()))
    return t.to(torch.float32)


def _contour(mask: np.ndarray) -> np.ndarray:
    """The voxels of a boolean mask with a background face neighbour inside the array.

    The contour of ``sitk.LabelContour(image, fullyConnected=False, backgroundValue=0)`` for a binary
    image: positions outside the array are no neighbours, so the array border is not a contour.
    """
    interior = mask.copy()
    for axis in range(mask.ndim):
        lower = [slice(None)] * mask.ndim
        upper = [slice(None)] * mask.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        interior[tuple(lower)] &= mask[tuple(upper)]  # the neighbour at +1 along axis
        interior[tuple(upper)] &= mask[tuple(lower)]  # the neighbour at -1 along axis
    return mask & ~interior


def _challenge_hd95(a: np.ndarray, b: np.ndarray) -> float:
    """HD95 (voxels) between the ``LabelContour`` contours of boolean masks ``a`` and ``b``, as the challenge.

    0 when neither mask has a contour, ``inf`` when exactly one has none (empty or whole-image mask).
    """
    union = a | b
    if not union.any():
        return 0.0
    # Crop to the masks' bounding box grown by one voxel (inside the array): every contour voxel and
    # every in-array neighbour of a mask voxel stays in the crop, so contours and distances are unchanged.
    box = []
    for axis in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(i for i in range(union.ndim) if i != axis)))
        box.append(slice(max(int(hit[0]) - 1, 0), int(hit[-1]) + 2))
    ca, cb = _contour(a[tuple(box)]), _contour(b[tuple(box)])
    has_a, has_b = bool(ca.any()), bool(cb.any())
    if not (has_a and has_b):
        return 0.0 if has_a == has_b else math.inf
    # exact Euclidean distance of every contour voxel of one mask to the nearest of the other's
    a_to_b = ndimage.distance_transform_edt(~cb)[ca]
    b_to_a = ndimage.distance_transform_edt(~ca)[cb]
    return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def _monai_hd95(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(B,)`` float64 HD95 of MONAI (outside = background); ``inf`` for one empty mask, 0 for two."""
    spatial = tuple(range(2, p.ndim))
    pred_any = p.sum(dim=spatial)[:, 0] > 0
    label_any = y.sum(dim=spatial)[:, 0] > 0
    both = pred_any & label_any
    hd95 = torch.full((p.shape[0],), math.inf, dtype=torch.float64, device=p.device)
    hd95[~pred_any & ~label_any] = 0.0
    if bool(both.any()):
        idx = torch.nonzero(both).flatten()
        with warnings.catch_warnings():  # MONAI 1.6 passes its own deprecated argument to get_mask_edges
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            hd = compute_hausdorff_distance(p[idx], y[idx], include_background=True, percentile=95)
        hd95[idx] = hd[:, 0].to(device=hd95.device, dtype=hd95.dtype)
    return hd95


def case_scores(
    pred: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray,
    *,
    hd_max: float = HD_MAX,
    clip_normhd: bool = True,
    hd_method: str = "challenge",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-case DSC, HD95 (voxels) and NormHD of binary masks, as the MAMA-MIA challenge scores them.

    .. math::

        \\mathrm{DSC} = \\frac{2\\,TP}{2\\,TP + FP + FN}\\ (0 \\text{ if } TP + FP + FN = 0), \\qquad
        \\mathrm{HD95} = \\max\\big(P_{95}\\{d(a, C_Y)\\}_{a \\in C_P},\\ P_{95}\\{d(b, C_P)\\}_{b \\in C_Y}\\big),
        \\qquad \\mathrm{NormHD} = \\frac{\\mathrm{HD95}}{\\text{hd\\_max}}

    with :math:`C_P, C_Y` the contours of prediction and label (``sitk.LabelContour``: mask voxels with
    a background face neighbour inside the image; the image border is no contour), :math:`d` the
    Euclidean distance between voxel indices and :math:`P_{95}` ``numpy.percentile`` (linear
    interpolation). Empty contours (an empty or a whole-image mask): both empty give HD95 0, NormHD 0;
    exactly one gives HD95 ``inf``, NormHD 1. With the default ``hd_method="challenge"`` the values are
    those of the challenge's scoring code to the last bit; see the module docstring for the details and
    for how ``hd_method="monai"`` differs (the image border, whole-image masks).

    The masks must be on the case's **original image grid** (as the challenge reads the NIfTI files):
    HD95 is in voxel index units, without spacing, so values from a resampled or cropped grid are not
    comparable. Axis order and flips do not matter (distances between indices are unchanged), so a
    reoriented (e.g. ``Orientationd``) but not resampled grid gives the same values.

    Args:
        pred: binary prediction (0/1 or bool), one case ``HW`` / ``HWD`` or a batch ``B1HW`` / ``B1HWD``.
            A channel-first case ``1HWD`` must be given as a batch (``pred[None]``).
        label: binary ground truth, same shape as ``pred``.
        hd_max: HD95 that maps to NormHD 1. Defaults to 150 (the challenge's ``HD_MAX``).
        clip_normhd: clip NormHD to [0, 1]. Defaults to ``True``; the public scoring script does not
            clip (``False`` reproduces it).
        hd_method: ``"challenge"`` (default; the challenge's contours, computed on the CPU) or
            ``"monai"`` (:func:`monai.metrics.compute_hausdorff_distance` with ``percentile=95``,
            which treats the outside of the image as background; emptiness judged on the masks).

    Returns:
        ``(dsc, hd95, normhd)``: float64 tensors on ``pred``'s device, shape ``(B,)`` for a batch, 0-d
        for one case. HD95 in voxels (``inf`` as above).

    Raises:
        ValueError: shapes differ or are not one of the above; a non-binary value; ``hd_max <= 0``;
            ``hd_method`` not one of :data:`HD_METHODS`.

    Example:
        >>> gt = torch.zeros(8, 8, 8); gt[2:4, 2:4, 2:4] = 1
        >>> dsc, hd95, normhd = case_scores(gt, gt)   # 1.0, 0.0, 0.0
    """
    _check_hd_max(hd_max)
    _check_hd_method(hd_method)
    p = _as_batch(pred, "pred")
    y = _as_batch(label, "label")
    if p.shape != y.shape:
        raise ValueError(_MSG_SHAPE_MISMATCH.format(pred=tuple(p.shape), label=tuple(y.shape)))
    single = p.ndim in (2, 3)
    if single:
        p, y = p[None, None], y[None, None]
    elif p.ndim not in (4, 5) or p.shape[1] != 1:
        raise ValueError(_MSG_BAD_NDIM.format(shape=tuple(p.shape)))
    y = y.to(p.device)

    # DSC from the voxel counts, as the challenge: 2TP / (2TP + FP + FN), := 0 when TP + FP + FN = 0.
    spatial = tuple(range(1, p.ndim))
    pb, yb = p > 0, y > 0
    tp = (pb & yb).sum(dim=spatial).to(torch.float64)
    fp_fn = (pb ^ yb).sum(dim=spatial).to(torch.float64)
    den = 2 * tp + fp_fn
    dsc = torch.where(den > 0, 2 * tp / den.clamp(min=1), torch.zeros_like(den))

    if hd_method == "monai":
        hd95 = _monai_hd95(p, y)
    else:
        pn, yn = pb[:, 0].cpu().numpy(), yb[:, 0].cpu().numpy()
        hd95 = torch.tensor([_challenge_hd95(pn[i], yn[i]) for i in range(pn.shape[0])], dtype=torch.float64,
                            device=p.device)
    normhd = torch.where(torch.isinf(hd95), torch.ones_like(hd95), hd95 / float(hd_max))
    if clip_normhd:
        normhd = normhd.clamp(0.0, 1.0)
    if single:
        return dsc[0], hd95[0], normhd[0]
    return dsc, hd95, normhd


# ----------------------------------------------------------------------------------------------------
# cohort scores
# ----------------------------------------------------------------------------------------------------


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass(frozen=True)
class VariableDisparity:
    """Group means and disparity of one fairness variable.

    Attributes:
        name: the variable (e.g. ``"age_group"``).
        groups: group names, in code order (``group_names``) or sorted.
        counts: cases per group (excluded cases are in no group).
        mean_dsc: mean DSC per group, ``nan`` for an empty group.
        mean_normhd: mean NormHD per group, ``nan`` for an empty group.
        dsc_gap: max - min of the non-empty groups' mean DSC (0 with fewer than two).
        normhd_gap: max - min of the non-empty groups' mean NormHD (0 with fewer than two).
        disparity: :math:`D_v = (\\text{dsc\\_gap} + \\text{normhd\\_gap}) / 2`.
        n_excluded: cases left out of this variable (excluded code or missing value).
    """

    name: str
    groups: tuple[str, ...]
    counts: tuple[int, ...]
    mean_dsc: tuple[float, ...]
    mean_normhd: tuple[float, ...]
    dsc_gap: float
    normhd_gap: float
    disparity: float
    n_excluded: int

    @property
    def fairness(self) -> float:
        """:math:`1 - D_v`, this variable's term of FS."""
        return 1.0 - self.disparity

    def to_dict(self) -> dict:
        """JSON-ready dict (``nan`` group means become ``None``)."""
        return {
            "name": self.name,
            "groups": list(self.groups),
            "counts": list(self.counts),
            "mean_dsc": [_none_if_nan(v) for v in self.mean_dsc],
            "mean_normhd": [_none_if_nan(v) for v in self.mean_normhd],
            "dsc_gap": self.dsc_gap,
            "normhd_gap": self.normhd_gap,
            "disparity": self.disparity,
            "fairness": self.fairness,
            "n_excluded": self.n_excluded,
        }


@dataclass(frozen=True)
class ChallengeScores:
    """The MAMA-MIA Task 1 scores of one set of predictions.

    Attributes:
        n_cases: cases scored.
        mean_dsc: mean DSC over all cases.
        mean_normhd: mean NormHD over all cases.
        performance_score: PS.
        fairness_score: FS, the mean of ``1 - D_v`` over the variables.
        total_score: TS (the challenge's ranking score).
        ts_weight: the weight of PS in TS.
        variables: per-variable group means and disparity, in the order given.
    """

    n_cases: int
    mean_dsc: float
    mean_normhd: float
    performance_score: float
    fairness_score: float
    total_score: float
    ts_weight: float
    variables: dict[str, VariableDisparity] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict of every score (``nan`` group means become ``None``)."""
        return {
            "n_cases": self.n_cases,
            "mean_dsc": self.mean_dsc,
            "mean_normhd": self.mean_normhd,
            "performance_score": self.performance_score,
            "fairness_score": self.fairness_score,
            "total_score": self.total_score,
            "ts_weight": self.ts_weight,
            "variables": {k: v.to_dict() for k, v in self.variables.items()},
        }

    def to_frame(self) -> pd.DataFrame:
        """Long table, one row per (variable, group): ``variable, group, count, mean_dsc, mean_normhd``."""
        rows = [
            {"variable": v.name, "group": g, "count": c, "mean_dsc": d, "mean_normhd": h}
            for v in self.variables.values()
            for g, c, d, h in zip(v.groups, v.counts, v.mean_dsc, v.mean_normhd)
        ]
        return pd.DataFrame(rows, columns=["variable", "group", "count", "mean_dsc", "mean_normhd"])


def _per_case(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:  # MONAI's (B, 1)
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(_MSG_SCORES_SHAPE.format(name=name, shape=a.shape))
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ValueError(_MSG_NOT_FINITE.format(name=name, index=int(bad[0])))
    return a


def _encode_feature(name: str, values: Any, n_cases: int, names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integer group codes (``-1`` = excluded) and group names of one variable."""
    if names is None and isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        names = [str(c) for c in values.cat.categories]
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    # a plain list goes through dtype=object so that None / NaN stay missing (not the string "nan")
    if isinstance(values, (np.ndarray, pd.Series, pd.Index)):
        arr = np.asarray(values)
    else:
        arr = np.asarray(values, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n_cases:
        raise ValueError(_MSG_FEATURE_LENGTH.format(name=name, n=arr.shape[0] if arr.ndim else 1, n_cases=n_cases))
    if arr.dtype.kind == "O":
        present = [v for v in arr if not pd.isna(v)]
        if present and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                           for v in present):
            arr = np.array([np.nan if pd.isna(v) else float(v) for v in arr], dtype=np.float64)

    as_codes = arr.dtype.kind in "iu"
    if arr.dtype.kind == "f":
        finite = arr[~np.isnan(arr)]
        as_codes = bool(np.all(finite == np.round(finite)))
    if as_codes:  # integer codes; EXCLUDED_CODE (or NaN in a float array) leaves the case out
        if arr.dtype.kind == "f":
            arr = np.where(np.isnan(arr), EXCLUDED_CODE, arr)
        codes = arr.astype(np.int64)
        kept = codes != EXCLUDED_CODE
        groups = list(names) if names is not None else [str(c) for c in np.unique(codes[kept])]
        if names is None:
            lookup = {int(c): i for i, c in enumerate(np.unique(codes[kept]))}
            codes = np.array([lookup.get(int(c), EXCLUDED_CODE) for c in codes], dtype=np.int64)
        bad = np.flatnonzero(kept & ((codes < 0) | (codes >= len(groups))))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                _MSG_BAD_CODE.format(name=name, code=int(arr[i]), index=i, n_groups_minus_1=len(groups) - 1,
                                     excluded=EXCLUDED_CODE)
            )
        return codes, [str(g) for g in groups]

    # values (strings, objects): a missing value (None, NaN, pd.NA) leaves the case out
    missing = pd.isna(pd.Series(arr, dtype=object)).to_numpy()
    strs = np.array([str(v) for v in arr], dtype=object)
    groups = [str(g) for g in names] if names is not None else sorted(set(strs[~missing]))
    lookup = {g: i for i, g in enumerate(groups)}
    codes = np.full(n_cases, EXCLUDED_CODE, dtype=np.int64)
    for i in np.flatnonzero(~missing):
        code = lookup.get(strs[i])
        if code is None:
            raise ValueError(_MSG_UNKNOWN_VALUE.format(name=name, value=arr[i], index=int(i), groups=groups))
        codes[i] = code
    return codes, groups


def _variable_disparity(name: str, codes: np.ndarray, groups: list[str], dsc: np.ndarray,
                        normhd: np.ndarray) -> VariableDisparity:
    kept = codes != EXCLUDED_CODE
    n_groups = len(groups)
    counts = np.bincount(codes[kept], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_dsc = np.bincount(codes[kept], weights=dsc[kept], minlength=n_groups) / counts
        mean_hd = np.bincount(codes[kept], weights=normhd[kept], minlength=n_groups) / counts
    present = counts > 0
    if present.sum() < 2:
        warnings.warn(
            _MSG_FEW_GROUPS.format(name=name, n=int(present.sum()),
                                   groups=[g for g, p in zip(groups, present) if p]),
            UserWarning, stacklevel=3,
        )
        dsc_gap = hd_gap = 0.0
    else:
        dsc_gap = float(mean_dsc[present].max() - mean_dsc[present].min())
        hd_gap = float(mean_hd[present].max() - mean_hd[present].min())
    return VariableDisparity(
        name=name,
        groups=tuple(groups),
        counts=tuple(int(c) for c in counts),
        mean_dsc=tuple(float(v) for v in mean_dsc),
        mean_normhd=tuple(float(v) for v in mean_hd),
        dsc_gap=dsc_gap,
        normhd_gap=hd_gap,
        disparity=0.5 * (dsc_gap + hd_gap),
        n_excluded=int((~kept).sum()),
    )


def challenge_scores(
    dsc: Any,
    normhd: Any,
    *,
    sensitive_features: Mapping[str, Any],
    ts_weight: float = 0.5,
    group_names: Mapping[str, Sequence[str]] | None = None,
) -> ChallengeScores:
    """PS, per-variable disparity, FS and TS of the MAMA-MIA challenge from per-case DSC and NormHD.

    .. math::

        PS = \\tfrac12(\\overline{DSC} + 1 - \\overline{NormHD}), \\quad
        D_v = \\tfrac12(\\Delta_v DSC + \\Delta_v NormHD), \\quad
        FS = \\operatorname{mean}_v (1 - D_v), \\quad TS = w\\,PS + (1 - w)\\,FS

    with :math:`\\Delta_v` the max - min over the non-empty groups of ``v`` of the group means. PS uses
    every case; a case excluded from a variable (code ``-1`` or a missing value) leaves only that
    variable's groups. Empty groups are reported (count 0, mean ``nan``) but skipped in the gaps; a
    variable with fewer than two non-empty groups has :math:`D_v = 0` and a ``UserWarning``. See the
    module docstring for the points where this follows or departs from the public scoring script.

    Args:
        dsc: per-case DSC, shape ``(N,)`` (or MONAI's ``(N, 1)``).
        normhd: per-case NormHD, same length.
        sensitive_features: ``{variable: per-case groups}``, each either integer codes (``-1`` =
            excluded, as the manifest's ``<attr>_code``) or values (strings; ``None``/NaN = excluded;
            note that ``"unknown"`` is a group, as menopausal status ``unknown`` in the challenge).
            The challenge's variables are the ``mama_mia`` schema's attributes ``age_group``,
            ``menopausal_status`` and ``breast_density``.
        ts_weight: weight of PS in TS, in [0, 1]. Defaults to 0.5 (the challenge).
        group_names: optional ``{variable: group names}``. For codes, the name of each code (so empty
            groups are listed too); for values, the allowed values in report order (others raise).
            Without it, groups are the observed codes or values, sorted. Variables that are not in
            ``sensitive_features`` are ignored, so a schema's whole table can be passed, e.g.
            ``fairmonai.data.sensitive.attribute_groups("mama_mia")`` (the groups in code order).

    Returns:
        A :class:`ChallengeScores` (``to_dict()`` for JSON, ``to_frame()`` for a per-group table).

    Raises:
        ValueError: ``ts_weight`` outside [0, 1]; no case or no variable; lengths differ; a NaN or
            infinite score (naming the case index); a code or value that is not a group.

    Example:
        >>> s = challenge_scores([0.9, 0.7], [0.1, 0.3], sensitive_features={"age_group": [0, 1]},
        ...                      group_names={"age_group": ["0-40", "41-50", "51-60", "61-70", "71+"]})
        >>> round(s.fairness_score, 3)   # 1 - 0.5 * (0.2 + 0.2)
        0.8
    """
    _check_ts_weight(ts_weight)
    if not sensitive_features:
        raise ValueError(_MSG_NO_VARIABLES)
    group_names = dict(group_names or {})

    d = _per_case(dsc, "dsc")
    h = _per_case(normhd, "normhd")
    if d.shape[0] != h.shape[0]:
        raise ValueError(_MSG_LENGTHS.format(n_dsc=d.shape[0], n_hd=h.shape[0]))
    if d.shape[0] == 0:
        raise ValueError(_MSG_NO_CASES)

    variables = {}
    for name, values in sensitive_features.items():
        codes, groups = _encode_feature(name, values, d.shape[0], group_names.get(name))
        variables[name] = _variable_disparity(name, codes, groups, d, h)

    mean_dsc, mean_hd = float(d.mean()), float(h.mean())
    ps = 0.5 * (mean_dsc + 1.0 - mean_hd)
    fs = float(np.mean([1.0 - v.disparity for v in variables.values()]))
    w = float(ts_weight)
    return ChallengeScores(
        n_cases=int(d.shape[0]),
        mean_dsc=mean_dsc,
        mean_normhd=mean_hd,
        performance_score=ps,
        fairness_score=fs,
        total_score=w * ps + (1.0 - w) * fs,
        ts_weight=w,
        variables=variables,
    )


# ----------------------------------------------------------------------------------------------------
# cumulative metric
# ----------------------------------------------------------------------------------------------------


class ChallengeScoreMetric(CumulativeIterationMetric):
    """Buffers per-case DSC, NormHD and group codes; :meth:`aggregate` returns :class:`ChallengeScores`.

    Each call scores a batch with :func:`case_scores` and appends one row per case
    ``[dsc, normhd, code_1, ..., code_V]`` to the buffer, so ``aggregate`` gathers the per-case values
    of every rank (``Cumulative``'s all-gather) before computing group means: no per-rank averaging.

    The variables and their group names come from the caller, normally from the dataset's schema
    (this package's metrics do not read schemas): for the challenge,
    ``attribute_groups("mama_mia")`` of :mod:`fairmonai.data.sensitive` gives ``{"age_group": [...],
    "menopausal_status": [...], "breast_density": [...]}`` in code order, whose keys are the
    ``sensitive_keys`` and which is the ``group_names``.

    Args:
        sensitive_keys: the variables, in order (the challenge's: ``age_group``, ``menopausal_status``,
            ``breast_density``).
        group_names: ``{variable: group names}``, the name of each code, so that empty groups are
            listed too. Defaults to ``None``: the groups are the codes observed, named by their number.
        ts_weight: weight of PS in TS. Defaults to 0.5.
        hd_max: HD95 mapped to NormHD 1. Defaults to 150.
        clip_normhd: clip NormHD to [0, 1]. Defaults to ``True``.
        hd_method: HD95 of :func:`case_scores`: ``"challenge"`` (default, the challenge's contours) or
            ``"monai"`` (MONAI's, the outside of the image as background).

    Raises:
        ValueError: ``ts_weight`` outside [0, 1], ``hd_max`` not positive, ``hd_method`` not one of
            :data:`HD_METHODS`, no sensitive key.

    Example:
        >>> from fairmonai.attribute_codes import code_key
        >>> groups = fairmonai.data.sensitive.attribute_groups("mama_mia")  # the caller reads the schema
        >>> metric = ChallengeScoreMetric(tuple(groups), group_names=groups)
        >>> for batch in loader:   # pred, label: B1HWD on each case's original grid
        ...     metric(pred, label, sensitive={k: batch[code_key(k)] for k in metric.sensitive_keys})
        >>> scores = metric.aggregate()   # ChallengeScores
    """

    def __init__(
        self,
        sensitive_keys: Sequence[str],
        *,
        group_names: Mapping[str, Sequence[str]] | None = None,
        ts_weight: float = 0.5,
        hd_max: float = HD_MAX,
        clip_normhd: bool = True,
        hd_method: str = "challenge",
    ) -> None:
        _check_ts_weight(ts_weight)
        _check_hd_max(hd_max)
        _check_hd_method(hd_method)
        if len(sensitive_keys) == 0:
            raise ValueError(_MSG_NO_VARIABLES)
        super().__init__()
        self.sensitive_keys = tuple(sensitive_keys)
        self.group_names = dict(group_names) if group_names is not None else None
        self.ts_weight = ts_weight
        self.hd_max = hd_max
        self.clip_normhd = clip_normhd
        self.hd_method = hd_method

    def __call__(  # type: ignore[override]
        self, y_pred: Any, y: Any = None, *, sensitive: Mapping[str, Any]
    ) -> torch.Tensor:
        """Score a batch (``B1HW[D]`` tensors, or lists of channel-first ``1HW[D]`` cases of any size).

        Args:
            y_pred: binary predictions.
            y: binary ground truth.
            sensitive: ``{variable: B group codes}`` (``-1`` = excluded), keys = ``sensitive_keys``.

        Returns:
            The rows appended to the buffer, shape ``(B, 2 + V)``.
        """
        if set(sensitive) != set(self.sensitive_keys):
            raise ValueError(_MSG_METRIC_KEYS.format(expected=list(self.sensitive_keys), got=list(sensitive)))
        if isinstance(y_pred, (list, tuple)):  # channel-first cases, possibly of different sizes
            scores = torch.cat([self._compute_tensor(torch.as_tensor(p)[None], torch.as_tensor(t)[None])
                                for p, t in zip(y_pred, y)])
        else:
            scores = self._compute_tensor(y_pred, y)
        dsc, normhd = scores[:, 0], scores[:, 1]
        cols = [dsc.cpu().to(torch.float64), normhd.cpu().to(torch.float64)]
        for k in self.sensitive_keys:
            codes = torch.as_tensor(np.asarray(sensitive[k].cpu() if isinstance(sensitive[k], torch.Tensor)
                                               else sensitive[k], dtype=np.int64)).reshape(-1)
            if codes.shape[0] != dsc.shape[0]:
                raise ValueError(_MSG_FEATURE_LENGTH.format(name=k, n=codes.shape[0], n_cases=dsc.shape[0]))
            cols.append(codes.to(torch.float64))
        rows = torch.stack(cols, dim=1)
        self.extend(rows)
        return rows

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """``(B, 2)``: DSC and NormHD of each case of a ``B1HW[D]`` batch."""
        dsc, _, normhd = case_scores(y_pred, y, hd_max=self.hd_max, clip_normhd=self.clip_normhd,
                                     hd_method=self.hd_method)
        return torch.stack([dsc.reshape(-1), normhd.reshape(-1)], dim=1)

    def aggregate(self) -> ChallengeScores:  # type: ignore[override]
        """:class:`ChallengeScores` of every case buffered (on every rank) since the last ``reset``."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            raise ValueError(_MSG_NO_CASES)
        data = data.cpu().numpy()
        feats = {k: data[:, 2 + i].astype(np.int64) for i, k in enumerate(self.sensitive_keys)}
        return challenge_scores(data[:, 0], data[:, 1], sensitive_features=feats, ts_weight=self.ts_weight,
                                group_names=self.group_names)
