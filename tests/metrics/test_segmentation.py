"""MAMA-MIA challenge scores: per-case DSC / HD95 / NormHD and the cohort PS, D_v, FS, TS.

Expected values are computed by hand the way the public scoring script (LidiaGarrucho/MAMA-MIA,
src/challenge/metrics.py and scoring_task1.py) does; the computation is written next to each case.
"""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from fairmonai.data.sensitive import attribute_groups
from fairmonai.metrics._segmentation import ChallengeScoreMetric, ChallengeScores, case_scores, challenge_scores

#: the challenge's variables and groups in code order, as a caller reads them from the schema
GROUPS = attribute_groups("mama_mia")


def _point(shape, *idx):
    m = torch.zeros(shape)
    m[idx] = 1
    return m


# ----------------------------------------------------------------------------------------------------
# per case
# ----------------------------------------------------------------------------------------------------

def _plate(z):
    # a one-voxel-thick 4x4 plate at depth z inside a 10x10x12 grid (never touching the border)
    m = torch.zeros(10, 10, 12)
    m[3:7, 3:7, z] = 1
    return m


CASES = [
    # identical cubes: TP = 27, FP = FN = 0 -> DSC 1; every surface voxel on the other surface -> HD95 0
    ("same cube", lambda: (torch.ones(3, 3, 3), torch.ones(3, 3, 3)), 1.0, 0.0),
    # plates one voxel thick, k = 3 apart along z: no overlap -> DSC 0; every voxel is surface and its
    # nearest surface voxel of the other plate is straight across at distance 3 -> HD95 = 3
    ("plate shifted by 3", lambda: (_plate(7), _plate(4)), 0.0, 3.0),
    # plates 1 apart -> same reasoning, HD95 = 1, DSC 0
    ("plate shifted by 1", lambda: (_plate(5), _plate(4)), 0.0, 1.0),
    # 2D: label = one pixel (5,5); pred = pixels (5,5),(5,6),(5,7). TP 1, FP 2, FN 0 -> DSC 2/(2+2) = 0.5.
    # pred->label distances 0, 1, 2: 95th percentile with linear interpolation at rank 0.95*2 = 1.9 -> 1.9;
    # label->pred distances [0] -> 0. HD95 = max(1.9, 0) = 1.9.
    ("segment vs pixel", lambda: (_seg_2d(), _point((12, 12), 5, 5)), 0.5, 1.9),
    # 3D single voxels 4 apart along one axis: DSC 0, HD95 4
    ("voxels 4 apart", lambda: (_point((6, 6, 10), 2, 2, 2), _point((6, 6, 10), 2, 2, 6)), 0.0, 4.0),
]


def _seg_2d():
    m = torch.zeros(12, 12)
    m[5, 5:8] = 1
    return m


@pytest.mark.parametrize("name,make,dsc_expected,hd_expected", CASES, ids=[c[0] for c in CASES])
def test_case_scores_hand_values(name, make, dsc_expected, hd_expected):
    pred, label = make()
    dsc, hd95, normhd = case_scores(pred, label)
    assert dsc.shape == () and hd95.shape == () and normhd.shape == ()
    assert dsc.item() == pytest.approx(dsc_expected, abs=1e-6)
    assert hd95.item() == pytest.approx(hd_expected, abs=1e-5)
    assert normhd.item() == pytest.approx(hd_expected / 150, abs=1e-7)


def test_case_scores_batch_matches_single_and_accepts_numpy():
    preds = [c[1]()[0] for c in CASES[1:3]]
    labels = [c[1]()[1] for c in CASES[1:3]]
    dsc, hd95, normhd = case_scores(torch.stack(preds)[:, None], np.stack([x.numpy() for x in labels])[:, None])
    assert dsc.shape == (2,)
    assert hd95.tolist() == pytest.approx([3.0, 1.0])
    assert normhd.tolist() == pytest.approx([3.0 / 150, 1.0 / 150])


