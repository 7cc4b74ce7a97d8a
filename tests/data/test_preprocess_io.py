"""Reading T2w MRI and masks (fairmonai.data.preprocess.io) and the DICOM series writer of the rectal synth."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from fairmonai.data.preprocess import (
    PreprocessError,
    list_dicom_series,
    read_dicom_series,
    read_image,
    read_mask,
)
from fairmonai.data.preprocess import io as pio
from fairmonai.data.synth.rectal_mri import write_dicom_series
from fairmonai.errors import InputError

LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS: flip x and y


def rot_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def volume(shape=(8, 6, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.5, 0.3, size=shape).astype(np.float32)


def xyz(image: sitk.Image) -> np.ndarray:
    """The voxels as an (X, Y, Z) array."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def where(path, case="c1") -> str:
    return f"case '{case}', {path}: "


def save_nib(path, arr, affine) -> None:
    img = nib.Nifti1Image(np.asarray(arr), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def save_sitk(path, arr, spacing, origin=(0.0, 0.0, 0.0), direction=np.eye(3)) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr).transpose(2, 1, 0)))
    img.SetSpacing(tuple(map(float, spacing)))
    img.SetOrigin(tuple(map(float, origin)))
    img.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    sitk.WriteImage(img, str(path))
    return img


def pydicom_file(name: str) -> str:
    path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return path


# ------------------------------------------------------------------------------ writer round trip


@pytest.mark.parametrize("spacing, origin, direction", [
    ((0.75, 0.75, 3.0), (0.0, 0.0, 0.0), None),
    ((0.5, 0.8, 3.0), (-12.5, 40.25, -7.0), rot_z(20)),
    ((1.0, 1.0, 2.5), (3.0, 2.0, 1.0), rot_z(30) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])),  # coronal, oblique
])
def test_writer_round_trip(tmp_path, spacing, origin, direction):
    arr = volume()
    uid = write_dicom_series(arr, tmp_path / "s", spacing=spacing, origin=origin, direction=direction)
    img = read_image(tmp_path / "s")
    assert img.GetPixelID() == sitk.sitkFloat32
    assert img.GetSize() == arr.shape
    slope = float(pydicom.dcmread(list_dicom_series(tmp_path / "s")[uid][0]).RescaleSlope)
    assert np.abs(xyz(img) - arr).max() <= slope / 2 + 1e-6 < 1e-3
    np.testing.assert_allclose(img.GetSpacing(), spacing, atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), origin, atol=1e-6)
    expected = np.eye(3) if direction is None else direction
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), expected, atol=1e-6)


def test_writer_refuses_left_handed_direction_and_overwrite(tmp_path):
    with pytest.raises(ValueError, match="determinant"):
        write_dicom_series(volume(), tmp_path / "s", direction=np.diag([1.0, 1.0, -1.0]))
    uid = write_dicom_series(volume(), tmp_path / "s", series_uid="1.2.3.4")
    assert uid == "1.2.3.4"
    with pytest.raises(ValueError, match="does not overwrite"):
        write_dicom_series(volume(), tmp_path / "s", series_uid="1.2.3.4")


def test_slices_ordered_by_position_not_name_or_instance_number(tmp_path):
    arr = volume(shape=(8, 6, 7))
    folder = tmp_path / "s"
    uid = write_dicom_series(arr, folder, direction=rot_z(20), origin=(5.0, -3.0, 10.0), shuffle_names_seed=1)
    files = list_dicom_series(folder)[uid]
    assert sorted(f.name for f in files) != [f.name for f in files]  # name order is wrong
    normal = rot_z(20)[:, 2]
    along = [float(np.asarray(pydicom.dcmread(f).ImagePositionPatient, float) @ normal) for f in files]
    np.testing.assert_allclose(along, 10.0 + 3.0 * np.arange(7), atol=1e-6)
    for f in files:  # InstanceNumber reversed: still ordered by position
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = 100 - int(ds.InstanceNumber)
        ds.save_as(f)
    assert list_dicom_series(folder)[uid] == files
    np.testing.assert_allclose(xyz(read_image(folder)), arr, atol=1e-3)


