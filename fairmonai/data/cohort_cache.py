"""Build a synthetic cohort once and reuse it: :func:`ensure_cohort` for bundle configs.

A bundle's ``manifest`` can be the synthetic cohort's, made on first use::

    "manifest": "$fairmonai.data.cohort_cache.ensure_cohort('oct_glaucoma', @dataset_dir, seed=@seed, **@synthetic_cohort)"

with ``"synthetic_cohort": {"n": 200, "cue_strength": 1.0, "prevalence": "Black=0.6"}``. The first run
writes the cohort with :func:`fairmonai.data.synth.make_cohort`; later runs with the same dataset,
seed and knobs find it and return its manifest without writing anything.

How a cohort is recognised: ``make_cohort`` writes ``cohort.json`` (dataset, seed and the knobs as
the generator parsed them, e.g. ``"Black=0.6"`` becomes a per-group dict) and then ``manifest.csv``.
The parsed knobs can't be compared with a request without running the generator's parsers, so
:func:`ensure_cohort` writes, after a successful build, ``cohort_request.json``: the request as
given (dataset, seed, knobs; ``None`` values and ``verbose`` left out, tuples as lists) and the
SHA-256 of the ``cohort.json`` it produced. A cohort is reused only when ``manifest.csv`` and
``cohort.json`` exist, ``cohort.json`` names the same dataset and seed, and ``cohort_request.json``
holds the same request and that file's hash (so a cohort rewritten since, e.g. by
``python -m fairmonai.data.synth`` with other knobs, is not mistaken for the requested one).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ensure_cohort", "cohort_request", "REQUEST_NAME", "MANIFEST_NAME", "COHORT_NAME"]

MANIFEST_NAME = "manifest.csv"
COHORT_NAME = "cohort.json"
REQUEST_NAME = "cohort_request.json"
IGNORED_KNOBS = ("verbose",)  # knobs that do not change what is written


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def cohort_request(dataset: str, seed: int = 0, **knobs) -> dict:
    """The normalised request ``{"dataset", "seed", "knobs"}`` :func:`ensure_cohort` records and compares.

    ``None`` knobs (the generator's default) and ``verbose`` are left out, tuples become lists,
    paths strings; the result survives a JSON round trip unchanged.
    """
    kept = {k: v for k, v in knobs.items() if v is not None and k not in IGNORED_KNOBS}
    return json.loads(json.dumps({"dataset": str(dataset), "seed": _jsonable(seed), "knobs": _jsonable(kept)},
                                 sort_keys=True))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_current(out: Path, request: Mapping) -> bool:
    """Whether ``out`` holds a complete cohort made for ``request``."""
    manifest, cohort_file, request_file = out / MANIFEST_NAME, out / COHORT_NAME, out / REQUEST_NAME
    if not (manifest.is_file() and cohort_file.is_file() and request_file.is_file()):
        return False
    cohort = _read_json(cohort_file)
    recorded = _read_json(request_file)
    if not isinstance(cohort, Mapping) or not isinstance(recorded, Mapping):
        return False
    if cohort.get("dataset") != request["dataset"] or cohort.get("seed") != request["seed"]:
        return False
    recorded = dict(recorded)
    digest = recorded.pop("cohort_sha256", None)
    return recorded == dict(request) and digest == _sha256(cohort_file)


def _build(dataset: str, out: Path, seed, knobs: Mapping, request: Mapping) -> None:
    from . import synth  # imported on use: the generators pull in the image writers

    (out / REQUEST_NAME).unlink(missing_ok=True)  # no stale record while (or if) the build fails
    synth.make_cohort(dataset, out, seed=seed, **knobs)
    record = {**request, "cohort_sha256": _sha256(out / COHORT_NAME)}
    tmp = out / f".{REQUEST_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / REQUEST_NAME)


def ensure_cohort(dataset: str, out_dir: str | os.PathLike, *, seed: int = 0, **knobs) -> str:
    """Path of ``out_dir/manifest.csv`` of a synthetic cohort, built only if not already there.

    Reuses the cohort in ``out_dir`` when it was made by this function for the same ``dataset``,
    ``seed`` and ``knobs`` (see the module docstring for how that is checked); otherwise calls
    ``fairmonai.data.synth.make_cohort(dataset, out_dir, seed=seed, **knobs)`` and records the
    request. Under ``torch.distributed`` (an initialised process group) only rank 0 checks and
    builds; the other ranks wait at a barrier, then check that the cohort is there. ``out_dir``
    must be on a file system every rank sees.

    Bundle config::

        "synthetic_cohort": {"n": 200, "cue_strength": 1.0},
        "manifest": "$fairmonai.data.cohort_cache.ensure_cohort('oct_glaucoma', @dataset_dir, seed=@seed, **@synthetic_cohort)"

    Args:
        dataset: one of :data:`fairmonai.data.synth.DATASETS`.
        out_dir: the cohort's folder (created).
        seed: the cohort seed.
        knobs: ``n`` and the dataset's knobs (:func:`fairmonai.data.synth.knobs_of`).

    Returns:
        the manifest path, as a string.

    Raises:
        ValueError: an unknown dataset or knob, a bad knob value (from ``make_cohort``).
        RuntimeError: on a rank other than 0, no cohort for the request after rank 0 finished.
    """
    import torch.distributed as dist  # here, so that importing fairmonai.data does not import torch

    from .synth import knobs_of

    allowed = knobs_of(dataset)  # ValueError naming the datasets for an unknown one
    unknown = [k for k in knobs if k not in allowed and k != "n"]
    if unknown:
        raise ValueError(f"knob(s) {unknown} do not apply to dataset '{dataset}'; its knobs are {['n', *allowed]}")
    out = Path(out_dir)
    request = cohort_request(dataset, seed, **knobs)
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    if rank == 0:
        error = None
        try:
            if not _is_current(out, request):
                _build(dataset, out, seed, knobs, request)
        except BaseException as e:  # reach the barrier first so the other ranks do not hang
            error = e
        if distributed:
            dist.barrier()
        if error is not None:
            raise error
    else:
        dist.barrier()
        if not _is_current(out, request):
            raise RuntimeError(f"rank {rank}: no cohort for {request} in {out} after rank 0 built it "
                               "(see rank 0's error; out_dir must be shared by all ranks)")
    return str(out / MANIFEST_NAME)