def test_empty_masks_follow_the_challenge():
    gt = _point((8, 8, 8), 3, 3, 3)
    empty = torch.zeros(8, 8, 8)
    pred = torch.stack([empty, gt, empty])[:, None]
    label = torch.stack([gt, empty, empty])[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI "all 0" warning: empty cases never reach MONAI
        dsc, hd95, normhd = case_scores(pred, label)
        assert [x.tolist() for x in case_scores(pred, label, hd_method="monai")] == [
            dsc.tolist(), hd95.tolist(), normhd.tolist()]
    # empty prediction: DSC 0, HD inf -> NormHD 1; empty ground truth: the same;
    # both empty: challenge DSC := 0 (TP+FP+FN = 0), HD 0 -> NormHD 0
    assert dsc.tolist() == [0.0, 0.0, 0.0]
    assert hd95[:2].tolist() == [math.inf, math.inf] and hd95[2].item() == 0.0
    assert normhd.tolist() == [1.0, 1.0, 0.0]


def test_normhd_clip_at_150():
    # single voxels 200 apart: HD95 = 200 -> 200/150 = 1.333 unclipped, clipped to 1
    pred, label = _point((3, 3, 206), 1, 1, 2), _point((3, 3, 206), 1, 1, 202)
    dsc, hd95, normhd = case_scores(pred, label)
    assert hd95.item() == pytest.approx(200.0)
    assert normhd.item() == 1.0
    _, _, raw = case_scores(pred, label, clip_normhd=False)
    assert raw.item() == pytest.approx(200.0 / 150)
    # 75 apart -> 0.5, clip or not
    _, hd, nh = case_scores(_point((3, 3, 100), 1, 1, 2), _point((3, 3, 100), 1, 1, 77))
    assert hd.item() == pytest.approx(75.0) and nh.item() == pytest.approx(0.5)
    _, _, nh = case_scores(_point((3, 3, 100), 1, 1, 2), _point((3, 3, 100), 1, 1, 77), hd_max=25.0)
    assert nh.item() == 1.0


def _challenge_hd95(a, b):
    """The challenge's HD95 definition: SimpleITK contours, nearest-contour distances, numpy percentile."""
    sitk = pytest.importorskip("SimpleITK")
    from scipy.spatial import cKDTree

    pa = np.argwhere(sitk.GetArrayFromImage(sitk.LabelContour(sitk.GetImageFromArray(a.astype(np.uint8)))) > 0)
    pb = np.argwhere(sitk.GetArrayFromImage(sitk.LabelContour(sitk.GetImageFromArray(b.astype(np.uint8)))) > 0)
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    return max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))


def test_hd95_equals_the_challenge_definition_on_random_masks():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for shape in [(18, 18), (10, 12, 9)]:
        for _ in range(4):
            a = ndimage.binary_dilation(rng.random(shape) > 0.96, iterations=2)
            b = ndimage.binary_dilation(rng.random(shape) > 0.96, iterations=2)
            a[0], b[0] = True, True  # never empty
            # MONAI's edges differ from the challenge's contours only at the image border: keep the
            # masks off it to compare both methods (tests/metrics/test_segmentation_hd95.py has the rest)
            a, b = np.pad(a, 1), np.pad(b, 1)
            dsc, hd95, _ = case_scores(a, b)
            assert hd95.item() == _challenge_hd95(a, b)  # the default is the challenge's, exactly
            _, hd95_monai, _ = case_scores(a, b, hd_method="monai")
            assert hd95_monai.item() == pytest.approx(_challenge_hd95(a, b), abs=1e-4)  # MONAI in float32
            tp, fp, fn = (a & b).sum(), (a & ~b).sum(), (~a & b).sum()
            assert dsc.item() == 2 * tp / (2 * tp + fp + fn)


@pytest.mark.parametrize(
    "pred,label,err,msg",
    [
        (torch.zeros(4, 4), torch.zeros(4, 5), ValueError,
         "pred and label must have the same shape, got (4, 4) and (4, 5)."),
        (torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4), ValueError,
         "pred must be HW, HWD (one case) or B1HW, B1HWD (a batch), got shape (2, 2, 4, 4); "
         "add a batch dimension to a channel-first case (pred[None])."),
        (torch.zeros(4), torch.zeros(4), ValueError,
         "pred must be HW, HWD (one case) or B1HW, B1HWD (a batch), got shape (4,); "
         "add a batch dimension to a channel-first case (pred[None])."),
        (torch.full((4, 4), 0.5), torch.zeros(4, 4), ValueError,
         "pred must be binary (values 0 and 1 only), found 0.5."),
        (torch.zeros(4, 4), torch.full((4, 4), 2.0), ValueError,
         "label must be binary (values 0 and 1 only), found 2.0."),
    ],
)
def test_case_scores_ill_inputs(pred, label, err, msg):
    with pytest.raises(err) as e:
        case_scores(pred, label)
    assert str(e.value) == msg


@pytest.mark.parametrize("hd_max", [0, -1.0, math.inf, "150", True])
def test_case_scores_ill_hd_max(hd_max):
    with pytest.raises(ValueError) as e:
        case_scores(torch.zeros(3, 3), torch.zeros(3, 3), hd_max=hd_max)
    assert str(e.value) == f"hd_max must be a positive number, got {hd_max!r}."


