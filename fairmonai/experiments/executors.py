"""Executors: where the units of an experiment run, chosen by config, and the loop that drives them.

Two executors share one small interface (``workers``, ``submit``, ``wait``, ``close``):

* ``local`` (default): up to ``workers`` units at once on this machine. Each unit is one
  :func:`~fairmonai.experiments.runs.run_bundle_unit` call whose bundle commands are their own
  processes (``python -m monai.bundle run``); a thread per slot only waits on them, so the runner
  adds no process of its own. With GPUs, slot ``i`` gets one GPU through ``CUDA_VISIBLE_DEVICES``
  (:func:`worker_devices`; more workers than GPUs share them round-robin). Without GPUs each unit's
  commands get ``OMP_NUM_THREADS`` = cores // workers (at least 1), so N units do not each start one
  thread per core; an ``OMP_NUM_THREADS`` set by the caller is left alone.
* ``ray``: ``workers`` Ray actors, each declaring ``num_cpus`` and ``num_gpus`` (Ray sets
  ``CUDA_VISIBLE_DEVICES`` for it), run the units as actor tasks, one at a time each. An actor is one
  long-lived process, so the fork server it starts on its first unit serves all its later bundle
  commands, as the local runner's does (plain Ray tasks may each land in a fresh worker process, and
  their commands then paid the torch and MONAI imports every time). Ray is an optional extra
  (``pip install -e .[ray]``); it connects to the cluster in ``RAY_ADDRESS`` or starts a local one.
  Ray starts its worker processes at nice 15: on a machine busy with other work its units get only
  the idle CPU (measured here: importing torch and MONAI took 78 s in a Ray actor against 12 s in a
  plain process while two training jobs held both cores).

:func:`run_units` submits units, retries a unit whose bundle command failed once, prints the
estimated grid time before it starts and a progress line on every change (done / running / failed,
elapsed, ETA), and returns each unit's outcome; the order of the outcomes is the order of the units,
never the order they finished in.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .runs import BundleRun, RunFailed

__all__ = [
    "EXECUTORS",
    "RAY_MISSING",
    "ExecutorError",
    "Outcome",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "visible_gpus",
    "worker_devices",
    "estimate_seconds",
    "format_duration",
    "run_units",
]

#: Executor kinds (``--executor``, the experiment file's ``executor.kind``).
EXECUTORS = ("local", "ray")
#: The error when the ``ray`` executor is asked for and Ray is not installed.
RAY_MISSING = ("the 'ray' executor needs Ray, an optional extra of fairmonai: pip install -e .[ray] "
               "(or use --executor local)")


class ExecutorError(InputError):
    """An executor that cannot be used as asked: unknown kind, bad worker count, Ray not installed."""


@dataclass
class Outcome:
    """What became of one unit: ``status`` ``"done"``, ``"failed"`` or ``"finished before"`` (found
    finished in the output folder, not run), its attempts, wall seconds (all attempts), the failure's
    message and log."""

    name: str
    status: str
    attempts: int = 0
    seconds: float = 0.0
    device: str | None = None
    error: str | None = None
    log: str | None = None
    attempt_seconds: list[float] = field(default_factory=list)


def _call_unit(fn: Callable, bundle: Path, out: Path, unit: BundleRun, echo: bool,
               env: Mapping[str, str]) -> tuple[bool, float, str | None, str | None]:
    """Run one unit; ``(ok, seconds, error message, log)``. Only a failed bundle command
    (:class:`RunFailed`) is an outcome; any other exception (a wrong folder, a bug) propagates."""
    t0 = time.perf_counter()
    try:
        fn(bundle, out, unit, echo=echo, env=dict(env))
    except RunFailed as e:
        return False, time.perf_counter() - t0, str(e), None if e.log is None else str(e.log)
    return True, time.perf_counter() - t0, None, None


def visible_gpus() -> list[str]:
    """The GPUs a worker may be given: the ids in ``CUDA_VISIBLE_DEVICES`` when it is set, else
    ``0 .. n-1`` for the ``n`` GPUs torch sees (none without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_devices(workers: int, gpus: Sequence[str]) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each of ``workers`` local slots: slot ``i`` gets
    ``gpus[i % len(gpus)]`` (one GPU each; more workers than GPUs share them round-robin);
    ``None`` for every slot when there are no GPUs (the environment is left as it is).

    Raises:
        ExecutorError: ``workers`` below 1.
    """
    if workers < 1:
        raise ExecutorError(f"--workers must be at least 1, got {workers}")
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


class LocalExecutor:
    """Up to ``workers`` units at once on this machine, slot ``i`` on device ``devices[i]``."""

    kind = "local"

    def __init__(self, workers: int, gpus: Sequence[str] | None = None):
        self.devices = worker_devices(workers, visible_gpus() if gpus is None else gpus)
        self.workers = workers
        # CPU units share the cores: each gets its share of threads (torch reads OMP_NUM_THREADS), unless
        # the caller set OMP_NUM_THREADS already or the units run on GPUs
        self.threads = (max(1, (os.cpu_count() or 1) // workers)
                        if "OMP_NUM_THREADS" not in os.environ and all(d is None for d in self.devices) else None)
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unit")
        self._free = list(range(workers))
        self._slot: dict[cf.Future, int] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        gpus = sorted({d for d in self.devices if d is not None})
        return f"local with {self.workers} worker(s)" + (f", GPUs {','.join(gpus)}" if gpus else ", no GPU")

    def submit(self, fn: Callable, bundle: Path, out: Path, unit: BundleRun, echo: bool) -> tuple[object, str | None]:
        """Start ``unit`` on a free slot; ``(handle, device)``. The caller keeps at most ``workers`` running."""
        with self._lock:
            slot = self._free.pop(0)
        device = self.devices[slot]
        env = {} if device is None else {"CUDA_VISIBLE_DEVICES": device}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        fut = self._pool.submit(_call_unit, fn, bundle, out, unit, echo, env)
        self._slot[fut] = slot
        return fut, device

    def wait(self, handles: Sequence[object]) -> list[tuple[object, tuple]]:
        """Block until at least one of ``handles`` finished; those finished with their results."""
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)  # type: ignore[arg-type]
        out = []
        for fut in done:
            with self._lock:
                self._free.append(self._slot.pop(fut))
                self._free.sort()
            out.append((fut, fut.result()))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _ray_module():
    try:
        import ray
    except ImportError:
        raise ExecutorError(RAY_MISSING) from None
    return ray


class _RaySlot:
    """One slot of the ``ray`` executor, a Ray actor: it runs one unit at a time, and its process lives
    as long as the executor, so the fork server started on its first unit serves every later command
    of the slot (:mod:`~fairmonai.experiments.runs`)."""

    def run(self, fn: Callable, bundle: Path, out: Path, unit: BundleRun, echo: bool) -> tuple:
        return _call_unit(fn, bundle, out, unit, echo, {})


class RayExecutor:
    """Units on ``workers`` Ray actors, each with ``num_cpus=cpus_per_run`` and ``num_gpus=gpus_per_run``
    (default: 1 when the cluster has GPUs, else 0); a unit goes to a free actor.

    An actor that dies while running a unit (its node lost, killed for memory) is a failed attempt of
    that unit (retried once like a failed command) and is replaced by a new actor."""

    kind = "ray"

    def __init__(self, workers: int, cpus_per_run: float = 1, gpus_per_run: float | None = None):
        if workers < 1:
            raise ExecutorError(f"--workers must be at least 1, got {workers}")
        ray = _ray_module()
        if not ray.is_initialized():
            ray.init()  # RAY_ADDRESS if set, else a local instance
        self._ray = ray
        if gpus_per_run is None:
            gpus_per_run = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.workers, self.cpus, self.gpus = workers, cpus_per_run, gpus_per_run
        self._actor = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_restarts=0)(_RaySlot)
        self._slots = [self._actor.remote() for _ in range(workers)]
        self._free = list(range(workers))
        self._slot_of: dict[object, int] = {}

    def describe(self) -> str:
        return f"ray with {self.workers} actor(s), {self.cpus} CPU and {self.gpus} GPU each"

    def submit(self, fn: Callable, bundle: Path, out: Path, unit: BundleRun, echo: bool) -> tuple[object, str | None]:
        slot = self._free.pop(0)
        ref = self._slots[slot].run.remote(fn, bundle, out, unit, echo)
        self._slot_of[ref] = slot
        return ref, None

    def wait(self, handles: Sequence[object]) -> list[tuple[object, tuple]]:
        done, _ = self._ray.wait(list(handles), num_returns=1)
        out = []
        for ref in done:
            slot = self._slot_of.pop(ref)
            try:
                result = self._ray.get(ref)
            except self._ray.exceptions.RayActorError as e:
                result = (False, 0.0, f"the Ray actor running it died: {e}", None)
                self._slots[slot] = self._actor.remote()
            self._free.append(slot)
            self._free.sort()
            out.append((ref, result))
        return out

    def close(self) -> None:
        """Ends the actors (and with them their fork servers); a cluster is not ours to stop."""
        for actor in self._slots:
            self._ray.kill(actor)
        self._slots = []


def make_executor(kind: str, workers: int, *, cpus_per_run: float = 1, gpus_per_run: float | None = None,
                  gpus: Sequence[str] | None = None):
    """The executor ``kind`` (``local`` or ``ray``) with ``workers`` slots.

    Raises:
        ExecutorError: an unknown kind, ``workers`` below 1, or ``ray`` without Ray installed (:data:`RAY_MISSING`).
    """
    if kind not in EXECUTORS:
        raise ExecutorError(f"unknown executor '{kind}'; expected one of {list(EXECUTORS)}")
    if kind == "ray":
        return RayExecutor(workers, cpus_per_run, gpus_per_run)
    if gpus is None and gpus_per_run == 0:
        gpus = []
    return LocalExecutor(workers, gpus)


def estimate_seconds(per_run: float, workers: int, queued: int, running_elapsed: Sequence[float] = ()) -> float:
    """Seconds until ``queued`` runs and the running ones (elapsed ``running_elapsed``) are done, each
    run taking ``per_run`` seconds, on ``workers`` slots filled in order (each queued run takes the
    slot that frees first; a running run past ``per_run`` counts as ending now).

    Example: 10 s a run, 2 workers, runs at 4 s and 6 s, 3 queued: the slots free at 6 and 4 s; the
    queued runs end at 14, 16 and 24 s: 24 s.
    """
    slots = sorted([max(per_run - e, 0.0) for e in running_elapsed] + [0.0] * (workers - len(running_elapsed)))
    for _ in range(queued):
        slots[0] += per_run
        slots.sort()
    return max(slots, default=0.0)


def format_duration(seconds: float | None) -> str:
    """``h:mm:ss`` (rounded to the second), or ``unknown`` for ``None``."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def run_units(executor, fn: Callable, bundle: Path, out: Path, units: Sequence[BundleRun], *,
              finished: Sequence[bool] | None = None, per_run: float | None = None, source: str = "",
              echo: bool = True, say: Callable[[str], None] = print,
              clock: Callable[[], float] = time.perf_counter) -> tuple[list[Outcome], float]:
    """Run ``units`` on ``executor`` with ``fn`` (:func:`~fairmonai.experiments.runs.run_bundle_unit`).

    ``finished[i]`` marks units found finished in ``out`` (not run). A unit whose bundle command
    fails (:class:`RunFailed`) is run once more, first in the queue; its first log is kept as
    ``<log>.attempt1``; after a second failure it is listed with its log and the others go on.
    ``per_run`` (seconds, ``None`` if unknown, described by ``source``) gives the estimate printed
    before the start, until a unit of this call finishes; then the mean of this call's unit times.

    Returns:
        The outcomes in the order of ``units``, and the seconds the caller's thread spent waiting on
        units (the rest of its time is the runner's own).
    """
    finished = list(finished or [False] * len(units))
    outcomes = [Outcome(u.name, "finished before") if f else Outcome(u.name, "queued") for u, f in zip(units, finished)]
    queue = deque(i for i, f in enumerate(finished) if not f)
    n_before = len(units) - len(queue)
    total = None if per_run is None else estimate_seconds(per_run, executor.workers, len(queue))
    say(f"grid: {len(units)} run(s), {n_before} finished before, {len(queue)} to run on {executor.describe()}; "
        f"estimated {format_duration(total)}" + (f" ({source})" if source else ""))
    if not queue:
        return outcomes, 0.0
    echo = echo and executor.workers == 1  # parallel units' log lines would interleave; the logs have them
    t0 = clock()
    running: dict[object, tuple[int, float]] = {}
    times: list[float] = []
    waited = 0.0

    def progress(event: str) -> None:
        now = clock()
        done = sum(o.status in ("done", "finished before") for o in outcomes)
        failed = sum(o.status == "failed" for o in outcomes)
        mean = sum(times) / len(times) if times else per_run
        eta = None if mean is None else estimate_seconds(mean, executor.workers, len(queue),
                                                         [now - s for _, s in running.values()])
        say(f"progress: {done}/{len(units)} done, {len(running)} running, {failed} failed, "
            f"{len(queue)} queued; elapsed {format_duration(now - t0)}, ETA {format_duration(eta)}: {event}")

    while queue or running:
        while queue and len(running) < executor.workers:
            i = queue.popleft()
            handle, device = executor.submit(fn, bundle, out, units[i], echo)
            running[handle] = (i, clock())
            o = outcomes[i]
            o.status, o.attempts, o.device = "running", o.attempts + 1, device
            progress(f"started {units[i].name}" + (f" (attempt {o.attempts})" if o.attempts > 1 else "")
                     + (f" on GPU {device}" if device is not None else ""))
        w = clock()
        finished_now = executor.wait(list(running))
        waited += clock() - w
        for handle, (ok, seconds, error, log) in finished_now:
            i, _ = running.pop(handle)
            o = outcomes[i]
            o.seconds += seconds
            o.attempt_seconds.append(seconds)
            if ok:
                o.status, o.error, o.log = "done", None, None
                times.append(seconds)
                progress(f"done {o.name} ({seconds:.1f} s)")
            elif o.attempts < 2:
                if log is not None and Path(log).is_file():
                    Path(log).replace(f"{log}.attempt1")
                o.status = "queued"
                queue.appendleft(i)
                progress(f"{o.name} failed ({error}); retrying once")
            else:
                o.status, o.error, o.log = "failed", error, log
                progress(f"FAILED {o.name} after 2 attempts; log: {log}")
    return outcomes, waited
