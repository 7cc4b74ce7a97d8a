"""Time the rectal MRI preprocessing (:func:`fairmonai.data.preprocess.preprocess_cohort`) on DICOM series.

Issue 17's evidence: ``--cases`` synthetic T2w cases of ``--shape`` (default 512 x 512 x 40 at
0.4 x 0.4 x 3 mm, a clinical axial T2w grid) written as DICOM MR series (one int16 slice per file,
shuffled file names, :func:`fairmonai.data.synth.rectal_mri.write_dicom_series`), each with a
NIfTI tumour mask on the series' grid; then, with the paper's settings (1 mm resampling, 20-voxel
face-connected components, union box, 79 x 79 x 40 crop, z-score; the padding to the network's
80 x 80 x 48 is a bundle transform at load time, not part of the cache):

* ``one_core``: each case alone, one process, one SimpleITK thread, a fresh cache: reading the
  series, every step and writing the crop (the target is under 5 s per case);
* ``cohort_parallel``: the whole cohort with ``--workers`` processes into a fresh cache;
* ``cohort_cached``: the same call again: every case must come from the cache (``from_cache``).

Writing the series is not timed. The cohort's ``preprocessing.csv`` is copied to ``--csv`` (the
per-case table the issue asks for: series UID, components kept and dropped, box, padding, fraction
of the mask inside the crop, spacing, direction).

    python benchmarks/bench_rectal_preprocess.py [--cases 8] [--shape 512 512 40]
        [--spacing 0.4 0.4 3.0] [--workers 2] [--out benchmarks/results/rectal_preprocess.json]
        [--csv benchmarks/results/rectal_preprocess_dicom.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fairmonai.data.preprocess import PreprocessSettings, preprocess_cohort, read_dicom_series
from fairmonai.data.synth.rectal_mri import render_rectal_case, write_dicom_series


def write_cases(folder: Path, n: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[dict]:
    """``n`` DICOM series (shuffled file names) with a NIfTI mask each, written through SimpleITK on the
    series' own grid (read back from the files, so the mask matches the reader's geometry exactly)."""
    records = []
    for i in range(n):
        cid = f"rectal_bench_{i:03d}"
        image, mask = render_rectal_case(np.random.default_rng(i), shape, spacing, pcr=bool(i % 2))
        series_dir = folder / cid
        uid = write_dicom_series(image, series_dir, spacing=spacing, origin=(-100.0, -120.0, -40.0),
                                 shuffle_names_seed=i)
        ref = read_dicom_series(series_dir, uid, case=cid)
        m = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
        m.CopyInformation(ref)
        mask_path = folder / f"{cid}_mask.nii.gz"
        sitk.WriteImage(m, str(mask_path))
        records.append({"case_id": cid, "image": str(series_dir), "mask": str(mask_path), "series_uid": uid})
    return records


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 40))
    ap.add_argument("--spacing", type=float, nargs=3, default=(0.4, 0.4, 3.0))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/rectal_preprocess.json")
    ap.add_argument("--csv", default="benchmarks/results/rectal_preprocess_dicom.csv")
    args = ap.parse_args(argv)
    settings = PreprocessSettings()  # the paper's
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench_rectal_") as tmp:
        tmp = Path(tmp)
        print(f"writing {args.cases} DICOM series of {tuple(args.shape)} at {tuple(args.spacing)} mm ...", flush=True)
        records = write_cases(tmp / "src", args.cases, tuple(args.shape), tuple(args.spacing))
        one = []
        for rec in records:
            table, dt = timed(lambda: preprocess_cohort([rec], tmp / "one" / rec["case_id"], settings, workers=1,
                                                        progress=None))
            if table["status"].iloc[0] != "ok":
                raise RuntimeError(f"{rec['case_id']}: {table['reason'].iloc[0]}")
            one.append(dt)
            print(f"  one core: {rec['case_id']} {dt:.2f} s", flush=True)
        first, t_par = timed(lambda: preprocess_cohort(records, tmp / "cohort", settings, workers=args.workers,
                                                       progress=None))
        second, t_cached = timed(lambda: preprocess_cohort(records, tmp / "cohort", settings, workers=args.workers,
                                                           progress=None))
        if first["from_cache"].any() or not second["from_cache"].all():
            raise RuntimeError("the first cohort run must compute every case and the second read every case "
                               f"from the cache: {first['from_cache'].tolist()} / {second['from_cache'].tolist()}")
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / "cohort" / "preprocessing.csv", args.csv)
        result = {
            "cases": args.cases, "shape": list(args.shape), "spacing_mm": list(args.spacing),
            "settings": settings.key_dict(crop_size=settings.crop_size),
            "one_core_s_per_case": {"median": float(np.median(one)), "max": float(np.max(one)),
                                    "all": [round(t, 3) for t in one]},
            "cohort_parallel": {"workers": args.workers, "wall_s": round(t_par, 3),
                                "s_per_case": round(t_par / args.cases, 3)},
            "cohort_cached": {"wall_s": round(t_cached, 3), "all_from_cache": bool(second["from_cache"].all())},
            "fraction_inside": first["fraction_inside"].astype(float).round(3).tolist(),
            "components_dropped": first["components_dropped"].astype(int).tolist(),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "simpleitk": sitk.Version_VersionString(), "load_1min": os.getloadavg()[0]},
            "csv": args.csv,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("one_core_s_per_case", "cohort_parallel", "cohort_cached")}, indent=1))
    return result


if __name__ == "__main__":
    main()
