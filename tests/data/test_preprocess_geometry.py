"""fairmonai.data.preprocess.geometry and .transforms: the FaMI rectal-MRI steps on hand-made SimpleITK images."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from fairmonai.data.preprocess import cache as C
from fairmonai.data.preprocess import geometry as G
from fairmonai.data.preprocess import transforms as T
from fairmonai.data.preprocess.io import PreprocessError
from fairmonai.data.synth.rectal_mri import write_dicom_series
from fairmonai.errors import InputError

# a rotation (about z by 30 degrees, then about x by 20): an oblique acquisition
_RZ = np.array([[np.cos(0.5236), -np.sin(0.5236), 0], [np.sin(0.5236), np.cos(0.5236), 0], [0, 0, 1]])
_RX = np.array([[1, 0, 0], [0, np.cos(0.349), -np.sin(0.349)], [0, np.sin(0.349), np.cos(0.349)]])
OBLIQUE = tuple((_RZ @ _RX).ravel())
ORIGIN = (10.0, -20.0, 30.0)


def _image(arr_zyx, spacing=(1.0, 1.0, 1.0), direction=None, origin=ORIGIN):
    img = sitk.GetImageFromArray(np.asarray(arr_zyx))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _mask(size_xyz, *blocks, like=None):
    """uint8 mask of SimpleITK size (x, y, z); each block ((x0, x1), (y0, y1), (z0, z1)), stop exclusive."""
    arr = np.zeros(size_xyz[::-1], dtype=np.uint8)
    for (x0, x1), (y0, y1), (z0, z1) in blocks:
        arr[z0:z1, y0:y1, x0:x1] = 1
    img = sitk.GetImageFromArray(arr)
    if like is not None:
        img.CopyInformation(like)
    return img


def _count(img):
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(img)))


# --- 1. resample_isotropic ------------------------------------------------------------------------


def test_resample_reproduces_a_linear_ramp_and_keeps_origin_and_oblique_direction():
    # value 2 i + 3 j + 5 k at index (i, j, k), 8 x 8 x 5 voxels of 0.75 x 0.75 x 3 mm, oblique
    k, j, i = np.meshgrid(np.arange(5), np.arange(8), np.arange(8), indexing="ij")
    img = _image((2 * i + 3 * j + 5 * k).astype(np.float32), (0.75, 0.75, 3.0), OBLIQUE)
    out, mask = G.resample_isotropic(img)
    assert mask is None
    assert out.GetSize() == (6, 6, 15)  # round(8 * 0.75), round(5 * 3)
    assert out.GetSpacing() == (1.0, 1.0, 1.0)
    assert out.GetOrigin() == ORIGIN
    np.testing.assert_allclose(out.GetDirection(), OBLIQUE, atol=1e-12)
    assert out.GetPixelID() == sitk.sitkFloat32
    got = sitk.GetArrayFromImage(out)  # (z, y, x)
    c, b, a = np.meshgrid(np.arange(15), np.arange(6), np.arange(6), indexing="ij")
    ramp = 2 * a / 0.75 + 3 * b / 0.75 + 5 * c / 3.0  # new voxel (a, b, c) = old index (a/0.75, b/0.75, c/3)
    np.testing.assert_allclose(got[:13], ramp[:13], atol=1e-4)  # old z index <= 4: exact
    # past the last old slice centre (documented): z = 13 is within the old voxel's half (linear in-plane,
    # z clamped to slice 4); z = 14 is outside the old image: nearest-neighbour extrapolation
    np.testing.assert_allclose(got[13], 2 * a[13] / 0.75 + 3 * b[13] / 0.75 + 20, atol=1e-4)
    assert got[14, 2, 1] == pytest.approx(2 * 1 + 3 * 3 + 5 * 4)  # (1, 2, 14) -> nearest old (1, 3, 4) = 31


@pytest.mark.parametrize("z, expected", [(1, 2 * 2 * 3), (0, 2 * 2 * 2), (4, 2 * 2 * 4)])
def test_resample_mask_nearest_voxel_counts(z, expected):
    # 0.5 x 0.5 x 3 mm -> 1 mm, origin kept: new x = old 2x exactly, new z c takes old slice round(c / 3)
    img = _image(np.zeros((5, 10, 10), np.float32), (0.5, 0.5, 3.0), OBLIQUE)
    mask = _mask((10, 10, 5), ((2, 6), (2, 6), (z, z + 1)), like=img)  # 4 x 4 x 1 = 16 voxels, 24 mm^3
    out_img, out = G.resample_isotropic(img, mask)
    assert out.GetSize() == out_img.GetSize() == (5, 5, 15)
    assert out.GetPixelID() == sitk.sitkUInt8
    # x, y: old 2, 4 sampled -> 2 voxels each; z: slice 1 -> c in {2, 3, 4}; the first slice gets {0, 1}, the
    # last {12, 13, 14} plus 14 by extrapolation... i.e. 2, 3, 4 slices
    assert _count(out) == expected
    assert out.GetOrigin() == img.GetOrigin() and out.GetDirection() == img.GetDirection()


def test_resample_rejects_bad_input():
    img = _image(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"spacing must be 3 positive numbers, got \(1, 0, 1\)"):
        G.resample_isotropic(img, spacing=(1, 0, 1))
    with pytest.raises(TypeError, match="image must be a 3-D SimpleITK image, got ndarray"):
        G.resample_isotropic(np.zeros((3, 3, 3)))


# --- 2. mask_components ---------------------------------------------------------------------------


def test_components_keep_25_drop_19():
    mask = _mask((30, 10, 3), ((0, 5), (0, 5), (0, 1)), ((10, 29), (8, 9), (2, 3)))  # 25-voxel plate, 19-voxel rod
    kept, info = G.mask_components(mask)
    assert info.kept_sizes == (25,) and info.dropped_sizes == (19,)
    assert (info.n_kept, info.n_dropped, info.connectivity, info.per_slice) == (1, 1, "face", False)
    assert _count(kept) == 25
    assert sitk.GetArrayViewFromImage(kept)[0, :5, :5].all()


def test_edge_and_corner_neighbours_are_separate_under_face_connectivity():
    mask = _mask((3, 3, 3), ((0, 1), (0, 1), (0, 1)), ((1, 2), (1, 2), (0, 1)), ((2, 3), (2, 3), (1, 2)))
    _, face = G.mask_components(mask, min_voxels=1)
    assert face.kept_sizes == (1, 1, 1)  # edge contact, then corner contact: three components
    _, full = G.mask_components(mask, min_voxels=1, connectivity="full")
    assert full.kept_sizes == (3,)


def test_per_slice_counting_differs_from_3d():
    # slice 0: 5 x 5 = 25 pixels; slices 1 and 2: 3 x 3 = 9 pixels each, face-connected to slice 0
    mask = _mask((8, 8, 3), ((0, 5), (0, 5), (0, 1)), ((1, 4), (1, 4), (1, 3)))
    kept3, info3 = G.mask_components(mask)
    assert info3.kept_sizes == (43,) and _count(kept3) == 43
    kept2, info2 = G.mask_components(mask, per_slice=True)
    assert info2.kept_sizes == (25,) and info2.dropped_sizes == (9, 9) and info2.per_slice
    assert _count(kept2) == 25 and sitk.GetArrayViewFromImage(kept2)[1:].sum() == 0
    assert kept2.GetSize() == mask.GetSize()


def test_no_component_left_or_empty_mask_raise_naming_the_case():
    mask = _mask((30, 10, 3), ((10, 29), (8, 9), (2, 3)), ((0, 2), (0, 2), (0, 1)))  # 19 and 4 voxels
    with pytest.raises(PreprocessError) as e:
        G.mask_components(mask, case="c7")
    assert str(e.value) == ("case 'c7': all 2 mask components have fewer than 20 voxels (3-D, face connectivity; "
                            "sizes [19, 4]): no tumour is left.")
    assert isinstance(e.value, InputError)
    with pytest.raises(PreprocessError, match=r"^case 'c8': the tumour mask is empty \(no voxel is 1\)\.$"):
        G.mask_components(_mask((4, 4, 4)), case="c8")
    with pytest.raises(ValueError, match=r"connectivity must be one of \['face', 'full'\], got 'edge'\."):
        G.mask_components(mask, connectivity="edge")


# --- 3. bounding_box ------------------------------------------------------------------------------


def test_bounding_box_union_and_largest_in_xyz():
    # a 3 x 2 x 1 block at x 2-4, y 1-2, z 0 and a 4 x 4 x 3 block at x 10-13, y 5-8, z 2-4
    mask = _mask((16, 12, 6), ((2, 5), (1, 3), (0, 1)), ((10, 14), (5, 9), (2, 5)))
    union = G.bounding_box(mask)
    assert union == G.Box((2, 1, 0), (12, 8, 5)) and union.stop == (14, 9, 5)
    assert G.bounding_box(mask, "largest") == G.Box((10, 5, 2), (4, 4, 3))
    with pytest.raises(PreprocessError, match="^case 'c1': the tumour mask is empty"):
        G.bounding_box(_mask((4, 4, 4)), case="c1")


# --- 4. crop_around, mean_box_size ----------------------------------------------------------------


def _numbered(size_xyz, spacing=(1.0, 1.0, 1.0)):
    """Image whose voxel values are 1 + their flat index (never 0)."""
    n = int(np.prod(size_xyz))
    return _image((np.arange(n, dtype=np.float32) + 1).reshape(size_xyz[::-1]), spacing, OBLIQUE)


def test_crop_at_the_low_border_pads_and_keeps_the_geometry():
    img = _numbered((20, 20, 10))
    mask = _mask((20, 20, 10), ((0, 4), (5, 9), (2, 4)), like=img)
    box = G.bounding_box(mask)
    assert box == G.Box((0, 5, 2), (4, 4, 2))
    c = G.crop_around(img, mask, box, (10, 6, 4))
    # start = box start + floor((box - crop) / 2) = (0 - 3, 5 - 1, 2 - 1)
    assert c.start == (-3, 4, 1) and c.size == (10, 6, 4)
    assert c.pad_lower == (3, 0, 0) and c.pad_upper == (0, 0, 0)
    assert c.padding_voxels == 3 * 6 * 4 == 72
    assert c.inside.shape == (4, 6, 10) and int(c.inside.sum()) == 7 * 6 * 4
    arr = sitk.GetArrayFromImage(c.image)
    assert (arr[~c.inside] == 0).all() and (arr[c.inside] > 0).all()
    src = sitk.GetArrayViewFromImage(img)
    assert arr[0, 0, 3] == src[1, 4, 0]  # crop (x, y, z) = (3, 0, 0) is source (0, 4, 1)
    np.testing.assert_allclose(c.image.TransformIndexToPhysicalPoint((0, 0, 0)),
                               img.TransformContinuousIndexToPhysicalPoint((-3.0, 4.0, 1.0)), atol=1e-9)
    assert c.image.GetDirection() == img.GetDirection()
    assert (c.mask_voxels, c.mask_voxels_inside, c.fraction_inside) == (32, 32, 1.0)


def test_crop_at_the_high_border_and_a_tumour_bigger_than_the_crop():
    img = _numbered((20, 20, 10))
    mask = _mask((20, 20, 10), ((8, 20), (2, 4), (4, 6)), like=img)  # 12 x 2 x 2 = 48 voxels at the x end
    c = G.crop_around(img, mask, G.bounding_box(mask), (8, 4, 4))
    assert c.start == (10, 1, 3)  # 8 + floor(4 / 2), 2 + floor(-2 / 2), 4 + floor(-2 / 2)
    assert c.pad_lower == (0, 0, 0) and c.pad_upper == (0, 0, 0) and c.padding_voxels == 0
    assert (c.mask_voxels, c.mask_voxels_inside) == (48, 8 * 2 * 2)
    assert c.fraction_inside == pytest.approx(2 / 3)
    c = G.crop_around(img, mask, G.Box((17, 2, 4), (3, 2, 2)), (9, 4, 4))  # start 17 - 3 = 14, stop 23
    assert c.start == (14, 1, 3) and c.pad_upper == (3, 0, 0) and c.padding_voxels == 3 * 4 * 4
    assert not c.inside[:, :, 6:].any() and c.inside[:, :, :6].all()


@pytest.mark.parametrize("box_size, crop, start", [(10, 13, 18), (10, 12, 19), (11, 13, 19), (90, 79, 25)])
def test_crop_centring_rounds_down(box_size, crop, start):
    # box from index 20; the crop starts at 20 + floor((box - crop) / 2): extra margin on the low side
    img = _numbered((120, 4, 4))
    mask = _mask((120, 4, 4), ((20, 20 + box_size), (0, 4), (0, 4)), like=img)
    assert G.crop_around(img, mask, G.bounding_box(mask), (crop, 4, 4)).start[0] == start


def test_mean_box_size_rounds_the_exact_mean_up():
    boxes = [G.Box((0, 0, 0), (3, 3, 3)), G.Box((5, 5, 5), (3, 3, 3)), ((1, 1, 1), (4, 3, 3))]
    assert G.mean_box_size(boxes) == (4, 3, 3)  # 10/3 -> 4, 9/3 = 3 exactly
    assert G.mean_box_size([((0, 0, 0), (79, 80, 40)), ((0, 0, 0), (80, 79, 41))]) == (80, 80, 41)
    with pytest.raises(ValueError, match="at least one box"):
        G.mean_box_size([])


# --- 5. zscore_inside -----------------------------------------------------------------------------


def test_zscore_over_inside_voxels_only():
    crop = np.array([[[1.0, 2.0, 3.0, 4.0, 0.0, 0.0]]], dtype=np.float32)
    inside = np.array([[[True, True, True, True, False, False]]])
    out, mean, sd = G.zscore_inside(crop, inside, return_stats=True)
    assert (mean, sd) == (2.5, pytest.approx(np.sqrt(1.25)))  # population sd
    np.testing.assert_allclose(out[0, 0, :4], [-1.3416408, -0.4472136, 0.4472136, 1.3416408], rtol=1e-6)
    assert (out[0, 0, 4:] == 0).all() and out.dtype == np.float32


def test_zscore_of_a_padded_crop_keeps_geometry():
    img = _numbered((20, 20, 10))
    mask = _mask((20, 20, 10), ((0, 4), (5, 9), (2, 4)), like=img)
    c = G.crop_around(img, mask, G.bounding_box(mask), (10, 6, 4))
    z = G.zscore_inside(c.image, c.inside)
    arr = sitk.GetArrayViewFromImage(z)
    assert arr[c.inside].mean() == pytest.approx(0, abs=1e-6) and arr[c.inside].std() == pytest.approx(1, abs=1e-5)
    assert (arr[~c.inside] == 0).all()
    assert z.GetOrigin() == c.image.GetOrigin() and z.GetDirection() == c.image.GetDirection()
    with pytest.raises(PreprocessError, match=r"^case 'c2': the image crop is constant \(3.0\) over its 2 voxels"):
        G.zscore_inside(np.array([3.0, 3.0, 0.0]), np.array([1, 1, 0]), case="c2")


# --- 6. pad_to_divisible --------------------------------------------------------------------------


def _patch_embedding(size):
    from monai.networks.blocks import PatchEmbeddingBlock

    torch.manual_seed(0)
    return PatchEmbeddingBlock(in_channels=1, img_size=size, patch_size=16, hidden_size=8, num_heads=2)


def _reached(block, shape):
    x = torch.zeros((1, 1) + shape, requires_grad=True)
    block(x).square().sum().backward()  # x = 0: the gradient is 2 * pos-embedding-shifted bias times the weights
    return x.grad[0, 0] != 0


def test_pad_to_divisible_lets_every_voxel_reach_the_vit_patch_embedding():
    crop = torch.arange(79 * 79 * 40, dtype=torch.float32).reshape(1, 79, 79, 40) + 1
    padded = G.pad_to_divisible(crop)
    assert tuple(padded.shape) == (1, 80, 80, 48)
    assert torch.equal(padded[:, :79, :79, 4:44], crop)  # symmetric: x, y 0 before / 1 after, z 4 / 4
    assert int((padded != 0).sum()) == crop.numel()  # the rest is zero padding
    assert _reached(_patch_embedding((80, 80, 48)), (80, 80, 48)).all()
    lost = ~_reached(_patch_embedding((79, 79, 40)), (79, 79, 40))  # unpadded: patches 4 x 4 x 2 -> 64 x 64 x 32
    assert int(lost.sum()) == 79 * 79 * 40 - 64 * 64 * 32 and not lost[:64, :64, :32].any()
    out = G.pad_to_divisible(np.ones((1, 79, 79, 40), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (1, 80, 80, 48)


def test_pad_to_divisible_refuses_to_crop_or_a_size_the_patch_does_not_divide():
    with pytest.raises(ValueError, match=r"spatial_size \(79, 80, 48\) is not divisible by 16 on every axis\."):
        G.pad_to_divisible(torch.zeros(1, 70, 70, 40), (79, 80, 48))
    with pytest.raises(ValueError, match=r"pads only: the input's spatial shape \(81, 70, 40\) exceeds"):
        G.pad_to_divisible(torch.zeros(1, 81, 70, 40))


# --- 7. the MONAI transforms: orientation ---------------------------------------------------------


def _lps_to_ras(p):
    return np.array([-p[0], -p[1], p[2]])


def test_ras_affine_maps_every_index_to_simpleitks_point():
    img = _numbered((5, 4, 3), (0.7, 0.8, 2.5))
    affine = G.ras_affine(img)
    for idx in [(0, 0, 0), (4, 0, 0), (1, 3, 2), (4, 3, 2)]:
        np.testing.assert_allclose((affine @ [*idx, 1])[:3], _lps_to_ras(img.TransformIndexToPhysicalPoint(idx)),
                                   atol=1e-9)


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")  # MONAI builds every reader
def test_metatensor_equals_monai_reading_the_nifti_simpleitk_writes(tmp_path):
    from monai.transforms import LoadImage

    img = _numbered((5, 4, 3), (0.7, 0.8, 2.5))
    sitk.WriteImage(img, str(tmp_path / "x.nii.gz"))
    ref = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)(str(tmp_path / "x.nii.gz"))
    mt = T.sitk_to_metatensor(img)
    assert tuple(mt.shape) == (1, 5, 4, 3) == tuple(ref.shape)
    assert torch.equal(mt.as_tensor(), ref.as_tensor())
    np.testing.assert_allclose(mt.affine.numpy(), ref.affine.numpy(), atol=1e-5)


def test_transform_chain_puts_a_marked_voxel_at_the_same_physical_place():
    # 1 mm oblique image (the resampling keeps its grid), tumour 12 x 10 x 6, one bright voxel inside it
    size = (40, 36, 30)
    rng = np.random.default_rng(0)
    arr = rng.normal(size=size[::-1]).astype(np.float32)
    marked = (17, 21, 13)  # (x, y, z)
    arr[marked[2], marked[1], marked[0]] = 50.0
    img = _image(arr, (1.0, 1.0, 1.0), OBLIQUE)
    mask = _mask(size, ((12, 24), (15, 25), (10, 16)), ((1, 3), (1, 3), (1, 2)), like=img)
    chain = [T.ResampleIsotropicd(), T.MaskComponentsd(), T.CropAroundMaskd(crop_size=(15, 15, 9)), T.ZScoreInsided(),
             T.SITKToMetaTensord(), T.PadToDivisibled(spatial_size=(16, 16, 16))]
    d = {"case_id": "c1", "image": img, "mask": mask}
    for t in chain:
        d = t(d)
    out = d["image"]
    assert tuple(out.shape) == tuple(d["mask"].shape) == tuple(d["inside"].shape) == (1, 16, 16, 16)
    peak = np.unravel_index(int(torch.argmax(out)), out.shape)[1:]
    ras = (out.affine.numpy() @ [*peak, 1])[:3]
    np.testing.assert_allclose(ras, _lps_to_ras(img.TransformIndexToPhysicalPoint(marked)), atol=1e-4)
    info = d["preprocess"]
    assert info["kept_sizes"] == "[720]" and info["dropped_sizes"] == "[4]"
    assert info["box_start"] == "[12, 15, 10]" and info["crop_start"] == "[10, 12, 8]" and info["fraction_inside"] == 1
    assert int(d["mask"].sum()) == 720 and d["inside"].sum() == 15 * 15 * 9
    inside = d["inside"][0].bool()
    assert float(out[0][inside].mean()) == pytest.approx(0, abs=1e-5) and (out[0][~inside] == 0).all()


def test_transforms_name_the_case_and_collate():
    from monai.data import list_data_collate

    img = _image(np.ones((6, 8, 8), np.float32))
    bad = {"case_id": "c9", "image": img, "mask": _mask((8, 8, 6), ((0, 2), (0, 2), (0, 1)), like=img)}
    with pytest.raises(PreprocessError, match=r"^case 'c9': all 1 mask components have fewer than 20"):
        T.MaskComponentsd()(bad)
    infos = [T.MaskComponentsd(min_voxels=1)(bad)["preprocess"] for _ in range(2)]
    batch = list_data_collate([{"preprocess": i} for i in infos])  # flat numbers and strings batch
    assert batch["preprocess"]["kept_sizes"] == ["[4]", "[4]"]


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")  # MONAI builds every reader
def test_cached_crops_equal_the_monai_transform_chain(tmp_path):
    # the same case as NIfTI and as a DICOM series (1 x 1 x 3 mm, oblique): the chain on the raw files gives
    # the arrays and affines that preprocess_cohort wrote (read back with LoadImaged + EnsureChannelFirstd)
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    size = (20, 20, 6)
    rng = np.random.default_rng(0)
    image = _image((rng.normal(size=size[::-1]) + 5).astype(np.float32), (1.0, 1.0, 3.0), OBLIQUE)
    mask = _mask(size, ((4, 10), (5, 10), (2, 4)), ((15, 16), (15, 16), (1, 2)), like=image)
    sitk.WriteImage(image, str(tmp_path / "t2.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    write_dicom_series(sitk.GetArrayFromImage(image).transpose(2, 1, 0), tmp_path / "dicom", spacing=(1.0, 1.0, 3.0),
                       origin=ORIGIN, direction=np.array(OBLIQUE).reshape(3, 3), series_uid="1.2.3.4")
    recs = [{"case_id": "n", "image": str(tmp_path / "t2.nii.gz"), "mask": str(tmp_path / "mask.nii.gz")},
            {"case_id": "d", "image": str(tmp_path / "dicom"), "mask": str(tmp_path / "mask.nii.gz")}]
    table = C.preprocess_cohort(recs, tmp_path / "cache", {"crop_size": (8, 8, 8)}, progress=None)
    pad = T.PadToDivisibled(spatial_size=(16, 16, 16))
    chain = Compose([T.LoadRectalCased(), T.ResampleIsotropicd(), T.MaskComponentsd(),
                     T.CropAroundMaskd(crop_size=(8, 8, 8)), T.ZScoreInsided(), T.SITKToMetaTensord(), pad])
    read = Compose([LoadImaged(["image", "mask"], reader="NibabelReader", image_only=True),
                    EnsureChannelFirstd(["image", "mask"]), pad])
    for rec, crop in zip(recs, C.crop_datalist(recs, table)):
        live, cached = chain(dict(rec)), read(crop)
        for key in ("image", "mask"):
            assert np.array_equal(live[key].numpy(), cached[key].numpy().astype(live[key].numpy().dtype))
            np.testing.assert_allclose(live[key].affine.numpy(), cached[key].affine.numpy(), atol=1e-4)
        row = table.set_index("case_id").loc[rec["case_id"]]
        for k in ("kept_sizes", "dropped_sizes", "crop_start", "series_uid"):
            assert live["preprocess"][k] == row[k]
    assert list(table["series_uid"]) == ["", "1.2.3.4"] and list(table["kept_sizes"]) == ["[180]", "[180]"]
