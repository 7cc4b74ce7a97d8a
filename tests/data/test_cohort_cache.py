"""ensure_cohort: build a synthetic cohort once, reuse it for the same request, rebuild otherwise."""

import json
import os
import tempfile

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import fairmonai.data.synth as synth
from fairmonai.data import load_manifest
from fairmonai.data.cohort_cache import REQUEST_NAME, cohort_request, ensure_cohort

TINY = {"n": 6, "shape": (16, 16, 24)}


@pytest.fixture
def builds(monkeypatch):
    """Count the calls of make_cohort (still building the cohort)."""
    calls = []
    original = synth.make_cohort

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(synth, "make_cohort", spy)
    return calls


def _mtimes(d):
    return {p.name: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


def test_second_call_reuses(tmp_path, builds):
    d = tmp_path / "oct"
    m = ensure_cohort("oct_glaucoma", d, seed=3, **TINY)
    assert m == str(d / "manifest.csv") and isinstance(m, str)
    assert len(load_manifest(m, "oct_glaucoma")) == 6
    assert json.loads((d / "cohort.json").read_text())["seed"] == 3
    before = _mtimes(d)
    # the same request, spelled differently (list for tuple, a None knob = the default): reused
    assert ensure_cohort("oct_glaucoma", str(d), seed=3, n=6, shape=[16, 16, 24], prevalence=None) == m
    assert _mtimes(d) == before
    assert len(builds) == 1


@pytest.mark.parametrize("change", [{"cue_strength": 1.0}, {"n": 7}, {"seed": 4}])
def test_changed_request_rebuilds(tmp_path, builds, change):
    d = tmp_path / "oct"
    ensure_cohort("oct_glaucoma", d, seed=3, **TINY)
    request = {"seed": 3, **TINY, **change}
    m = ensure_cohort("oct_glaucoma", d, **request)
    assert len(builds) == 2
    cohort = json.loads((d / "cohort.json").read_text())
    assert cohort["seed"] == request["seed"] and cohort["n"] == request["n"]
    assert cohort["knobs"]["cue_strength"] == request.get("cue_strength", 0.0)
    assert len(load_manifest(m, "oct_glaucoma")) == request["n"]
    assert json.loads((d / REQUEST_NAME).read_text())["knobs"] == cohort_request(
        "oct_glaucoma", **request)["knobs"]
    ensure_cohort("oct_glaucoma", d, **request)  # and that one is reused in turn
    assert len(builds) == 2


@pytest.mark.parametrize("damage", ["remove_cohort_json", "remove_manifest", "remove_request", "regenerated"])
def test_missing_or_foreign_files_rebuild(tmp_path, builds, damage):
    d = tmp_path / "oct"
    ensure_cohort("oct_glaucoma", d, seed=0, **TINY)
    if damage == "remove_cohort_json":
        (d / "cohort.json").unlink()
    elif damage == "remove_manifest":
        (d / "manifest.csv").unlink()
    elif damage == "remove_request":
        (d / REQUEST_NAME).unlink()
    else:  # someone rewrote the cohort with other knobs (the request record is now stale)
        synth.GENERATORS["oct_glaucoma"](d, 6, 0, shape=(16, 16, 24), cue_strength=2.0)
    ensure_cohort("oct_glaucoma", d, seed=0, **TINY)
    assert len(builds) == 2
    assert json.loads((d / "cohort.json").read_text())["knobs"]["cue_strength"] == 0.0


def test_bad_requests(tmp_path, builds):
    with pytest.raises(ValueError, match=r"knob\(s\) \['cue'\] do not apply to dataset 'oct_glaucoma'"):
        ensure_cohort("oct_glaucoma", tmp_path, cue=1.0, **TINY)
    with pytest.raises(ValueError, match="unknown dataset 'oct'"):
        ensure_cohort("oct", tmp_path, **TINY)
    assert not builds and not list(tmp_path.iterdir())
    # a bad knob value fails inside make_cohort and leaves no request record
    with pytest.raises(ValueError):
        ensure_cohort("oct_glaucoma", tmp_path / "x", cue_strength=-1.0, **TINY)
    assert not (tmp_path / "x" / REQUEST_NAME).exists()


# ---- two processes: rank 0 builds, rank 1 waits at the barrier


def _dist_worker(rank, world, init_file, out_dir, result_dir, cue_strength=0.0):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if rank != 0:
            def refuse(*args, **kwargs):
                raise AssertionError("only rank 0 builds")

            synth.make_cohort = refuse
        try:
            m = ensure_cohort("oct_glaucoma", out_dir, seed=1, cue_strength=cue_strength, **TINY)
        except Exception as e:
            with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:
                json.dump({"error": type(e).__name__, "message": str(e)}, f)
            return
        # on return the cohort is complete on every rank
        n = len(load_manifest(m, "oct_glaucoma"))
        with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"manifest": m, "n": n}, f)
    finally:
        dist.destroy_process_group()


def test_two_process_rank0_builds(tmp_path):
    out, results = tmp_path / "oct", tmp_path / "results"
    results.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_dist_worker, args=(2, init_file, str(out), str(results)), nprocs=2, join=True,
                           start_method="fork")
    got = [json.loads((results / f"rank{r}.json").read_text()) for r in range(2)]
    assert got[0] == got[1] == {"manifest": str(out / "manifest.csv"), "n": 6}


def test_two_process_rank0_failure_does_not_hang(tmp_path):
    out, results = tmp_path / "oct", tmp_path / "results"
    results.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_dist_worker, args=(2, init_file, str(out), str(results), -1.0), nprocs=2, join=True,
                           start_method="fork")
    got = [json.loads((results / f"rank{r}.json").read_text()) for r in range(2)]
    assert got[0]["error"] == "ValueError"  # make_cohort's error on rank 0
    assert got[1]["error"] == "RuntimeError" and "after rank 0 built it" in got[1]["message"]