# ----------------------------------------------------------------------------------------------------
# cohort scores
# ----------------------------------------------------------------------------------------------------

# Seven cases; codes as the manifest writes them (-1 = excluded).
#   case  DSC  NormHD  age_group  menopausal_status  breast_density
#   0     0.9  0.1     0 (0-40)   0 (pre)            0 (a)
#   1     0.7  0.3     0          1 (post)           1 (b)
#   2     0.8  0.2     1 (41-50)  1                  -1
#   3     0.5  0.5     1          2 (unknown)        1
#   4     0.6  0.2     2 (51-60)  0                  0
#   5     0.4  0.6     -1         1                  -1
#   6     1.0  0.0     2          2                  1
DSC = [0.9, 0.7, 0.8, 0.5, 0.6, 0.4, 1.0]
NHD = [0.1, 0.3, 0.2, 0.5, 0.2, 0.6, 0.0]
FEATS = {
    "age_group": [0, 0, 1, 1, 2, -1, 2],
    "menopausal_status": [0, 1, 1, 2, 0, 1, 2],
    "breast_density": [0, 1, -1, 1, 0, -1, 1],
}
# Hand computation:
#   PS: mean DSC = 4.9/7 = 0.7, mean NormHD = 1.9/7; PS = (0.7 + 1 - 1.9/7)/2 = 5/7 = 0.714286
#   age: 0-40 {0,1}: DSC 0.8, NHD 0.2; 41-50 {2,3}: 0.65, 0.35; 51-60 {4,6}: 0.8, 0.1; 61-70, 71+ empty
#        (skipped); case 5 excluded. gaps 0.15 and 0.25 -> D = 0.2
#   menopause: pre {0,4}: 0.75, 0.15; post {1,2,5}: 1.9/3, 1.1/3; unknown {3,6}: 0.75, 0.25
#        gaps 0.75 - 1.9/3 = 0.35/3 and 1.1/3 - 0.15 = 0.65/3 -> D = 0.5 * 1/3 = 1/6
#   density: a {0,4}: 0.75, 0.15; b {1,3,6}: 2.2/3, 0.8/3; c, d empty; cases 2 and 5 excluded
#        gaps 0.75 - 2.2/3 = 0.05/3 and 0.8/3 - 0.15 = 0.35/3 -> D = 0.5 * 0.4/3 = 1/15
#   FS = ((1 - 0.2) + (1 - 1/6) + (1 - 1/15)) / 3 = (0.8 + 5/6 + 14/15) / 3 = 77/90 = 0.855556
#   TS = 0.5 * 5/7 + 0.5 * 77/90 = 0.784921
PS, FS = 5 / 7, 77 / 90


def test_challenge_scores_hand_table():
    s = challenge_scores(DSC, NHD, sensitive_features=FEATS, group_names=GROUPS)
    assert isinstance(s, ChallengeScores)
    assert s.n_cases == 7
    assert s.mean_dsc == pytest.approx(0.7) and s.mean_normhd == pytest.approx(1.9 / 7)
    assert s.performance_score == pytest.approx(PS)
    assert s.fairness_score == pytest.approx(FS)
    assert s.total_score == pytest.approx(0.5 * PS + 0.5 * FS)

    age = s.variables["age_group"]
    assert age.groups == ("0-40", "41-50", "51-60", "61-70", "71+")
    assert age.counts == (2, 2, 2, 0, 0) and age.n_excluded == 1
    assert age.mean_dsc[:3] == pytest.approx((0.8, 0.65, 0.8))
    assert age.mean_normhd[:3] == pytest.approx((0.2, 0.35, 0.1))
    assert math.isnan(age.mean_dsc[3]) and math.isnan(age.mean_normhd[4])
    assert (age.dsc_gap, age.normhd_gap, age.disparity) == pytest.approx((0.15, 0.25, 0.2))
    meno = s.variables["menopausal_status"]
    assert meno.counts == (2, 3, 2) and meno.n_excluded == 0
    assert meno.disparity == pytest.approx(1 / 6) and meno.fairness == pytest.approx(5 / 6)
    dens = s.variables["breast_density"]
    assert dens.counts == (2, 3, 0, 0) and dens.n_excluded == 2
    assert (dens.dsc_gap, dens.normhd_gap, dens.disparity) == pytest.approx((0.05 / 3, 0.35 / 3, 1 / 15))