# ------------------------------------------------------------------------------ series errors


def test_two_series_need_a_uid(tmp_path):
    a, b = volume(seed=1), volume(shape=(8, 6, 3), seed=2)
    uid_a = write_dicom_series(a, tmp_path, series_description="T2w ax")
    uid_b = write_dicom_series(b, tmp_path, series_description="T2w cor", shuffle_names_seed=0)
    assert set(list_dicom_series(tmp_path)) == {uid_a, uid_b}
    with pytest.raises(PreprocessError) as e:
        read_image(tmp_path, case="c1")
    lines = sorted([pio.MSG_SERIES_LINE.format(uid=uid_a, description="'T2w ax'", n_slices=5),
                    pio.MSG_SERIES_LINE.format(uid=uid_b, description="'T2w cor'", n_slices=3)])
    listing = "\n".join(lines)  # the series come sorted by UID, and each line starts with its UID
    assert str(e.value) == where(tmp_path) + pio.MSG_SEVERAL_SERIES.format(n=2, listing=listing)
    assert isinstance(e.value, InputError) and e.value.case == "c1" and e.value.path == str(tmp_path)
    np.testing.assert_allclose(xyz(read_image(tmp_path, series_uid=uid_b)), b, atol=1e-3)
    np.testing.assert_allclose(xyz(read_dicom_series(tmp_path, uid_a)), a, atol=1e-3)
    with pytest.raises(PreprocessError) as e:
        read_dicom_series(tmp_path, "9.9.9", case="c1")
    assert str(e.value) == where(tmp_path) + pio.MSG_UID_NOT_FOUND.format(uid="9.9.9", listing=listing)


def test_no_series(tmp_path):
    with pytest.raises(PreprocessError) as e:
        read_image(tmp_path, case="c1")
    assert str(e.value) == where(tmp_path) + pio.MSG_NO_SERIES.format(n_files=0)
    (tmp_path / "notes.txt").write_text("not dicom")
    shutil.copy(pydicom_file("rtstruct.dcm"), tmp_path / "rtstruct.dcm")  # DICOM, but no image: ignored
    with pytest.raises(PreprocessError) as e:
        read_dicom_series(tmp_path, case="c1")
    assert str(e.value) == where(tmp_path) + pio.MSG_NO_SERIES.format(n_files=2)


def test_one_slice_series(tmp_path):
    uid = write_dicom_series(volume(shape=(8, 6, 1)), tmp_path)
    name = list_dicom_series(tmp_path)[uid][0].name
    with pytest.raises(PreprocessError) as e:
        read_image(tmp_path, case="c1")
    assert str(e.value) == where(tmp_path) + pio.MSG_ONE_SLICE.format(uid=uid, file=name)


def test_pydicom_files(tmp_path):
    """Real DICOM from pydicom's bundled test files: UIDs listed; one slice, multi-frame, colour refused."""
    mr, ct = pydicom_file("MR_small.dcm"), pydicom_file("CT_small.dcm")
    uid_mr = pydicom.dcmread(mr).SeriesInstanceUID
    uid_ct = pydicom.dcmread(ct).SeriesInstanceUID
    shutil.copy(mr, tmp_path / "MR_small.dcm")
    only_mr = {uid_mr: [tmp_path / "MR_small.dcm"]}
    assert list_dicom_series(tmp_path) == only_mr
    one_slice = pio.MSG_ONE_SLICE.format(uid=uid_mr, file="MR_small.dcm")
    with pytest.raises(PreprocessError) as e:
        read_image(tmp_path, case="c1")
    assert str(e.value) == where(tmp_path) + one_slice
    with pytest.raises(PreprocessError) as e:  # the file itself
        read_image(tmp_path / "MR_small.dcm", case="c1")
    assert str(e.value) == where(tmp_path / "MR_small.dcm") + one_slice
    shutil.copy(ct, tmp_path / "ct")  # no extension
    assert list_dicom_series(tmp_path) == {**only_mr, uid_ct: [tmp_path / "ct"]}

    dose = tmp_path / "dose"
    dose.mkdir()
    shutil.copy(pydicom_file("rtdose.dcm"), dose / "rtdose.dcm")
    uid = pydicom.dcmread(dose / "rtdose.dcm").SeriesInstanceUID
    with pytest.raises(PreprocessError) as e:
        read_image(dose, case="c1")
    assert str(e.value) == where(dose) + pio.MSG_MULTI_FRAME.format(file="rtdose.dcm", uid=uid, frames=15)

    rgb = tmp_path / "rgb"
    rgb.mkdir()
    shutil.copy(pydicom_file("SC_rgb_small_odd.dcm"), rgb / "rgb.dcm")
    uid = pydicom.dcmread(rgb / "rgb.dcm").SeriesInstanceUID
    with pytest.raises(PreprocessError) as e:
        read_image(rgb, case="c1")
    assert str(e.value) == where(rgb) + pio.MSG_MULTI_COMPONENT.format(uid=uid, components=3, file="rgb.dcm",
                                                                        photometric="RGB")


