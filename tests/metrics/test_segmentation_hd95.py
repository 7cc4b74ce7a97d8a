"""HD95 of ``case_scores`` against the MAMA-MIA challenge's own definition, bit for bit.

``_challenge_case`` below is a transcription of how the public scoring code (LidiaGarrucho/MAMA-MIA,
commit 3b40cf6, ``src/challenge/metrics.py``: ``compute_segmentation_metrics`` and
``hausdorff_distance(method='95perc')``) scores one case given the two arrays that ``scoring_task1.py``
reads with ``sitk.GetArrayFromImage``:

* contours: each array cast to uint8, ``sitk.GetImageFromArray`` (spacing 1), ``sitk.LabelContour`` with
  its defaults (``fullyConnected=False``, ``backgroundValue=0``), ``np.argwhere(contour > 0)``;
* neither contour has a point: HD 0; exactly one has none: HD ``inf``;
* otherwise ``scipy.spatial.cKDTree`` nearest-neighbour distances both ways and
  ``max(np.percentile(forward, 95), np.percentile(backward, 95))``;
* ``NormHD = HD / hd_max`` (no clipping) and 1 for ``inf``; ``DSC = 2TP / (2TP + FP + FN)``, 0 when
  ``TP + FP + FN = 0``.

``case_scores`` computes contours and distances its own way (neighbour tests and Euclidean distance
maps), so agreement here is agreement of two independent implementations.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage
from scipy.spatial import cKDTree

from fairmonai.metrics import HD_METHODS, ChallengeScoreMetric, case_scores

sitk = pytest.importorskip("SimpleITK")

HD_MAX = 150


def _challenge_case(reference: np.ndarray, prediction: np.ndarray, hd_max: float = HD_MAX):
    """(DSC, HD95, NormHD) of one case as the challenge's scoring code computes them (see module docstring)."""
    ref, pred = reference.astype(bool), prediction.astype(bool)
    tp = np.sum(ref & pred)
    fp = np.sum(~ref & pred)
    fn = np.sum(ref & ~pred)
    dsc = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0

    contour0 = sitk.GetArrayFromImage(sitk.LabelContour(sitk.GetImageFromArray(reference.astype(np.uint8))))
    contour1 = sitk.GetArrayFromImage(sitk.LabelContour(sitk.GetImageFromArray(prediction.astype(np.uint8))))
    a_points, b_points = np.argwhere(contour0 > 0), np.argwhere(contour1 > 0)
    if len(a_points) == 0:
        hd = 0 if len(b_points) == 0 else np.inf
    elif len(b_points) == 0:
        hd = np.inf
    else:
        forward = cKDTree(a_points).query(b_points, k=1)[0]
        backward = cKDTree(b_points).query(a_points, k=1)[0]
        hd = max(np.percentile(forward, 95), np.percentile(backward, 95))
    normhd = hd / hd_max if hd != np.inf else 1
    return float(dsc), float(hd), float(normhd)


# ----------------------------------------------------------------------------------------------------
# random masks
# ----------------------------------------------------------------------------------------------------

# 2D-in-3D (a singleton axis in each position), thin 3D, small 3D and 2D grids
SHAPES = [(1, 12, 15), (11, 1, 9), (10, 13, 1), (6, 7, 5), (4, 9, 8), (13, 10)]
KINDS = ("blob", "blob", "blob", "sparse", "box", "empty", "whole")


def _random_mask(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    if kind == "empty":
        return np.zeros(shape, bool)
    if kind == "whole":
        return np.ones(shape, bool)
    if kind == "sparse":  # isolated voxels and small clusters
        return rng.random(shape) < rng.uniform(0.01, 0.15)
    if kind == "box":  # an axis-aligned box, often on the border
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, shape)]
        m = np.zeros(shape, bool)
        m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
        return m
    # blobs: smoothed noise above a random level, so they run into the border
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(0.8, 2.0))
    return field > np.quantile(field, rng.uniform(0.55, 0.97))


def _touches_border(m: np.ndarray) -> bool:
    if not m.any() or m.all():
        return False
    for axis in range(m.ndim):
        if np.take(m, 0, axis=axis).any() or np.take(m, -1, axis=axis).any():
            return True
    return False