def test_challenge_scores_ts_weight_and_values_input():
    # the same table as strings, excluded = None / NaN; "unknown" is a real group (menopause)
    names = {k: GROUPS[k] for k in FEATS}
    as_values = {k: [names[k][c] if c >= 0 else (None if k == "age_group" else float("nan")) for c in v]
                 for k, v in FEATS.items()}
    s = challenge_scores(DSC, NHD, sensitive_features=as_values, ts_weight=0.8, group_names=names)
    assert s.fairness_score == pytest.approx(FS)
    assert s.total_score == pytest.approx(0.8 * PS + 0.2 * FS)
    # without group_names: only observed groups, sorted
    s2 = challenge_scores(DSC, NHD, sensitive_features=as_values)
    assert s2.variables["menopausal_status"].groups == ("post", "pre", "unknown")
    assert s2.variables["age_group"].groups == ("0-40", "41-50", "51-60")
    assert s2.fairness_score == pytest.approx(FS)
    # codes without names: observed codes as names
    s3 = challenge_scores(np.array(DSC)[:, None], torch.tensor(NHD), sensitive_features=FEATS)
    assert s3.variables["breast_density"].groups == ("0", "1")
    assert s3.fairness_score == pytest.approx(FS)
    # pandas categorical: its categories name the groups
    cat = pd.Series(pd.Categorical(as_values["breast_density"], categories=list("abcd")))
    s4 = challenge_scores(DSC, NHD, sensitive_features={"breast_density": cat})
    assert s4.variables["breast_density"].counts == (2, 3, 0, 0)


def test_challenge_scores_serialises():
    import json

    s = challenge_scores(DSC, NHD, sensitive_features=FEATS, group_names=GROUPS)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["variables"]["age_group"]["mean_dsc"][3] is None
    assert d["fairness_score"] == pytest.approx(FS)
    frame = s.to_frame()
    assert list(frame.columns) == ["variable", "group", "count", "mean_dsc", "mean_normhd"]
    assert len(frame) == 5 + 3 + 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_groups_have_no_disparity(seed):
    # property: every group holds the same multiset of per-case values -> all group means equal,
    # every D_v = 0 and FS = 1, whatever the values
    rng = np.random.default_rng(seed)
    base_dsc, base_hd = rng.random(4), rng.random(4)
    n_groups = 3
    dsc = np.tile(base_dsc, n_groups)
    hd = np.tile(base_hd, n_groups)
    # "a": one block of four cases per group; "b": blocks {0, 1} and {2}, so group sizes differ;
    # "c": one block excluded, the other two are the groups
    feats = {"a": np.repeat(np.arange(n_groups), 4), "b": np.repeat([0, 0, 1], 4), "c": np.repeat([-1, 0, 1], 4)}
    s = challenge_scores(dsc, hd, sensitive_features=feats)
    for v in s.variables.values():
        assert v.disparity == pytest.approx(0.0, abs=1e-12)
    assert s.fairness_score == pytest.approx(1.0)


def test_single_group_variable_warns_and_has_zero_disparity():
    with pytest.warns(UserWarning, match=r"sensitive feature 'breast_density' has 1 non-empty group\(s\) \(\['a'\]\)"):
        s = challenge_scores([0.2, 0.9, 0.5], [0.1, 0.2, 0.3],
                             sensitive_features={"breast_density": [0, -1, -1], "age_group": [0, 1, 1]},
                             group_names=GROUPS)
    assert s.variables["breast_density"].disparity == 0.0
    # FS = ((1 - 0) + (1 - 0.5 * (|0.2 - 0.7| + |0.1 - 0.25|))) / 2 = (1 + 0.675) / 2
    assert s.fairness_score == pytest.approx((1 + 1 - 0.5 * (0.5 + 0.15)) / 2)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"ts_weight": 1.5}, "ts_weight must be a number in [0, 1], got 1.5."),
        ({"ts_weight": "0.5"}, "ts_weight must be a number in [0, 1], got '0.5'."),
        ({"sensitive_features": {}}, "sensitive_features must name at least one variable."),
        ({"dsc": [0.1, float("nan")], "normhd": [0.1, 0.2]}, "dsc has non-finite values at case index 1."),
        ({"dsc": [0.1, 0.2], "normhd": [0.1, math.inf]}, "normhd has non-finite values at case index 1."),
        ({"dsc": [0.1], "normhd": [0.1, 0.2]}, "dsc has 1 cases and normhd 2: they must be equal."),
        ({"dsc": [], "normhd": []}, "no cases to score (dsc is empty)."),
        ({"dsc": [[0.1, 0.2]], "normhd": [0.1]}, "dsc must be a 1-D array of per-case values, got shape (1, 2)."),
        ({"sensitive_features": {"age_group": [0]}}, "sensitive feature 'age_group' has 1 values for 2 cases."),
        ({"sensitive_features": {"age_group": [0, 7]}, "group_names": GROUPS},
         "sensitive feature 'age_group': code 7 at case index 1 is not a group code (0..4) nor the excluded code -1."),
        ({"sensitive_features": {"breast_density": ["a", "e"]}, "group_names": GROUPS},
         "sensitive feature 'breast_density': value 'e' at case index 1 is not one of ['a', 'b', 'c', 'd']."),
    ],
)
def test_challenge_scores_ill_inputs(kwargs, msg):
    args = {"dsc": [0.5, 0.6], "normhd": [0.1, 0.2], "sensitive_features": {"age_group": [0, 1]}, **kwargs}
    dsc, normhd = args.pop("dsc"), args.pop("normhd")
    with pytest.raises(ValueError) as e:
        challenge_scores(dsc, normhd, **args)
    assert str(e.value) == msg