def test_4d_series(tmp_path):
    write_dicom_series(volume(seed=1), tmp_path, series_uid="1.2.3")
    write_dicom_series(volume(seed=2), tmp_path, series_uid="1.2.3", shuffle_names_seed=0)  # 2nd time point
    with pytest.raises(PreprocessError) as e:
        read_image(tmp_path, case="c1")
    assert str(e.value) == where(tmp_path) + pio.MSG_4D.format(uid="1.2.3", n_files=10, n_positions=5)


def test_missing_slice_gives_inconsistent_spacing(tmp_path):
    uid = write_dicom_series(volume(shape=(8, 6, 6)), tmp_path, spacing=(0.75, 0.75, 3.0))
    files = list_dicom_series(tmp_path)[uid]
    files[3].unlink()
    with pytest.raises(PreprocessError) as e:
        read_image(tmp_path, case="c1")
    item = pio.MSG_GAP_ITEM.format(gap=6.0, i=2, j=3, file_i=files[2].name, file_j=files[4].name)
    assert str(e.value) == where(tmp_path) + pio.MSG_GAPS.format(uid=uid, gap=3.0, listing=item, tol=pio.SLICE_TOL_MM)


def test_sheared_stack(tmp_path):
    uid = write_dicom_series(volume(), tmp_path)
    files = list_dicom_series(tmp_path)[uid]
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = [0.5, 0.0, float(ds.ImagePositionPatient[2])]  # 0.5 mm sideways
    ds.save_as(files[2])
    with pytest.raises(PreprocessError) as e:
        read_image(tmp_path, case="c1")
    assert str(e.value) == where(tmp_path) + pio.MSG_SHEARED.format(uid=uid, index=2, file=files[2].name, offset=0.5)


# ------------------------------------------------------------------------------ orientation


