"""MaskOutsideBoxd: zero a channel-first volume outside the case's bounding box."""

import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from fairmonai.transforms import BBOX_KEYS, MaskOutsideBoxd

SHAPE = (2, 5, 6, 7)


def _case(box, case_id="case_1", x=None):
    d = {"case_id": case_id, "pred": torch.arange(1, 1 + np.prod(SHAPE), dtype=torch.float32).reshape(SHAPE)
         if x is None else x}
    d.update(dict(zip(BBOX_KEYS, box)))
    return d


def _by_hand(x, lo, hi):
    """Zero outside [lo, hi) with explicit loops over every voxel."""
    want = np.array(x, copy=True)
    for c in range(want.shape[0]):
        for i in range(want.shape[1]):
            for j in range(want.shape[2]):
                for k in range(want.shape[3]):
                    inside = all(lo[a] <= v < hi[a] for a, v in enumerate((i, j, k)))
                    if not inside:
                        want[c, i, j, k] = 0
    return want


@pytest.mark.parametrize(
    "box, lo, hi",
    [
        ((1, 3, 2, 5, 0, 7), (1, 2, 0), (3, 5, 7)),  # inside
        ((0, 5, 0, 6, 0, 7), (0, 0, 0), (5, 6, 7)),  # the whole array
        ((-2, 2, 4, 99, 6, 7), (0, 4, 6), (2, 6, 7)),  # clipped at both ends; one slice along z
        (("1", "4", "0.0", "3", " 2 ", "5.0"), (1, 0, 2), (4, 3, 5)),  # strings (manifest cells)
        ((1.0, 4.0, np.int64(0), np.float32(3), 2, 5), (1, 0, 2), (4, 3, 5)),  # integral floats, numpy
        ((torch.tensor(1), torch.tensor([4]), torch.tensor(0.0), np.array([3]), np.array(2), 5),
         (1, 0, 2), (4, 3, 5)),  # 0-d / one-element tensors and arrays (a decollated batch)
    ],
)
def test_mask_equals_hand_computation(box, lo, hi):
    d = _case(box)
    x = d["pred"].clone()
    out = MaskOutsideBoxd("pred")(d)
    np.testing.assert_array_equal(out["pred"].numpy(), _by_hand(x.numpy(), lo, hi))
    torch.testing.assert_close(d["pred"], x)  # the input is not modified
    assert out["bbox_x_min"] is d["bbox_x_min"] and out["case_id"] == "case_1"


def test_small_box_by_value():
    x = torch.ones(1, 3, 3, 3)
    out = MaskOutsideBoxd("pred")(_case((1, 2, 0, 2, 2, 3), x=x))["pred"]
    want = torch.zeros(1, 3, 3, 3)
    want[0, 1, 0, 2] = want[0, 1, 1, 2] = 1  # x = 1, y in {0, 1}, z = 2
    torch.testing.assert_close(out, want)


def test_box_axes_reversed_for_simpleitk_order():
    x = torch.ones(1, 4, 5, 6)
    # box given in SimpleITK array order: "x" bounds array axis 2, "z" axis 0
    out = MaskOutsideBoxd("pred", box_axes=(2, 1, 0))(_case((1, 3, 0, 5, 2, 4), x=x))["pred"]
    np.testing.assert_array_equal(out.numpy(), _by_hand(x.numpy(), (2, 0, 1), (4, 5, 3)))


def test_several_keys_numpy_and_dtypes():
    pred = np.ones((1, 4, 4, 4), dtype=np.uint8)
    prob = torch.ones(2, 4, 4, 4, dtype=torch.bool)
    d = {"pred": pred, "prob": prob, **dict(zip(BBOX_KEYS, (0, 2, 0, 4, 0, 4)))}
    out = MaskOutsideBoxd(["pred", "prob"])(d)
    assert isinstance(out["pred"], np.ndarray) and out["pred"].dtype == np.uint8
    assert out["prob"].dtype == torch.bool
    assert int(out["pred"].sum()) == 2 * 4 * 4 and int(out["prob"].sum()) == 2 * 2 * 4 * 4
    assert int(pred.sum()) == 64  # not modified