def random_pairs(seed: int = 0, n_random: int = 300):
    """(reference, prediction) pairs: every empty/whole combination on each grid, then random pairs."""
    rng = np.random.default_rng(seed)
    pairs = []
    for shape in SHAPES:
        specials = ("empty", "whole", "blob")
        for k0 in specials:
            for k1 in specials:
                pairs.append((_random_mask(rng, shape, k0), _random_mask(rng, shape, k1)))
    for i in range(n_random):
        shape = SHAPES[i % len(SHAPES)]
        k0, k1 = rng.choice(KINDS, size=2)
        pairs.append((_random_mask(rng, shape, k0), _random_mask(rng, shape, k1)))
    return pairs


PAIRS = random_pairs()


def test_random_masks_cover_border_empty_and_whole():
    n_border = sum(_touches_border(a) or _touches_border(b) for a, b in PAIRS)
    n_empty = sum((not a.any()) or (not b.any()) for a, b in PAIRS)
    n_both_empty = sum((not a.any()) and (not b.any()) for a, b in PAIRS)
    n_whole = sum(a.all() or b.all() for a, b in PAIRS)
    assert len(PAIRS) == 354
    assert n_border >= 200 and n_empty >= 60 and n_both_empty >= 6 and n_whole >= 60


def test_hd95_dsc_normhd_equal_the_challenge_on_random_masks():
    ref = np.array([_challenge_case(a, b) for a, b in PAIRS])
    # one batch per grid, as an evaluator would send them; clip_normhd=False is the public script
    got = np.full_like(ref, np.nan)
    for shape in SHAPES:
        idx = [i for i, (a, _) in enumerate(PAIRS) if a.shape == shape]
        label = torch.from_numpy(np.stack([PAIRS[i][0] for i in idx]))[:, None]
        pred = torch.from_numpy(np.stack([PAIRS[i][1] for i in idx]))[:, None]
        dsc, hd95, normhd = case_scores(pred, label, clip_normhd=False)
        assert dsc.dtype == hd95.dtype == normhd.dtype == torch.float64
        got[idx] = torch.stack([dsc, hd95, normhd], dim=1).numpy()
    assert not np.isnan(got).any()
    # exactly equal, the inf cases included (inf == inf); NormHD 1 for them
    np.testing.assert_array_equal(got, ref)
    inf = np.isinf(ref[:, 1])
    assert inf.sum() >= 40 and (got[inf, 2] == 1.0).all()
    # clipped (the default) only caps NormHD at 1
    _, _, clipped = case_scores(torch.from_numpy(PAIRS[-1][1]), torch.from_numpy(PAIRS[-1][0]))
    assert clipped.item() == min(ref[-1, 2], 1.0)


def test_monai_method_differs_only_where_a_mask_reaches_the_border():
    # MONAI's edges treat the outside of the image as background: different values on border-touching
    # or whole-image masks; off the border the two definitions agree (MONAI in float32: to 1e-5)
    n_diff = 0
    for a, b in PAIRS:
        _, hd_c, _ = case_scores(b, a)
        _, hd_m, _ = case_scores(b, a, hd_method="monai")
        hd_c, hd_m = hd_c.item(), hd_m.item()
        same = hd_c == hd_m or (math.isfinite(hd_c) and math.isfinite(hd_m) and abs(hd_c - hd_m) < 1e-5)
        n_diff += not same
        if not same:
            assert _touches_border(a) or _touches_border(b) or a.all() or b.all()
    assert n_diff >= 100


# ----------------------------------------------------------------------------------------------------
# hand-computed cases
# ----------------------------------------------------------------------------------------------------


def test_single_voxels_at_known_distance():
    # (1, 2, 3) and (4, 6, 3): distance sqrt(3^2 + 4^2) = 5 both ways; a single voxel is its own contour,
    # also in a corner of the image (it has background neighbours inside the image)
    a, b = np.zeros((6, 7, 8), bool), np.zeros((6, 7, 8), bool)
    a[1, 2, 3], b[4, 6, 3] = True, True
    dsc, hd95, normhd = case_scores(a, b)
    assert (dsc.item(), hd95.item(), normhd.item()) == (0.0, 5.0, 5.0 / 150)
    assert _challenge_case(a, b) == (0.0, 5.0, 5.0 / 150)
    c = np.zeros((6, 7, 8), bool)
    c[0, 0, 0] = True  # (0,0,0) to (4,6,3): sqrt(16 + 36 + 9) = sqrt(61)
    assert case_scores(c, b)[1].item() == math.sqrt(61) == _challenge_case(b, c)[1]