def test_corner_voxel_same_physical_point(tmp_path):
    """nibabel (RAS affine), SimpleITK and the DICOM writer (LPS) put the marked voxel at one point."""
    shape, spacing = (6, 5, 4), np.array([0.75, 0.8, 3.0])
    arr = np.zeros(shape, np.float32)
    corner = (5, 4, 3)
    arr[corner] = 10.0
    rot, t_ras = rot_z(20), np.array([10.0, -20.0, 30.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = t_ras
    save_nib(tmp_path / "nib.nii.gz", arr, affine)
    save_sitk(tmp_path / "itk.nii.gz", arr, spacing, LPS @ t_ras, LPS @ rot)
    write_dicom_series(arr, tmp_path / "dcm", spacing=spacing, origin=LPS @ t_ras, direction=LPS @ rot)
    expected = LPS @ (affine @ [*corner, 1.0])[:3]
    for path in ("nib.nii.gz", "itk.nii.gz", "dcm"):
        img = read_image(tmp_path / path)
        index = np.unravel_index(np.argmax(xyz(img)), shape)
        assert index == corner, path
        np.testing.assert_allclose(img.TransformIndexToPhysicalPoint(tuple(map(int, index))), expected, atol=1e-4)


def test_oblique_nifti_direction_survives(tmp_path):
    rot, spacing, t_ras = rot_z(20), np.array([0.75, 0.75, 3.0]), np.array([10.0, -20.0, 30.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = t_ras
    arr = volume()
    save_nib(tmp_path / "obl.nii.gz", arr, affine)
    img = read_image(tmp_path / "obl.nii.gz")
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), LPS @ rot, atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), LPS @ t_ras, atol=1e-5)
    np.testing.assert_allclose(img.GetSpacing(), spacing, atol=1e-6)
    np.testing.assert_array_equal(xyz(img), arr)


# ------------------------------------------------------------------------------ read_image errors


def test_read_image_errors(tmp_path):
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(PreprocessError) as e:
        read_image(missing, case="c7")
    assert str(e.value) == where(missing, "c7") + pio.MSG_NOT_FOUND
    other = tmp_path / "img.png"
    other.write_bytes(b"\x89PNG")
    with pytest.raises(PreprocessError) as e:
        read_image(other, case="c7")
    assert str(e.value) == where(other, "c7") + pio.MSG_UNSUPPORTED
    four = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), str(four))
    with pytest.raises(PreprocessError) as e:
        read_image(four, case="c7")
    assert str(e.value) == where(four, "c7") + pio.MSG_NOT_3D.format(
        dim=4, size=(4, 5, 6, 2), hint=" (a 4-D file holds several volumes: time points, echoes)")


# ------------------------------------------------------------------------------ read_mask