def test_metatensor_metadata_survives():
    affine = torch.diag(torch.tensor([0.7, 0.7, 1.5, 1.0], dtype=torch.float64))
    x = MetaTensor(torch.ones(1, 4, 5, 6), affine=affine, meta={"filename_or_obj": "/data/case_1.nii.gz"})
    out = Compose([MaskOutsideBoxd("pred")])(_case((1, 3, 1, 4, 0, 6), x=x))["pred"]
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "/data/case_1.nii.gz"
    torch.testing.assert_close(out.affine, affine)
    assert float(out.sum()) == 2 * 3 * 6 and float(x.sum()) == 120


@pytest.mark.parametrize(
    "box, clipped",
    [
        ((3, 3, 0, 6, 0, 7), "[3:3, 0:6, 0:7]"),  # min == max
        ((4, 2, 0, 6, 0, 7), "[4:2, 0:6, 0:7]"),  # min > max
        ((5, 9, 0, 6, 0, 7), "[5:5, 0:6, 0:7]"),  # beyond the array
        ((0, 5, -4, -1, 0, 7), "[0:5, 0:0, 0:7]"),  # before the array
    ],
)
def test_empty_box_raises(box, clipped):
    with pytest.raises(ValueError) as e:
        MaskOutsideBoxd("pred")(_case(box, case_id="DUKE_007"))
    named = dict(zip(BBOX_KEYS, box))
    assert str(e.value) == (
        f"MaskOutsideBoxd: the box of case 'DUKE_007' {named} leaves no voxel of 'pred' with shape {SHAPE} "
        f"(min inclusive, max exclusive, clipped to the array: {clipped})."
    )


@pytest.mark.parametrize(
    "value, msg",
    [
        (1.5, "MaskOutsideBoxd: case 'c9': 'bbox_y_max' must be an integer voxel index, got 1.5."),
        ("2.5", "MaskOutsideBoxd: case 'c9': 'bbox_y_max' must be an integer voxel index, got '2.5'."),
        ("inf", "MaskOutsideBoxd: case 'c9': 'bbox_y_max' must be an integer voxel index, got 'inf'."),
        ("abc", "MaskOutsideBoxd: case 'c9': 'bbox_y_max' must be a number, got 'abc'."),
        (True, "MaskOutsideBoxd: case 'c9': 'bbox_y_max' must be a number, got True."),
        (torch.tensor([1, 2]), "MaskOutsideBoxd: case 'c9': 'bbox_y_max' must be a number, got tensor([1, 2])."),
    ],
)
def test_bad_values_raise(value, msg):
    box = [0, 5, 0, value, 0, 7]
    with pytest.raises(ValueError) as e:
        MaskOutsideBoxd("pred")(_case(box, case_id="c9"))
    assert str(e.value) == msg


def test_wrong_shape_and_bad_options():
    d = _case((0, 2, 0, 2, 0, 2), x=torch.ones(4, 4, 4))
    with pytest.raises(ValueError) as e:
        MaskOutsideBoxd("pred")(d)
    assert str(e.value) == (
        "MaskOutsideBoxd: 'pred' of case 'case_1' must be channel-first (C, X, Y, Z), got shape (4, 4, 4).")
    with pytest.raises(ValueError, match=r"box_keys must name 6 keys .*got \('a', 'b'\)"):
        MaskOutsideBoxd("pred", box_keys=("a", "b"))
    with pytest.raises(ValueError, match=r"box_axes must be a permutation of \(0, 1, 2\), got \(0, 0, 1\)"):
        MaskOutsideBoxd("pred", box_axes=(0, 0, 1))