def test_sensitive_features_is_keyword_only():
    with pytest.raises(TypeError):
        challenge_scores(DSC, NHD, FEATS)  # noqa


# ----------------------------------------------------------------------------------------------------
# cumulative metric
# ----------------------------------------------------------------------------------------------------

def test_metric_buffers_cases_and_matches_functional():
    metric = ChallengeScoreMetric(sensitive_keys=("age_group", "breast_density"), group_names=GROUPS)
    p1, l1 = CASES[1][1]()
    p2, l2 = CASES[2][1]()
    # batch of two (B1HWD), then one case of another size given as a list of channel-first tensors
    metric(torch.stack([p1, p2])[:, None], torch.stack([l1, l2])[:, None],
           sensitive={"age_group": torch.tensor([0, 1]), "breast_density": torch.tensor([2, -1])})
    pe, le = CASES[4][1]()
    metric([pe[None]], [le[None]], sensitive={"age_group": [1], "breast_density": [3]})
    s = metric.aggregate()
    # per case (DSC, NormHD): (0, 3/150), (0, 1/150), (0, 4/150); age 0-40 {0}, 41-50 {1, 2}
    ref = challenge_scores([0, 0, 0], [3 / 150, 1 / 150, 4 / 150],
                           sensitive_features={"age_group": [0, 1, 1], "breast_density": [2, -1, 3]},
                           group_names=GROUPS)
    assert s.n_cases == 3
    assert s.total_score == pytest.approx(ref.total_score)
    assert s.fairness_score == pytest.approx(ref.fairness_score)
    assert s.variables["age_group"].normhd_gap == pytest.approx(3 / 150 - 2.5 / 150)
    metric.reset()
    with pytest.raises(ValueError, match=r"no cases to score"):
        metric.aggregate()


def test_metric_ill_options():
    with pytest.raises(TypeError):
        ChallengeScoreMetric()  # the variables come from the caller (the schema), never a default
    with pytest.raises(ValueError) as e:
        ChallengeScoreMetric(tuple(GROUPS), ts_weight=-0.1)
    assert str(e.value) == "ts_weight must be a number in [0, 1], got -0.1."
    metric = ChallengeScoreMetric(tuple(GROUPS), group_names=GROUPS)
    with pytest.raises(ValueError) as e:
        metric(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), sensitive={"age_group": [0]})
    assert str(e.value) == (
        "sensitive must hold exactly the keys ['age_group', 'menopausal_status', 'breast_density'], got ['age_group']."
    )


def test_normhd_reaches_1_at_150_voxels_and_for_an_empty_prediction():
    # the challenge: NormHD = HD95 / 150 (voxels), an empty prediction of a tumour has HD95 inf -> NormHD 1
    shape = (3, 3, 160)
    label = _point(shape, 1, 1, 2)
    for z, hd_expected, normhd_expected in [(152, 150.0, 1.0), (149, 147.0, 0.98)]:
        _, hd95, normhd = case_scores(_point(shape, 1, 1, z), label, clip_normhd=False)
        assert hd95.item() == hd_expected and normhd.item() == pytest.approx(normhd_expected, abs=1e-15)
    # one perfect case and one empty prediction: mean DSC (1 + 0)/2, mean NormHD (0 + 1)/2,
    # PS = (0.5 + 1 - 0.5)/2 = 0.5
    metric = ChallengeScoreMetric(("age_group",), group_names=GROUPS)
    metric(torch.stack([label, torch.zeros(shape)])[:, None], torch.stack([label, label])[:, None],
           sensitive={"age_group": [0, 1]})
    s = metric.aggregate()
    assert (s.mean_dsc, s.mean_normhd, s.performance_score) == (0.5, 0.5, 0.5)
