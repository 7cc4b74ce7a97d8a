"""Time the image header check (:func:`fairmonai.data.check_images`) on a MAMA-MIA-sized cohort.

Writes ``--cases`` synthetic MAMA-MIA-like cases (three phases and a mask per case, small ``.nii.gz``
volumes; 1,500 cases = 6,000 files, the real release's size) into a temporary folder, then times
``check_images`` over them (headers, grids, gzip trailers), serially and with the default thread
pool, best of ``--repeats`` runs each, and checks that both report the same problems (none on the
good cohort; the one planted with ``--bad``).

    python benchmarks/bench_header_check.py [--cases 1500] [--shape 24 24 12] [--repeats 3] [--bad]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1500)
    ap.add_argument("--shape", type=int, nargs=3, default=(24, 24, 12))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bad", action="store_true", help="plant one mask of the wrong shape (case 7)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        records = write_cohort(Path(tmp), args.cases, tuple(args.shape), args.bad)
        n_files = 4 * len(records)
        print(f"wrote {len(records)} cases ({n_files} files, shape {tuple(args.shape)}) in "
              f"{time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPU cores")
        results = {}
        for name, workers in (("serial", 1), ("thread pool (default)", None)):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                problems = find_image_problems(records, list(PHASES), "label", num_workers=workers)
                times.append(time.perf_counter() - t)
            results[name] = problems
            print(f"{name:>22}: best {min(times):.2f} s of {args.repeats} "
                  f"({1e3 * min(times) / len(records):.2f} ms per case), {len(problems)} problem(s)")
        serial, parallel = results.values()
        assert serial == parallel, "the thread pool found other problems than the serial check"
        assert len(serial) == (1 if args.bad else 0), serial
        t = time.perf_counter()
        try:
            check_images(records, list(PHASES), "label")
            print(f"check_images: passed in {time.perf_counter() - t:.2f} s")
        except ValueError as e:
            print(f"check_images: raised in {time.perf_counter() - t:.2f} s, last line:\n{str(e).splitlines()[-1]}")


if __name__ == "__main__":
    main()
