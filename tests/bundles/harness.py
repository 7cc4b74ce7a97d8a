"""Running bundles from the tests: every folder in bundles/ with configs/metadata.json, its smoke overlay,
and ``monai.bundle run`` either in this process or, where the command line itself is under test, in a
subprocess.

In-process runs execute ``python -m monai.bundle run`` exactly as the command does (``runpy`` on
``monai.bundle.__main__`` with the command line in ``sys.argv``, so fire parses it and the bundles'
``initialize`` sees the overrides it checks), from ``bundle_root`` as the working directory, with
stdout and stderr captured; the root logger's handlers, ``sys.argv`` and the working directory are
restored afterwards. They save the interpreter and import start of a subprocess (several seconds on
2 cores) per run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parent / "bundle_meta_schema.json"
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
METHODS = [(b, m.stem) for b in BUNDLES for m in sorted((b / "configs").glob("method_*.json"))]
NETWORKS = [(b, m.stem) for b in BUNDLES for m in sorted((b / "configs").glob("net_*.json"))]
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
#: epochs of the shared smoke model (two, so that a run stopped after one can be resumed to it)
SMOKE_EPOCHS = 2


def meta(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def is_segmentation(bundle: Path) -> bool:
    """Segmentation bundles declare an output of format "segmentation" in network_data_format."""
    return meta(bundle)["network_data_format"]["outputs"]["pred"]["format"] == "segmentation"


def is_generative(bundle: Path) -> bool:
    """Generative bundles (the Fitzpatrick17k VAE) declare an output of type "image": a reconstruction."""
    return meta(bundle)["network_data_format"]["outputs"]["pred"]["type"] == "image"


def size_key(bundle: Path) -> str:
    return "roi_size" if is_segmentation(bundle) else "image_size"


def input_size(bundle: Path) -> list[int]:
    """The smoke run's network input size: ``image_size`` (classification) or ``roi_size`` (segmentation)."""
    return json.loads((bundle / "configs" / "smoke.json").read_text())[size_key(bundle)]


def input_shape(bundle: Path) -> list[int]:
    channels = meta(bundle)["network_data_format"]["inputs"]["image"]["num_channels"]
    return [1, channels, *input_size(bundle)]