def test_border_strip_hand_values_challenge_and_monai():
    # 5x5 image. label: columns 0-1 (10 px); pred: column 1 (5 px). DSC = 2*5 / (10 + 5) = 2/3.
    # challenge: column 0 of the label lies on the image border with no background face neighbour
    #   inside the image -> not contour; contour(label) = column 1 = contour(pred) -> HD95 0.
    # MONAI: the outside is background, so column 0 is edge too: label->pred distances five 0s and
    #   five 1s, 95th percentile at rank 0.95*9 = 8.55 -> 1; pred->label all 0 -> HD95 1.
    label, pred = np.zeros((5, 5), bool), np.zeros((5, 5), bool)
    label[:, :2] = True
    pred[:, 1] = True
    dsc, hd95, _ = case_scores(pred, label)
    assert dsc.item() == 2 / 3 and hd95.item() == 0.0
    assert _challenge_case(label, pred)[:2] == (2 / 3, 0.0)
    _, hd_m, normhd_m = case_scores(pred, label, hd_method="monai")
    assert hd_m.item() == 1.0 and normhd_m.item() == 1.0 / 150


@pytest.mark.parametrize("shape", [(3, 3), (3, 3, 3)])
def test_whole_image_mask_has_no_contour(shape):
    # the whole image against its centre voxel.
    # challenge: LabelContour of a whole-image mask is empty -> HD95 inf, NormHD 1.
    # MONAI: the whole-image mask's edge is every voxel but the centre; centre->edge: 1;
    #   edge->centre in 2D: 4 x 1 and 4 x sqrt(2), rank 0.95*7 = 6.65 falls in the sqrt(2)s -> sqrt(2);
    #   in 3D: 6 x 1, 12 x sqrt(2), 8 x sqrt(3), rank 0.95*25 = 23.75 in the sqrt(3)s -> sqrt(3).
    whole = np.ones(shape, bool)
    centre = np.zeros(shape, bool)
    centre[(1,) * len(shape)] = True
    dsc_expected = 2 * 1 / (3 ** len(shape) + 1)
    assert _challenge_case(centre, whole) == (dsc_expected, math.inf, 1.0)
    dsc, hd95, normhd = case_scores(whole, centre)
    assert (dsc.item(), hd95.item(), normhd.item()) == (dsc_expected, math.inf, 1.0)
    _, hd_m, _ = case_scores(whole, centre, hd_method="monai")
    assert hd_m.item() == pytest.approx(math.sqrt(len(shape)), abs=1e-6)


def test_empty_and_whole_combinations():
    # contours: empty mask -> none, whole mask -> none, small cube -> some.
    # challenge HD95: none/none -> 0; none/some -> inf. DSC: 2TP/(2TP+FP+FN), 0 when TP+FP+FN = 0.
    empty, whole, cube = np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
    cube[1:3, 1:3, 1:3] = True
    cases = [  # (pred, label, DSC, HD95, NormHD), challenge
        (empty, empty, 0.0, 0.0, 0.0),
        (whole, whole, 1.0, 0.0, 0.0),
        (empty, whole, 0.0, 0.0, 0.0),  # no contour on either side: HD 0 although DSC is 0
        (whole, empty, 0.0, 0.0, 0.0),
        (empty, cube, 0.0, math.inf, 1.0),
        (whole, cube, 2 * 8 / (64 + 8), math.inf, 1.0),
        (cube, whole, 2 * 8 / (64 + 8), math.inf, 1.0),
    ]
    pred = torch.from_numpy(np.stack([c[0] for c in cases]))[:, None]
    label = torch.from_numpy(np.stack([c[1] for c in cases]))[:, None]
    dsc, hd95, normhd = case_scores(pred, label)
    assert dsc.tolist() == [c[2] for c in cases]
    assert hd95.tolist() == [c[3] for c in cases]
    assert normhd.tolist() == [c[4] for c in cases]
    for p, y, d, h, n in cases:
        assert _challenge_case(y, p) == (d, h, n)
    # MONAI judges emptiness on the masks: whole vs empty is inf there, whole vs whole 0
    _, hd_m, normhd_m = case_scores(pred, label, hd_method="monai")
    assert hd_m[:5].tolist() == [0.0, 0.0, math.inf, math.inf, math.inf]
    assert math.isfinite(hd_m[5].item()) and math.isfinite(hd_m[6].item())


