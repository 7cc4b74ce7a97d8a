"""check_images: the header check of a data list's image and mask files (geometry, completeness)."""

from __future__ import annotations

import gzip
import os
import zlib

import nibabel as nib
import numpy as np
import pytest

from fairmonai.data import ImageCheckError, ImageReadError, check_images, find_image_problems
from fairmonai.data import image_check as ic
from fairmonai.errors import InputError

PHASES = ["image_pre", "image_post1", "image_post2"]
SHAPE = (6, 5, 4)
AFFINE = np.array([[0.8, 0, 0, -90.0], [0, 0.8, 0, -110.0], [0, 0, 1.5, -40.0], [0, 0, 0, 1]])


def _save(path, shape=SHAPE, affine=AFFINE, dtype=np.float32):
    data = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


def _cohort(folder, n=3):
    """``n`` MAMA-MIA-like cases: three phases and a mask on one grid."""
    records = []
    for i in range(n):
        rec = {"case_id": f"c{i}"}
        for p in PHASES:
            rec[p] = _save(folder / f"c{i}_{p}.nii.gz")
        rec["label"] = _save(folder / f"c{i}_mask.nii.gz", dtype=np.uint8)
        records.append(rec)
    return records


def _only_problem(records, **kwargs):
    """The single problem line of check_images' error, and the error."""
    with pytest.raises(ImageCheckError) as e:
        check_images(records, PHASES, "label", **kwargs)
    lines = str(e.value).splitlines()
    assert len(lines) == 2, lines
    return lines, e.value


def test_good_cohort_passes_and_is_returned(tmp_path):
    records = _cohort(tmp_path)
    assert check_images(records, PHASES, "label") is records
    assert check_images(records, "image_pre") is records  # one image key, no mask
    stacked = [{"case_id": r["case_id"], "image": [r[p] for p in PHASES], "label": r["label"]} for r in records]
    assert check_images(stacked, "image", "label") is stacked  # a key holding the phases as a list


def test_errors_are_input_errors():
    assert issubclass(ImageCheckError, InputError) and issubclass(ImageCheckError, ValueError)
    e = ImageReadError("cannot read the image (EOFError: x)", case_id="c7", key="image", file="/d/c7.nii.gz")
    assert str(e) == "case 'c7', image /d/c7.nii.gz: cannot read the image (EOFError: x)"
    assert (e.case_id, e.key, e.file) == ("c7", "image", "/d/c7.nii.gz")
    assert str(ImageReadError("plain")) == "plain"  # built from one string, as DataLoader re-raises


def _affine(**changes):
    a = AFFINE.copy()
    for (i, j), v in changes.get("set", {}).items():
        a[i, j] = v
    return a


@pytest.mark.parametrize(
    "key, kwargs, expected",
    [
        ("image_post1", {"shape": (6, 5)}, "2-D image of shape (6, 5), 3-D expected"),
        ("image_post1", {"shape": (6, 5, 4, 2)}, "4-D image of shape (6, 5, 4, 2), 3-D expected"),
        ("image_pre", {"shape": (6, 5, 4, 1)}, ic.MSG_SINGLETON_4D.format(shape=(6, 5, 4, 1))),
        ("image_pre", {"shape": (6, 5, 1)},
         "shape (6, 5, 1) has an axis shorter than 2 voxels (a 3-D image that is really lower-dimensional)"),
        ("label", {"shape": (6, 5, 3)}, "shape (6, 5, 3) differs from image_pre's (6, 5, 4) ({ref})"),
        ("image_post2", {"shape": (5, 6, 4)}, "shape (5, 6, 4) differs from image_pre's (6, 5, 4) ({ref})"),
        ("label", {"affine": _affine(set={(0, 0): 1.2})},
         "spacing (1.2, 0.8, 1.5) differs from image_pre's (0.8, 0.8, 1.5) ({ref}) beyond the tolerance 0.001 (relative)"),
        ("label", {"affine": _affine(set={(2, 3): -40.0 + 0.01})},
         "origin (-90, -110, -39.99) differs from image_pre's (-90, -110, -40) ({ref}) beyond the tolerance 0.001 voxel"),
        ("label", {"affine": _affine(set={(0, 0): -0.8})},
         "direction [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] differs from image_pre's "
         "[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] ({ref}) beyond the tolerance 0.001"),
    ],
    ids=["2d-phase", "4d", "4d-singleton", "one-slice", "mask-shape", "phase-shape", "mask-spacing", "mask-origin",
         "mask-direction"],
)
def test_each_geometry_error_names_case_key_and_file(tmp_path, key, kwargs, expected):
    records = _cohort(tmp_path)
    path = _save(records[1][key], **kwargs)
    lines, err = _only_problem(records)
    mask = ", masks on their image's grid"
    assert lines[0] == f"image check: 1 of 3 cases have bad image files (3-D expected{mask}):"
    assert lines[1] == f"  case 'c1', {key} {path}: " + expected.format(ref=records[1]["image_pre"])
    assert [(p.case_id, p.key, p.file) for p in err.problems] == [("c1", key, path)]