def weights(path: Path) -> dict:
    """The network weights of a bundle's ``model.pt`` (saved beside its run record, under ``"model"``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model", "run_record"}, sorted(ckpt)
    return ckpt["model"]


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=atol), k


def ids(params) -> list[str]:
    return [p.name if isinstance(p, Path) else f"{p[0].name}-{p[1]}" for p in params]


def config_list(bundle: Path, *names: str) -> str:
    return "[" + ",".join(f"'{n if os.path.isabs(n) else bundle / 'configs' / n}'" for n in names) + "]"


@dataclass
class Result:
    returncode: int
    output: str  # stdout and stderr together
    error: BaseException | None = None  # what stopped a run of run_bundle(..., fails=True)


class _Stream(io.TextIOBase):
    """One stream object for every in-process run's stdout and stderr, writing to the current run's
    buffer (else to ``sys.__stdout__``). Loggers that bind ``sys.stdout`` once, when first created in a
    run (MONAI's ``get_logger``, used by ``StatsHandler``), then still write to the run that is going on."""

    target: io.StringIO | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return (self.target or sys.__stdout__).write(text)

    def flush(self) -> None:
        (self.target or sys.__stdout__).flush()


_STREAM = _Stream()


def _repoint_console_handlers() -> list[tuple[logging.StreamHandler, object]]:
    """Point every logger's console handler (a StreamHandler on this process's stdout or stderr, e.g. the
    one MONAI's ``get_logger`` added when a test built a StatsHandler outside a run) at :data:`_STREAM`
    for the run; returns ``(handler, previous stream)`` pairs to restore."""
    consoles = {id(x) for x in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    loggers = [logging.getLogger()] + [x for x in logging.Logger.manager.loggerDict.values()
                                       if isinstance(x, logging.Logger)]
    out = []
    for logger in loggers:
        for h in logger.handlers:
            if type(h) is logging.StreamHandler and id(h.stream) in consoles:
                out.append((h, h.setStream(_STREAM)))
    return out


def _args(bundle: Path, root: Path, names: list[str], extra: tuple[str, ...], smoke: bool) -> list[str]:
    files = [*names, "smoke.json"] if smoke else list(names)
    return ["run", "--config_file", config_list(bundle, *files),
            "--meta_file", str(bundle / "configs" / "metadata.json"),
            "--logging_file", str(bundle / "configs" / "logging.conf"), "--bundle_root", str(root), *extra]


def run_bundle(bundle: Path, root: Path, names: list[str], *extra: str, smoke: bool = True,
               fails: bool = False) -> Result:
    """``python -m monai.bundle run`` of ``names`` (configs/ file names or absolute paths; smoke.json
    appended) with ``root`` as bundle_root, in this process. A failing run raises AssertionError with
    the end of its output; with ``fails=True`` a run must fail, and its exception is returned in
    ``Result.error`` (returncode 1, as the command's)."""
    import monai

    argv = [str(Path(monai.__file__).parent / "bundle" / "__main__.py"),
            *_args(bundle, root, names, extra, smoke)]
    buf = io.StringIO()
    log = logging.getLogger()
    handlers, level = log.handlers[:], log.level
    saved_argv, cwd = sys.argv, os.getcwd()
    try:
        sys.argv = argv
        os.chdir(root)
        _STREAM.target = buf
        repointed = _repoint_console_handlers()
        try:
            with contextlib.redirect_stdout(_STREAM), contextlib.redirect_stderr(_STREAM):
                runpy.run_module("monai.bundle", run_name="__main__", alter_sys=False)
        finally:
            for handler, stream in repointed:
                handler.setStream(stream)
    except BaseException as e:  # SystemExit from fire included
        if fails and not isinstance(e, (KeyboardInterrupt, SystemExit)):
            return Result(1, buf.getvalue(), e)
        raise AssertionError(f"monai.bundle {' '.join(argv[1:])}\n--- output ---\n{buf.getvalue()[-4000:]}") from e
    finally:
        _STREAM.target = None
        sys.argv = saved_argv
        os.chdir(cwd)
        for h in log.handlers[:]:
            if h not in handlers:
                log.removeHandler(h)
        for h in handlers:
            if h not in log.handlers:
                log.addHandler(h)
        log.setLevel(level)
    assert not fails, f"the run did not fail\n{buf.getvalue()[-3000:]}"
    return Result(0, buf.getvalue())


def run_bundle_cli(bundle: Path, root: Path, names: list[str], *extra: str, smoke: bool = True,
                   launcher: tuple[str, ...] = ("-m",), timeout: int = 900) -> subprocess.CompletedProcess:
    """The same command in a subprocess (for tests of the command line itself: exit status, last line,
    torchrun); returns the completed process without checking its status."""
    cmd = [sys.executable, *launcher, "monai.bundle", *_args(bundle, root, names, extra, smoke)]
    return subprocess.run(cmd, cwd=root, env=ENV, capture_output=True, text=True, timeout=timeout)


def last_val_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if "Metrics -- val_" in ln]
    assert lines, output[-2000:]
    return lines[-1].split("Metrics -- ", 1)[1].strip()


def refused(bundle: Path, root: Path, names: list[str], monkeypatch, smoke: bool = True, **overrides) -> str:
    """The message of the :class:`~fairmonai.bundle_run.BundleRunError` that stops ``initialize`` of these
    configs, run in this process as ``monai.bundle run`` would run them (its command line in ``sys.argv``)."""
    from monai.bundle import ConfigWorkflow

    from fairmonai.bundle_run import BundleRunError

    files = [str(bundle / "configs" / n) for n in ([*names, "smoke.json"] if smoke else names)]
    overrides = {"bundle_root": str(root), **overrides}
    argv = [str(Path(sys.modules["monai"].__file__).parent / "bundle" / "__main__.py"), "run", "--config_file",
            "[" + ",".join(f"'{f}'" for f in files) + "]",
            *[x for k, v in overrides.items() for x in (f"--{k}", json.dumps(v) if not isinstance(v, str) else v)]]
    monkeypatch.setattr(sys, "argv", argv)
    wf = ConfigWorkflow(config_file=files, meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False,
                        workflow_type=None, **overrides)
    with pytest.raises(Exception) as info:
        wf.initialize()
    err = info.value
    while err is not None and not isinstance(err, BundleRunError):
        err = err.__cause__ or err.__context__
    assert err is not None, f"not refused by a BundleRunError: {info.value!r}"
    return str(err)