def test_voxel_units_and_grid_symmetries():
    # spacing is ignored (voxel units, as the challenge), and axis order / flips do not change the value
    rng = np.random.default_rng(3)
    a = ndimage.binary_dilation(rng.random((9, 8, 7)) < 0.03, iterations=1)
    b = ndimage.binary_dilation(rng.random((9, 8, 7)) < 0.03, iterations=1)
    expected = _challenge_case(b, a)[1]
    affine = torch.diag(torch.tensor([0.7, 0.7, 2.5, 1.0], dtype=torch.float64))
    mt = case_scores(MetaTensor(torch.from_numpy(a), affine=affine), MetaTensor(torch.from_numpy(b), affine=affine))
    assert mt[1].item() == expected
    assert case_scores(a.transpose(2, 0, 1), b.transpose(2, 0, 1))[1].item() == expected
    assert case_scores(a[::-1, :, ::-1].copy(), b[::-1, :, ::-1].copy())[1].item() == expected


# ----------------------------------------------------------------------------------------------------
# the "monai" option: the values before the option existed
# ----------------------------------------------------------------------------------------------------


def test_monai_option_reproduces_the_previous_values():
    # previous case_scores: MONAI's compute_hausdorff_distance(percentile=95) on cases with both masks
    # non-empty, inf for exactly one empty mask, 0 for both; DSC from MONAI's compute_dice (float32)
    from monai.metrics import compute_dice

    pairs = [(a, b) for a, b in PAIRS if a.shape == (1, 12, 15)]
    label = torch.from_numpy(np.stack([a for a, _ in pairs])).float()[:, None]
    pred = torch.from_numpy(np.stack([b for _, b in pairs])).float()[:, None]
    dsc, hd95, normhd = case_scores(pred, label, hd_method="monai")
    for i in range(len(pairs)):
        p_any, y_any = bool(pred[i].any()), bool(label[i].any())
        if p_any and y_any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                old = compute_hausdorff_distance(pred[i:i + 1], label[i:i + 1], include_background=True,
                                                 percentile=95)[0, 0].item()
            old_dsc = compute_dice(pred[i:i + 1], label[i:i + 1], include_background=True)[0, 0].item()
        else:
            old = 0.0 if not (p_any or y_any) else math.inf
            old_dsc = 0.0
        assert hd95[i].item() == old  # MONAI's float32 value, exactly
        assert normhd[i].item() == (1.0 if math.isinf(old) else min(old / 150.0, 1.0))
        assert dsc[i].item() == pytest.approx(old_dsc, abs=1e-6)  # now from counts in float64


def test_metric_class_passes_hd_method():
    whole = torch.ones(1, 1, 3, 3)
    centre = torch.zeros(1, 1, 3, 3)
    centre[0, 0, 1, 1] = 1
    sens = {"age_group": [0], "menopausal_status": [0], "breast_density": [0]}
    rows = ChallengeScoreMetric(tuple(sens))(whole, centre, sensitive=sens)
    assert rows[0, 1].item() == 1.0  # challenge: whole image has no contour -> NormHD 1
    rows = ChallengeScoreMetric(tuple(sens), hd_method="monai")(whole, centre, sensitive=sens)
    assert rows[0, 1].item() == pytest.approx(math.sqrt(2) / 150)


@pytest.mark.parametrize("bad", ["MONAI", "sitk", None, 1])
def test_ill_hd_method(bad):
    assert HD_METHODS == ("challenge", "monai")
    msg = f"hd_method must be one of ('challenge', 'monai'), got {bad!r}."
    with pytest.raises(ValueError) as e:
        case_scores(torch.zeros(3, 3), torch.zeros(3, 3), hd_method=bad)
    assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        ChallengeScoreMetric(("age_group",), hd_method=bad)
    assert str(e.value) == msg