@pytest.mark.parametrize("missing", [None, float("nan"), "", "nan", np.nan, "absent"])
def test_missing_box_raises_by_default(missing):
    d = _case((0, 2, 0, 2, 0, 2))
    if missing == "absent":
        del d["bbox_z_min"]
        shown = None
    else:
        d["bbox_z_min"] = missing
        shown = missing
    with pytest.raises(ValueError) as e:
        MaskOutsideBoxd("pred")(d)
    assert str(e.value) == (
        f"MaskOutsideBoxd: case 'case_1' has no value for 'bbox_z_min' (got {shown!r}); pass "
        "allow_missing_box=True to leave such cases unmasked."
    )


def test_missing_box_allowed_leaves_case_and_warns_once(caplog):
    t = MaskOutsideBoxd("pred", allow_missing_box=True)
    d = _case((0, 2, "", 2, 0, 2), case_id="DUKE_042")
    with caplog.at_level(logging.WARNING, logger="fairmonai.transforms.MaskOutsideBoxd"):
        first = t(d)
        second = t(_case((0, 2, None, 2, 0, 2), case_id="DUKE_042"))
        other = t(_case((0, 2, 0, 2, float("nan"), 2), case_id="DUKE_043"))
    torch.testing.assert_close(first["pred"], d["pred"])
    torch.testing.assert_close(second["pred"], d["pred"])
    torch.testing.assert_close(other["pred"], d["pred"])
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == [
        "MaskOutsideBoxd: case 'DUKE_042' has no bounding box (bbox_y_min missing); its data are left unmasked.",
        "MaskOutsideBoxd: case 'DUKE_043' has no bounding box (bbox_z_min missing); its data are left unmasked.",
    ]
    # a complete box is still applied
    assert float(t(_case((0, 1, 0, 1, 0, 1), case_id="DUKE_044"))["pred"].sum()) == 1 + 211  # (c, 0, 0, 0)


def test_missing_key_allowed():
    d = _case((0, 2, 0, 2, 0, 2))
    out = MaskOutsideBoxd(["pred", "other"], allow_missing_keys=True)(d)
    assert "other" not in out and int(out["pred"].count_nonzero()) == 2 * 2 * 2 * 2


# ---- LoadCaseImaged: LoadImaged whose read errors name the case and the file

import nibabel as nib  # noqa: E402
from monai.transforms import LoadImaged  # noqa: E402

from fairmonai.data import ImageReadError  # noqa: E402
from fairmonai.errors import find_input_error, input_error_line  # noqa: E402
from fairmonai.transforms import LoadCaseImaged  # noqa: E402


def _nii(path, shape=(6, 5, 4)):
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), np.eye(4)), path)
    return str(path)


def test_load_case_imaged_loads_as_load_imaged(tmp_path):
    phases = [_nii(tmp_path / f"p{i}.nii.gz") for i in range(3)]
    d = {"case_id": "c1", "image": phases, "label": _nii(tmp_path / "m.nii.gz")}
    kwargs = {"image_only": True, "ensure_channel_first": True}
    got = LoadCaseImaged(["image", "label"], **kwargs)(d)
    want = LoadImaged(["image", "label"], **kwargs)(d)
    for k in ("image", "label"):
        torch.testing.assert_close(got[k].as_tensor(), want[k].as_tensor())
    assert tuple(got["image"].shape) == (3, 6, 5, 4)


def test_load_case_imaged_names_the_truncated_file(tmp_path):
    good, bad = _nii(tmp_path / "a.nii.gz", (16, 16, 16)), _nii(tmp_path / "b.nii.gz", (16, 16, 16))
    data = open(bad, "rb").read()  # the header ends in the first half: the data are cut
    open(bad, "wb").write(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        LoadCaseImaged("image", image_only=True)({"case_id": "c9", "image": [good, bad]})
    assert str(e.value) == (f"case 'c9', image {bad}: cannot read the image "
                            "(EOFError: Compressed file ended before the end-of-stream marker was reached)")
    assert (e.value.case_id, e.value.key, e.value.file) == ("c9", "image", bad)
    assert isinstance(e.value.__cause__, EOFError)


def test_load_case_imaged_names_random_bytes(tmp_path):
    bad = tmp_path / "r.nii.gz"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ImageReadError) as e:
        LoadCaseImaged("image")({"case_id": "c2", "image": str(bad)})
    assert str(e.value).startswith(f"case 'c2', image {bad}: cannot read the image (")
    assert "<file>" in str(e.value) and str(bad) not in str(e.value).split(": ", 1)[1]