@pytest.fixture
def grid(tmp_path):
    """An image on (0.75, 0.75, 3) mm, oblique, and a two-label mask on the same grid (written by nibabel)."""
    rot, spacing = rot_z(20), np.array([0.75, 0.75, 3.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = [1.0, 2.0, 3.0]
    save_nib(tmp_path / "img.nii.gz", volume(shape=(9, 9, 6)), affine)
    labels = np.zeros((9, 9, 6), np.uint8)
    labels[2:5, 3:6, 1:4] = 1
    labels[6, 6, 4] = 2
    save_nib(tmp_path / "mask.nii.gz", labels, affine)
    return read_image(tmp_path / "img.nii.gz"), tmp_path / "mask.nii.gz", labels, affine


def test_read_mask_labels(grid):
    image, path, labels, _ = grid
    m = read_mask(path, image, case="c1")
    assert m.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(xyz(m), (labels > 0).astype(np.uint8))
    assert (m.GetSize(), m.GetSpacing(), m.GetOrigin(), m.GetDirection()) == \
        (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    np.testing.assert_array_equal(xyz(read_mask(path, image, mask_labels=[2])), labels == 2)
    np.testing.assert_array_equal(xyz(read_mask(path, image, mask_labels=1)), labels == 1)
    with pytest.raises(PreprocessError) as e:
        read_mask(path, image, case="c1", mask_labels=[2, 3])
    assert str(e.value) == where(path) + pio.MSG_LABELS_ABSENT.format(missing=[3], present=[0, 1, 2])
    with pytest.raises(ValueError, match="mask_labels must be"):
        read_mask(path, image, mask_labels=[])


def test_read_mask_empty_and_non_integer(grid, tmp_path):
    image, _, _, affine = grid
    empty = tmp_path / "empty.nii.gz"
    save_nib(empty, np.zeros((9, 9, 6), np.uint8), affine)
    with pytest.raises(PreprocessError) as e:
        read_mask(empty, image, case="c3")
    assert str(e.value) == where(empty, "c3") + pio.MSG_EMPTY.format(detail=" (no non-zero voxel)")
    soft = tmp_path / "soft.nii.gz"
    prob = np.zeros((9, 9, 6), np.float32)
    prob[4, 4, 2] = 0.25
    save_nib(soft, prob, affine)
    with pytest.raises(PreprocessError) as e:
        read_mask(soft, image, case="c3")
    assert str(e.value) == where(soft, "c3") + pio.MSG_NON_INTEGER.format(value="0.25")


@pytest.mark.parametrize("change, what", [
    ("origin", "origin beyond 0.001 mm"),
    ("spacing", "spacing beyond 0.001 mm"),
    ("direction", "direction beyond 0.0001"),
    ("size", "size"),
])
def test_read_mask_other_grid(grid, tmp_path, change, what):
    image, _, labels, _ = grid
    origin, spacing = np.array(image.GetOrigin()), np.array(image.GetSpacing())
    direction, arr = np.reshape(image.GetDirection(), (3, 3)), labels
    if change == "origin":
        origin = origin + [0.0, 0.01, 0.0]
    elif change == "spacing":
        spacing = spacing * [1.0, 1.0, 1.01]
    elif change == "direction":
        direction = rot_z(0.1) @ direction
    else:
        arr = labels[:, :, :5]
    path = tmp_path / "other.nii.gz"
    mask = save_sitk(path, arr, spacing, origin, direction)
    with pytest.raises(PreprocessError) as e:
        read_mask(path, image, case="c1")
    assert str(e.value) == where(path) + pio.MSG_GRID.format(what=what, image=pio._grid_text(image),
                                                             mask=pio._grid_text(mask))
    assert read_mask(path, image, resample_to_image=True).GetSize() == image.GetSize()


def test_read_mask_within_tolerance_takes_image_grid(grid, tmp_path):
    image, _, labels, _ = grid
    path = tmp_path / "near.nii.gz"
    save_sitk(path, labels, np.array(image.GetSpacing()) + 1e-4, np.array(image.GetOrigin()) + 5e-4,
              np.reshape(image.GetDirection(), (3, 3)))
    m = read_mask(path, image)
    assert (m.GetSpacing(), m.GetOrigin()) == (image.GetSpacing(), image.GetOrigin())
    np.testing.assert_array_equal(xyz(m), labels > 0)


def test_read_mask_resample_nearest(tmp_path):
    """A mask on a 3x coarser grid, same origin: image voxel i takes mask voxel round(i / 3) (no ties)."""
    image = save_sitk(tmp_path / "img.nii.gz", np.zeros((12, 9, 6), np.float32), (0.5, 0.5, 1.0), (4.0, 5.0, 6.0))
    coarse = np.zeros((4, 3, 2), np.uint8)
    coarse[1, 1, 0] = 1
    coarse[2, 1, 1] = 3
    path = tmp_path / "coarse.nii.gz"
    save_sitk(path, coarse, (1.5, 1.5, 3.0), (4.0, 5.0, 6.0))
    idx = [np.rint(np.arange(n) / 3).astype(int) for n in (12, 9, 6)]
    inside = [i <= m - 1 for i, m in zip(idx, coarse.shape)]
    expected = (coarse[np.ix_(*[np.minimum(i, m - 1) for i, m in zip(idx, coarse.shape)])] > 0) \
        & inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    m = read_mask(path, image, resample_to_image=True)
    np.testing.assert_array_equal(xyz(m), expected)
    np.testing.assert_array_equal(xyz(read_mask(path, image, resample_to_image=True, mask_labels=[3])),
                                  expected & (np.arange(6) >= 2)[None, None, :])
    far = tmp_path / "far.nii.gz"
    save_sitk(far, coarse, (1.5, 1.5, 3.0), (400.0, 5.0, 6.0))
    with pytest.raises(PreprocessError) as e:
        read_mask(far, image, case="c1", resample_to_image=True)
    assert str(e.value) == where(far) + pio.MSG_EMPTY.format(
        detail=" after resampling onto the image grid (the mask lies outside the image)")


def test_mixed_pixel_spacing(tmp_path):
    uid = write_dicom_series(volume(), tmp_path, spacing=(0.75, 0.75, 3.0))
    files = list_dicom_series(tmp_path)[uid]
    ds = pydicom.dcmread(files[3])
    ds.PixelSpacing = [0.8, 0.75]
    ds.save_as(files[3])
    with pytest.raises(PreprocessError) as e:
        read_image(tmp_path, case="c1")
    assert str(e.value) == where(tmp_path) + pio.MSG_MIXED.format(
        uid=uid, what="PixelSpacing", first=(0.75, 0.75), other=(0.8, 0.75), file_a=files[0].name,
        file_b=files[3].name)
