"""Time the image header check (:func:`fairmonai.data.check_images`) on MAMA-MIA- and Harvard-GF-sized cohorts.

* ``nifti``: ``--cases`` synthetic MAMA-MIA-like cases (three phases and a mask per case, small
  ``.nii.gz`` volumes; 1,500 cases = 6,000 files, the real release's size): headers, grids, gzip trailers.
* ``npz``: ``--cases`` Harvard-GF-like eyes (one ``.npz`` per eye holding ``oct_bscans`` of
  ``--npz-shape`` uint8 and the release's other arrays): the npy header of ``oct_bscans``
  (``npz_key``), read from the zip without loading the array. (Harvard-GF has 3,300 eyes.)

Each is timed serially and with the default thread pool, best of ``--repeats`` runs each, and both
must report the same problems (none on the good cohort; the one planted with ``--bad``).

    python benchmarks/bench_header_check.py [--kind both|nifti|npz] [--cases 1500] [--shape 24 24 12]
        [--npz-shape 32 32 32] [--repeats 3] [--bad]

The target (issue 14) is under 10 s for 1,500 cases on 2 CPU cores. The files are written once per
run (not timed); the page cache is warm for every timed check, as it is for a check that runs just
before training reads the same files.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from fairmonai.data import check_images, find_image_problems

PHASES = ("image_pre", "image_post1", "image_post2")


def write_cohort(folder: Path, n: int, shape: tuple[int, ...], bad: bool) -> list[dict]:
    """``n`` cases of three float32 phases and a uint8 mask; with ``bad``, case 7's mask is one row short."""
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    affine[:3, 3] = (-90.0, -110.0, -40.0)
    phase = rng.random(shape, dtype=np.float32)
    mask = (phase > 0.9).astype(np.uint8)
    records = []
    for i in range(n):
        cid = f"case_{i:05d}"
        rec = {"case_id": cid}
        for p in PHASES:
            path = folder / f"{cid}_{p}.nii.gz"
            nib.save(nib.Nifti1Image(phase, affine), path)
            rec[p] = str(path)
        path = folder / f"{cid}_mask.nii.gz"
        m = mask[:-1] if bad and i == 7 else mask
        nib.save(nib.Nifti1Image(m, affine), path)
        rec["label"] = str(path)
        records.append(rec)
    return records


def write_npz_cohort(folder: Path, n: int, shape: tuple[int, ...], bad: bool) -> list[dict]:
    """``n`` Harvard-GF-like eyes (``np.savez``, as the release); with ``bad``, eye 7's ``oct_bscans`` is 2-D."""
    rng = np.random.default_rng(0)
    bscans = rng.integers(0, 255, shape, dtype=np.uint8)
    others = {"rnflt": np.zeros((8, 8), np.float32), "glaucoma": np.array(1), "race": np.array(0),
              "male": np.array(1), "age": np.array(60.0)}
    records = []
    for i in range(n):
        cid = f"data_{i:05d}"
        path = folder / f"{cid}.npz"
        np.savez(path, oct_bscans=bscans[0] if bad and i == 7 else bscans, **others)
        records.append({"case_id": cid, "image": str(path)})
    return records


def time_check(label: str, records: list[dict], n_files: int, repeats: int, bad: bool, **check) -> None:
    """Best-of-``repeats`` times of the serial and threaded checks, which must agree; then check_images."""
    print(f"{label}: {len(records)} cases ({n_files} files)")
    results = {}
    for name, workers in (("serial", 1), ("thread pool (default)", None)):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            problems = find_image_problems(records, num_workers=workers, **check)
            times.append(time.perf_counter() - t)
        results[name] = problems
        print(f"{name:>22}: best {min(times):.2f} s of {repeats} "
              f"({1e3 * min(times) / len(records):.2f} ms per case), {len(problems)} problem(s)")
    serial, parallel = results.values()
    assert serial == parallel, "the thread pool found other problems than the serial check"
    assert len(serial) == (1 if bad else 0), serial
    t = time.perf_counter()
    try:
        check_images(records, **check)
        print(f"check_images: passed in {time.perf_counter() - t:.2f} s")
    except ValueError as e:
        print(f"check_images: raised in {time.perf_counter() - t:.2f} s, last line:\n{str(e).splitlines()[-1]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("both", "nifti", "npz"), default="both")
    ap.add_argument("--cases", type=int, default=1500)
    ap.add_argument("--shape", type=int, nargs=3, default=(24, 24, 12), help="NIfTI volume shape")
    ap.add_argument("--npz-shape", type=int, nargs=3, default=(32, 32, 32), help="oct_bscans shape (uint8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bad", action="store_true", help="plant one bad file (case 7: a short mask; a 2-D oct_bscans)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPU cores")

    if args.kind in ("both", "nifti"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            records = write_cohort(Path(tmp), args.cases, tuple(args.shape), args.bad)
            print(f"wrote the NIfTI cohort (shape {tuple(args.shape)}) in {time.perf_counter() - t0:.1f} s")
            time_check("NIfTI (.nii.gz), 3 phases + mask", records, 4 * len(records), args.repeats, args.bad,
                       image_keys=list(PHASES), mask_key="label")
    if args.kind in ("both", "npz"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            records = write_npz_cohort(Path(tmp), args.cases, tuple(args.npz_shape), args.bad)
            print(f"wrote the npz cohort (oct_bscans {tuple(args.npz_shape)}) in {time.perf_counter() - t0:.1f} s")
            time_check("Harvard-GF-like .npz, npz_key='oct_bscans'", records, len(records), args.repeats, args.bad,
                       image_keys="image", npz_key="oct_bscans")


if __name__ == "__main__":
    main()