def test_load_case_imaged_names_the_phase_that_does_not_stack(tmp_path):
    phases = [_nii(tmp_path / "pre.nii.gz"), _nii(tmp_path / "post1.nii.gz", (6, 5)), _nii(tmp_path / "post2.nii.gz")]
    with pytest.raises(ImageReadError) as e:
        LoadCaseImaged("image", image_only=True, ensure_channel_first=True)({"case_id": "c3", "image": phases})
    msg = str(e.value)
    assert msg.startswith(f"case 'c3', image {phases[1]}: the files of 'image' cannot be stacked into one image (")
    assert msg.endswith("their shapes: pre.nii.gz (1, 6, 5, 4), post1.nii.gz (1, 6, 5), post2.nii.gz (1, 6, 5, 4)")


def test_load_case_imaged_missing_key_and_compose(tmp_path):
    with pytest.raises(ImageReadError, match=r"^case 'c4', label: the record has no 'label' to load$"):
        LoadCaseImaged(["image", "label"])({"case_id": "c4", "image": _nii(tmp_path / "a.nii.gz")})
    # inside a Compose, MONAI wraps it in RuntimeError("applying transform ..."); the chain keeps it
    bad = tmp_path / "r.nii.gz"
    bad.write_bytes(b"0" * 100)
    with pytest.raises(RuntimeError) as e:
        Compose([LoadCaseImaged("image")])({"case_id": "c5", "image": str(bad)})
    err = find_input_error(e.value)
    assert isinstance(err, ImageReadError) and err.case_id == "c5"
    assert input_error_line(e.value) == f"ImageReadError: {err}"


def test_center_square_crop_keeps_the_central_square():
    from fairmonai.transforms import CenterSquareCropd

    x = torch.arange(2 * 3 * 6, dtype=torch.float32).reshape(2, 3, 6)
    out = CenterSquareCropd("image")({"image": x, "label": 1})
    # width 6 -> 3: starts at 6 // 2 - 3 // 2 = 2, columns 2, 3, 4
    assert torch.equal(torch.as_tensor(out["image"]), x[:, :, 2:5]) and out["label"] == 1
    tall = torch.rand(3, 7, 4)  # height 7 -> 4: starts at 7 // 2 - 4 // 2 = 1
    assert torch.equal(torch.as_tensor(CenterSquareCropd("image")({"image": tall})["image"]), tall[:, 1:5, :])
    square = torch.rand(3, 5, 5)
    assert torch.equal(torch.as_tensor(CenterSquareCropd("image")({"image": square})["image"]), square)
    with pytest.raises(ValueError, match=r"'image' must be channel-first \(C, \*spatial\), got shape \(5,\)"):
        CenterSquareCropd("image")({"image": torch.rand(5)})


def test_channel_count_checked():
    from monai.data import MetaTensor

    from fairmonai.data.image_check import ImageReadError
    from fairmonai.transforms import ChannelCountd

    ok = {"image": MetaTensor(torch.zeros(3, 4, 4)), "case_id": "a"}
    assert ChannelCountd("image", 3)(ok)["image"].shape == (3, 4, 4)
    bad = {"image": MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/x/a.png"}), "case_id": "a"}
    with pytest.raises(ImageReadError, match=r"^case 'a', image /x/a.png: 1 channels \(shape \(1, 4, 4\)\), expected 3"):
        ChannelCountd("image", 3)(bad)
    with pytest.raises(ValueError, match="channels must be an integer >= 1, got 0"):
        ChannelCountd("image", 0)