def test_within_tolerance_passes(tmp_path):
    records = _cohort(tmp_path)
    # 1e-4 relative spacing, 1e-4 voxel origin, 1e-4 direction: all inside the default 1e-3
    a = AFFINE.copy()
    a[0, 0] *= 1 + 1e-4
    a[1, 3] += 1e-4 * 0.8
    a[1, 0] = 1e-4 * 0.8
    _save(records[0]["label"], affine=a)
    assert check_images(records, PHASES, "label") is records
    with pytest.raises(ImageCheckError):
        check_images(records, PHASES, "label", tolerance=1e-5)


def test_singleton_4d_allowed_on_request(tmp_path):
    records = _cohort(tmp_path)
    _save(records[0]["image_post1"], shape=(6, 5, 4, 1))
    assert check_images(records, PHASES, "label", allow_singleton_4d=True) is records


def _save_sform(path, affine):
    """A NIfTI whose only affine is ``affine`` (sform; nibabel cannot make a qform of a degenerate one)."""
    img = nib.Nifti1Image(np.zeros(SHAPE, np.float32), None)
    img.header.set_sform(affine, code=1)
    nib.save(img, path)


def test_spacing_and_affine_must_be_finite_and_positive(tmp_path):
    records = _cohort(tmp_path, n=2)
    zero = AFFINE.copy()
    zero[:, 1] = 0
    _save_sform(records[0]["image_pre"], zero)
    nan = AFFINE.copy()
    nan[2, 3] = np.nan
    _save_sform(records[1]["label"], nan)
    got = [(p.case_id, p.key, p.message) for p in find_image_problems(records, PHASES, "label")]
    assert got == [
        ("c0", "image_pre", "spacing (0.8, 0, 1.5) is not finite and positive (affine [[0.8, 0.0, 0.0, -90.0], "
                            "[0.0, 0.0, 0.0, -110.0], [0.0, 0.0, 1.5, -40.0]])"),
        ("c1", "label", "the affine is not finite: [[0.800000011920929, 0.0, 0.0, -90.0], [0.0, 0.800000011920929, "
                        "0.0, -110.0], [0.0, 0.0, 1.5, nan], [0.0, 0.0, 0.0, 1.0]]"),
    ]


def test_truncated_and_unreadable_files(tmp_path):
    records = _cohort(tmp_path, n=4)
    # a truncated .nii.gz: its header still reads, its data end early
    gz = records[0]["image_post2"]
    data = open(gz, "rb").read()
    open(gz, "wb").write(data[: len(data) // 2])
    # random bytes saved as .nii.gz
    rnd = records[1]["label"]
    open(rnd, "wb").write(np.random.default_rng(0).bytes(500))
    # a truncated uncompressed .nii
    nii = str(tmp_path / "c2_pre.nii")
    _save(nii)
    records[2]["image_pre"] = nii
    full = os.path.getsize(nii)
    open(nii, "r+b").truncate(full - 40)
    # a missing file
    records[3]["image_post1"] = str(tmp_path / "absent.nii.gz")

    problems = find_image_problems(records, PHASES, "label")
    got = [(p.case_id, p.key, p.file, p.message) for p in problems]
    need = 352 + 4 * int(np.prod(SHAPE))  # header and extension flag, then float32 voxels
    have = len(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[: len(data) // 2]))
    assert got == [
        ("c0", "image_post2", gz, ic.MSG_TRUNCATED_GZ.format(have=have, need=need)),
        ("c1", "label", rnd, "cannot read the image header (ImageFileError: File <file> is not a gzip file)"),
        ("c2", "image_pre", nii, f"the file is truncated: it holds {full - 40} bytes, its header announces {full}"),
        ("c3", "image_post1", records[3]["image_post1"], "cannot read the image header (file not found)"),
    ]
    assert got[0][3] == f"the file is truncated: it decompresses to {have} bytes, its header announces {need}"


def test_multi_member_gzip_is_complete(tmp_path):
    """A valid .nii.gz whose trailer does not give the whole size (two gzip members) is read to the end."""
    records = _cohort(tmp_path, n=1)
    raw = gzip.decompress(open(records[0]["image_pre"], "rb").read())
    open(records[0]["image_pre"], "wb").write(gzip.compress(raw[:200]) + gzip.compress(raw[200:]))
    assert check_images(records, PHASES, "label") is records
    # the same two members, the second cut: truncated
    open(records[0]["image_pre"], "wb").write(gzip.compress(raw[:200]) + gzip.compress(raw[200:])[:-30])
    assert find_image_problems(records, PHASES, "label")[0].message.startswith("the file is truncated")


def test_itk_formats_compare_in_world_coordinates(tmp_path):
    """A .nrrd mask (SimpleITK, LPS) is on the grid of a .nii.gz image (nibabel, RAS) written from one image."""
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(np.zeros(SHAPE[::-1], np.float32))
    img.SetSpacing((0.8, 0.8, 1.5))
    img.SetOrigin((90.0, 110.0, -40.0))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    nii, nrrd = str(tmp_path / "a.nii.gz"), str(tmp_path / "a_mask.nrrd")
    sitk.WriteImage(img, nii)
    sitk.WriteImage(img, nrrd)
    a, b = ic.read_image_info(nii), ic.read_image_info(nrrd)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    np.testing.assert_allclose(a.affine, AFFINE, atol=1e-6)
    records = [{"case_id": "c0", "image": nii, "label": nrrd}]
    assert check_images(records, "image", "label") is records
    img.SetOrigin((91.0, 110.0, -40.0))
    sitk.WriteImage(img, nrrd)
    assert find_image_problems(records, "image", "label")[0].message.startswith("origin (-91, -110, -40) differs")


def _many_bad(tmp_path, n_bad=12, n=15):
    records = []
    for i in range(n):
        rec = {"case_id": f"c{i:02d}", "image": _save(tmp_path / f"c{i:02d}.nii.gz", shape=(6, 5) if i < n_bad else SHAPE)}
        records.append(rec)
    return records


def test_lists_the_first_max_listed_cases(tmp_path):
    records = _many_bad(tmp_path)
    with pytest.raises(ImageCheckError) as e:
        check_images(records, "image", max_listed=10)
    lines = str(e.value).splitlines()
    assert lines[0] == "image check: 12 of 15 cases have bad image files (3-D expected); the first 10 cases:"
    assert lines[1:] == [f"  case 'c{i:02d}', image {records[i]['image']}: 2-D image of shape (6, 5), 3-D expected"
                         for i in range(10)]
    assert len(e.value.problems) == 12


def test_record_problems(tmp_path):
    records = [{"case_id": "a", "image": _save(tmp_path / "a.nii.gz")}, {"image": 3}, {"case_id": "c"}]
    got = [(p.case_id, p.key, p.message) for p in find_image_problems(records, "image")]
    assert got == [("#1", "image", "'image' is not a file path or a list of file paths: 3"),
                   ("c", "image", "the record has no 'image'")]
    assert find_image_problems(records[::2], "image", allow_missing_keys=True) == []
    with pytest.raises(ValueError, match="image_keys names no key"):
        check_images(records, [])


def test_parallel_equals_serial(tmp_path):
    records = _cohort(tmp_path, n=12)
    _save(records[2]["label"], shape=(6, 5, 3))
    _save(records[5]["image_post1"], shape=(6, 5))
    open(records[7]["image_pre"], "wb").write(b"not an image")
    _save(records[9]["label"], affine=_affine(set={(1, 1): 0.9}))
    serial = find_image_problems(records, PHASES, "label", num_workers=1)
    assert [(p.case_id, p.key) for p in serial] == [("c2", "label"), ("c5", "image_post1"), ("c7", "image_pre"),
                                                     ("c9", "label")]
    for workers in (2, 8, None):
        assert find_image_problems(records, PHASES, "label", num_workers=workers) == serial
    messages = set()
    for workers in (1, 8):
        with pytest.raises(ImageCheckError) as e:
            check_images(records, PHASES, "label", num_workers=workers)
        messages.add(str(e.value))
    assert len(messages) == 1


# ------------------------------------------------------------------------------------ NumPy (.npz, .npy)
def _npz(path, compressed=False, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return str(path)


def _harvard_like(path, bscans_shape=(20, 18, 16), compressed=False):
    """A Harvard-GF-like eye: the B-scan volume among other arrays."""
    return _npz(path, compressed, oct_bscans=np.zeros(bscans_shape, np.uint8), rnflt=np.zeros((4, 4), np.float32),
                glaucoma=np.array(1), race=np.array(2))


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_npz_header_of_the_named_array(tmp_path, compressed):
    f = _harvard_like(tmp_path / "e0.npz", compressed=compressed)
    info = ic.read_image_info(f, npz_key="oct_bscans")
    # no geometry in the file: unit spacing, zero origin, identity direction (what NumpyReader reports)
    assert info.shape == (20, 18, 16) and info.spacing == (1.0, 1.0, 1.0) and info.origin == (0.0, 0.0, 0.0)
    assert info.direction == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)) and info.data_problem is None
    records = [{"case_id": "e0", "image": f}]
    assert check_images(records, "image", npz_key="oct_bscans") is records
    assert check_images(records, "image", npz_key={"image": "oct_bscans"}) is records


def test_npz_2d_array_refused_by_name(tmp_path):
    good, flat = _harvard_like(tmp_path / "e0.npz"), _harvard_like(tmp_path / "e1.npz", bscans_shape=(20, 18))
    with pytest.raises(ImageCheckError) as e:
        check_images([{"case_id": "e0", "image": good}, {"case_id": "e1", "image": flat}], "image", npz_key="oct_bscans")
    assert str(e.value).splitlines() == [
        "image check: 1 of 2 cases have bad image files (3-D expected):",
        f"  case 'e1', image {flat}: 2-D image of shape (20, 18), 3-D expected",
    ]


def test_npz_missing_key_lists_the_arrays(tmp_path):
    f = _npz(tmp_path / "e0.npz", rnflt=np.zeros((4, 4), np.float32), glaucoma=np.array(1))
    [p] = find_image_problems([{"case_id": "e0", "image": f}], "image", npz_key="oct_bscans")
    assert (p.case_id, p.key, p.file) == ("e0", "image", f)
    assert p.message == "the .npz has no array 'oct_bscans'; its arrays are ['rnflt', 'glaucoma']"


def test_npz_without_key(tmp_path):
    """No npz_key: an .npz of one array is that array; of several, the check asks which."""
    one = _npz(tmp_path / "one.npz", vol=np.zeros((3, 4, 5), np.int16))
    assert ic.read_image_info(one).shape == (3, 4, 5)
    several = _harvard_like(tmp_path / "e0.npz")
    [p] = find_image_problems([{"case_id": "one", "image": one}, {"case_id": "e0", "image": several}], "image")
    assert (p.case_id, p.message) == (
        "e0", "the .npz holds 4 arrays ['oct_bscans', 'rnflt', 'glaucoma', 'race']; name the one to check with npz_key")


def test_npz_truncated_or_corrupt(tmp_path):
    f = _harvard_like(tmp_path / "e0.npz")
    raw = open(f, "rb").read()
    open(f, "wb").write(raw[: len(raw) // 2])  # a download cut in half: the zip directory (at the end) is gone
    [p] = find_image_problems([{"case_id": "e0", "image": f}], "image", npz_key="oct_bscans")
    assert p.message == ("the .npz file is truncated or corrupt: its zip directory cannot be read "
                         "(BadZipFile: File is not a zip file)")
    open(f, "wb").write(b"not a zip file at all")
    [p] = find_image_problems([{"case_id": "e0", "image": f}], "image", npz_key="oct_bscans")
    assert p.message.startswith("the .npz file is truncated or corrupt")
    with pytest.raises(ValueError, match=r"e0\.npz: the \.npz file is truncated or corrupt"):
        ic.read_image_info(f, npz_key="oct_bscans")


def test_npy_header_and_truncation(tmp_path):
    f = str(tmp_path / "v.npy")
    np.save(f, np.zeros((5, 6, 7), np.float32))
    assert ic.read_image_info(f).shape == (5, 6, 7)
    records = [{"case_id": "v", "image": f}]
    assert check_images(records, "image", npz_key="ignored for .npy") is records
    raw = open(f, "rb").read()
    assert len(raw) == 128 + 5 * 6 * 7 * 4  # npy 1.0 header padded to 128 bytes, then 210 float32
    open(f, "wb").write(raw[:500])
    [p] = find_image_problems(records, "image")
    assert p.message == "the array '.npy' is truncated: it holds 500 bytes, its header announces 968"
    assert find_image_problems(records, "image", check_data_size=False) == []
    np.save(f, np.array([None, 1], dtype=object), allow_pickle=True)
    [p] = find_image_problems(records, "image")
    assert p.message == "the array '.npy' holds Python objects (dtype object), not numbers"


def test_npz_per_key_mapping_and_grid_by_shape(tmp_path):
    img = _harvard_like(tmp_path / "e0.npz")
    mask = _npz(tmp_path / "e0_mask.npz", seg=np.zeros((20, 18, 16), np.uint8))
    records = [{"case_id": "e0", "image": img, "label": mask}]
    assert check_images(records, "image", "label", npz_key={"image": "oct_bscans", "label": "seg"}) is records
    assert check_images(records, "image", "label", npz_key={"image": "oct_bscans"}) is records  # one array: no key
    _npz(tmp_path / "e0_mask.npz", seg=np.zeros((20, 18, 15), np.uint8))
    [p] = find_image_problems(records, "image", "label", npz_key={"image": "oct_bscans"})
    assert p.message == f"shape (20, 18, 15) differs from image's (20, 18, 16) ({img})"
    with pytest.raises(ValueError, match=r"npz_key names keys that are not checked: \['mask'\]"):
        check_images(records, "image", "label", npz_key={"mask": "seg"})


def test_npz_parallel_equals_serial(tmp_path):
    shapes = [(20, 18) if i in (2, 5) else (20, 18, 16) for i in range(8)]
    records = [{"case_id": f"e{i}", "image": _harvard_like(tmp_path / f"e{i}.npz", shape)} for i, shape in enumerate(shapes)]
    serial = find_image_problems(records, "image", npz_key="oct_bscans", num_workers=1)
    assert [p.case_id for p in serial] == ["e2", "e5"]
    assert find_image_problems(records, "image", npz_key="oct_bscans", num_workers=4) == serial
