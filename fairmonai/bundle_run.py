"""What a bundle run knows about itself, and the checks that keep a run from succeeding on the wrong thing.

A bundle is run as ``python -m monai.bundle run --config_file "[...]" --key value ...``. MONAI merges
the config files and then sets every ``--key value`` pair into the merged config; a key that no file
defines is added silently, so ``--manfest /data/real.csv`` trains on the synthetic cohort and exits
0. This module reads the run's own command line (``sys.argv`` of the ``monai.bundle run`` process,
``torchrun`` included) and gives the bundles' ``initialize`` steps three checks:

* :func:`check_training_run`: every override key is defined by the merged configs (else an error
  naming the key and the closest defined ids), and a folder holding a finished ``model.pt`` is not
  trained into unless ``overwrite`` or ``resume`` is set;
* :func:`check_finetune_start`: a fine-tuning run's starting model (e.g. the ISIC bundle's baseline)
  exists, carries a record, was trained on this run's manifest (the same split) and with the same
  network and input ids;
* :func:`check_evaluation_run` and :func:`check_inference_run`: the model file carries a
  :class:`RunRecord` (written beside the weights by the training run), and the ids that define the
  model (network, input size, intensity scaling, loss: the bundle's ``model_record_ids``) are the same
  in this run as in the run that trained it, else an error naming the id and both values; evaluation
  says when its manifest differs from training's.

The record is what :class:`RunRecord` saves into ``model.pt`` (key ``"run_record"``) and into
``run_record.json`` beside it: the config files, the overrides, a hash of the merged config, the
manifest's path and hash, the code version, and the raw config of each ``model_record_ids`` entry
(``@id`` references to plain values expanded, so ``"img_size": "@image_size"`` records the size).

Override rules (:func:`unknown_overrides`): a key must be an id of the merged configs (``#`` or
``::`` paths included); a new key inside an existing *component* (a dict with ``_target_``) is allowed,
being an extra constructor argument; ``+key`` is left alone (MONAI's merge syntax); the arguments of
``monai.bundle run`` itself (``config_file``, ``meta_file``, ...) are not overrides.

When the process was not started by ``monai.bundle run`` (a :class:`~monai.bundle.ConfigWorkflow`
built in Python), no command line is known: the override check is skipped and the record says so.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = [
    "BundleRunError",
    "CommandLine",
    "RunRecord",
    "bundle_command_line",
    "check_evaluation_run",
    "check_finetune_start",
    "check_inference_run",
    "check_training_run",
    "file_sha256",
    "load_run_record",
    "recorded_manifest",
    "unknown_overrides",
]

logger = logging.getLogger(__name__)

#: arguments of ``monai.bundle run`` / ``create_workflow`` / ``ConfigWorkflow`` that are not config overrides.
RUN_ARGUMENTS = frozenset({
    "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
    "workflow_name", "workflow_type", "properties_path",
})
RECORD_KEY = "run_record"
RECORD_FILE = "run_record.json"
RECORD_FORMAT = 1


class BundleRunError(InputError):
    """A bundle run that would succeed on the wrong thing: an unknown override, a mismatched or unrecorded model."""


@dataclass
class CommandLine:
    """A ``monai.bundle run`` command line: config and meta files, and the override pairs as fire parses them."""

    config_files: list[str]
    meta_files: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _parse_fire_args(args: Sequence[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / ``--flag`` pairs as python-fire reads them (``-`` in a key is ``_``)."""
    from fire.parser import DefaultParseValue

    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and len(a) > 2:
            body = a[2:]
            if "=" in body:
                key, raw = body.split("=", 1)
                value = DefaultParseValue(raw)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                key, value = body, DefaultParseValue(args[i + 1])
                i += 1
            else:
                key, value = body, True
            out[key.replace("-", "_")] = value
        i += 1
    return out


def bundle_command_line(argv: Sequence[str] | None = None) -> CommandLine | None:
    """The command line of this process when it is ``python -m monai.bundle run ...``, else ``None``.

    ``args_file`` (MONAI's JSON/YAML of default arguments) is read and the command line wins over it,
    as in MONAI.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or Path(argv[0]).parts[-3:] != ("monai", "bundle", "__main__.py"):
        return None
    rest = argv[1:]
    if "run" not in rest:
        return None
    args = _parse_fire_args(rest[rest.index("run") + 1:])
    if "args_file" in args:
        from monai.bundle import ConfigParser

        args = {**ConfigParser.load_config_file(str(args["args_file"])), **args}
    config_files = _as_list(args.get("config_file"))
    meta_files = _as_list(args.get("meta_file"))
    if not meta_files and config_files:  # ConfigWorkflow's default
        meta_files = [str(Path(config_files[0]).parent / "metadata.json")]
    overrides = {k: v for k, v in args.items() if k not in RUN_ARGUMENTS}
    return CommandLine(config_files, [m for m in meta_files if Path(m).is_file()], overrides)


def _merged_parser(command: CommandLine, with_overrides: bool):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=command.config_files)
    if command.meta_files:
        parser.read_meta(f=command.meta_files)
    if with_overrides:
        parser.update(pairs=command.overrides)
    return parser


def _all_ids(config: Any, prefix: str = "") -> list[str]:
    ids = []
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for k, v in items:
        i = f"{prefix}#{k}" if prefix else str(k)
        ids.append(i)
        ids.extend(_all_ids(v, i))
    return ids


def unknown_overrides(config: Mapping, overrides: Mapping[str, Any]) -> dict[str, list[str]]:
    """The override keys that ``config`` (a merged raw config) does not define, each with the closest ids.

    Args:
        config: the merged configs (and metadata under ``_meta_``) before the overrides.
        overrides: ``{key: value}`` as passed to ``monai.bundle run``.

    Returns:
        ``{key: [closest defined ids]}`` for each key that is neither a defined id (``#`` or ``::``
        separated), nor a new key inside an existing component (a dict with ``_target_``), nor a
        ``+key`` merge, nor an argument of ``monai.bundle run``. Empty when all are fine.
    """
    ids = _all_ids(config)
    bad = {}
    for key in overrides:
        if key in RUN_ARGUMENTS or key.startswith("+"):
            continue
        path = key.replace("::", "#").split("#")
        node: Any = config
        ok = True
        for depth, part in enumerate(path):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
                node = node[int(part)]
            else:  # the last part may add an argument to an existing component
                ok = depth == len(path) - 1 and depth > 0 and isinstance(node, dict) and "_target_" in node
                break
        if not ok:
            name = "#".join(path)
            bad[name] = difflib.get_close_matches(name, ids, n=3, cutoff=0.6) or \
                difflib.get_close_matches(path[-1], [i for i in ids if "#" not in i], n=3, cutoff=0.5)
    return bad


def _check_overrides(command: CommandLine | None) -> None:
    if command is None or not command.overrides:
        return
    bad = unknown_overrides(_merged_parser(command, with_overrides=False).get(), command.overrides)
    if bad:
        names = ", ".join(Path(f).name for f in command.config_files)
        lines = [f"--{k}: not defined by the configs [{names}]"
                 + (f"; closest defined: {', '.join(v)}" if v else "") for k, v in bad.items()]
        raise BundleRunError("unknown override(s), nothing was run: " + "; ".join(lines)
                          + " (a new key needs a config file that defines it)")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _expand(parser, value: Any, depth: int = 0) -> Any:
    """Raw config ``value`` with whole-string ``@id`` references replaced by the referenced raw config."""
    if depth > 8:
        return value
    if isinstance(value, str) and value.startswith("@") and value[1:] in parser:
        return _expand(parser, parser[value[1:]], depth + 1)
    if isinstance(value, dict):
        return {k: _expand(parser, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(parser, v, depth + 1) for v in value]
    return value


def _model_ids(parser) -> list[str]:
    ids = parser.get("model_record_ids", []) or []
    return [str(i) for i in ids]


def _identity(parser, ids: Sequence[str]) -> dict[str, Any]:
    return {i: _expand(parser, parser[i]) for i in ids if i in parser}


def file_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes, ``None`` when it is not a file."""
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> str:
    """``fairmonai`` version, with the git commit (``+dirty`` when the work tree has changes) of a checkout."""
    from . import __version__

    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = dirty = ""
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}" if sha else __version__


class RunRecord:
    """What produced a model, saved with it: a ``save_dict`` entry of the final checkpoint.

    ``state_dict()`` returns a JSON-able dict: ``format``, ``created`` (UTC, ISO 8601),
    ``command_line`` (``{"config_files", "overrides"}`` or ``None`` when not run by ``monai.bundle run``),
    ``config_sha256`` (of the merged config with overrides, canonical JSON), ``manifest`` (absolute
    path) and ``manifest_sha256``, ``code_version``, ``monai_version``, ``torch_version`` and
    ``model`` (``{id: raw config}`` for the merged config's ``model_record_ids``). With ``save_dir`` it
    also writes ``run_record.json`` there each time it is saved, for a person (and an export) to read.

    ``resolved`` (optional) records values the run computed from its data, under ``"resolved"``, e.g. the
    preprocessing settings with ``crop_size="auto"`` replaced by the mean box of the training split:
    comparisons between runs keep using ``model`` (the raw config, which a later run reproduces), and
    an inference run, which has no training split, reads them with :func:`recorded_value`.

    Args:
        manifest: the manifest the run trained on (a path).
        save_dir: folder for ``run_record.json`` (the model folder); ``None``: no file.
        argv: the command line to record (default ``sys.argv``; for tests).
        resolved: ``{id: value}`` computed by the run (JSON-able).
    """

    def __init__(self, manifest: str | os.PathLike | None = None, save_dir: str | os.PathLike | None = None,
                 argv: Sequence[str] | None = None, resolved: Mapping[str, Any] | None = None) -> None:
        import monai
        import torch

        command = bundle_command_line(argv)
        record: dict[str, Any] = {"format": RECORD_FORMAT, "command_line": None, "config_sha256": None, "model": {}}
        if command is not None:
            parser = _merged_parser(command, with_overrides=True)
            record["command_line"] = {"config_files": [str(Path(f).resolve()) for f in command.config_files],
                                      "overrides": command.overrides}
            record["config_sha256"] = hashlib.sha256(_canonical(parser.get()).encode()).hexdigest()
            record["model"] = _identity(parser, _model_ids(parser))
        manifest_path = None if manifest is None else str(Path(manifest).resolve())
        record.update(manifest=manifest_path, manifest_sha256=None if manifest is None else file_sha256(manifest),
                      code_version=code_version(), monai_version=monai.__version__, torch_version=torch.__version__)
        if resolved:
            record["resolved"] = dict(resolved)
        # plain JSON types only: MONAI's CheckpointLoader reads model.pt with torch.load(weights_only=True)
        self.record = json.loads(json.dumps(record, default=str))
        self.save_dir = None if save_dir is None else Path(save_dir)

    def state_dict(self) -> dict[str, Any]:
        record = dict(self.record, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.save_dir / (RECORD_FILE + ".tmp")
            tmp.write_text(json.dumps({"fairmonai_run_record": record}, indent=2, default=str))
            tmp.replace(self.save_dir / RECORD_FILE)
        return record

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.record = dict(state)


def load_run_record(ckpt_path: str | os.PathLike) -> dict[str, Any]:
    """The :class:`RunRecord` saved in a model file.

    Raises:
        BundleRunError: no file, or a file without a record (trained before records existed, or
            not by the bundle's ``train.json``), naming the file.
    """
    import torch

    p = Path(ckpt_path)
    if not p.is_file():
        raise BundleRunError(f"no model file {p}: train first (train.json), or pass --ckpt_path")
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    record = ckpt.get(RECORD_KEY) if isinstance(ckpt, Mapping) else None
    if not isinstance(record, Mapping):
        raise BundleRunError(f"{p} carries no run record (what configs, overrides and manifest trained it), so "
                          "nothing can check that this run matches it: retrain it with this version's train.json")
    return dict(record)


def recorded_value(ckpt_path: str | os.PathLike, key: str) -> Any:
    """The value of config id ``key`` a model was trained with: the run's resolved value (``record["resolved"]``,
    e.g. a crop size computed from the training split) when it recorded one, else its raw config
    (``record["model"]``).

    Raises:
        BundleRunError: no record, or ``key`` is in neither part (naming what the record holds).
    """
    record = load_run_record(ckpt_path)
    for part in ("resolved", "model"):
        if key in (record.get(part) or {}):
            return record[part][key]
    raise BundleRunError(f"the run record of {ckpt_path} holds no '{key}' (it records {sorted(record.get('model') or {})})")


def recorded_manifest(ckpt_path: str | os.PathLike) -> str:
    """The manifest a model was trained on, from its record: what evaluation reads unless told another."""
    record = load_run_record(ckpt_path)
    if not record.get("manifest"):
        raise BundleRunError(f"{ckpt_path}'s run record names no manifest: pass --manifest")
    return str(record["manifest"])


def _compare_model(record: Mapping[str, Any], ckpt_path, command: CommandLine | None, what: str,
                   ids: Sequence[str] | None = None) -> None:
    """Raise naming each of ``ids`` (default: this run's ``model_record_ids``) whose config differs from the record's."""
    if command is None:
        logger.warning("%s: not run by 'monai.bundle run', so the model's configs are not compared with %s's",
                       ckpt_path, what)
        return
    if record.get("command_line") is None:
        logger.warning("%s was not trained by 'monai.bundle run': its configs are not recorded and cannot be "
                       "compared", ckpt_path)
        return
    parser = _merged_parser(command, with_overrides=True)
    now = _identity(parser, _model_ids(parser) if ids is None else ids)
    trained = record.get("model", {})
    mismatched = [i for i in now if i in trained and _canonical(now[i]) != _canonical(trained[i])]
    missing = [i for i in now if i not in trained]
    if mismatched or missing:
        files = [Path(f).name for f in record["command_line"]["config_files"]]
        overrides = record["command_line"].get("overrides") or {}
        parts = [f"{i}: trained with {_canonical(trained[i])}, this {what} has {_canonical(now[i])}" for i in mismatched]
        parts += [f"{i}: not in the model's record" for i in missing]
        raise BundleRunError(
            f"{ckpt_path} was trained with other settings than this {what} ({'; '.join(parts)}). It was trained "
            f"with configs {files}" + (f" and overrides {overrides}" if overrides else "")
            + f": run the {what} with the same network, input and method configs")


def check_training_run(ckpt_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                       argv: Sequence[str] | None = None) -> None:
    """Before training: the overrides are defined ids, and the model folder holds no finished model.

    Args:
        ckpt_dir: the run's model folder.
        resume: the run continues from its per-epoch checkpoint (a finished ``model.pt`` may exist).
        overwrite: replace a finished model: ``model.pt`` and ``run_record.json`` are removed now, so a
            run that then fails leaves no model of another run under that name.
        argv: the command line (default ``sys.argv``; for tests).

    Raises:
        BundleRunError: an unknown override (naming it and the closest ids); ``model.pt`` exists and
            neither ``resume`` nor ``overwrite`` is set.
    """
    _check_overrides(bundle_command_line(argv))
    final = Path(ckpt_dir) / "model.pt"
    if final.is_file() and not resume:
        if not overwrite:
            raise BundleRunError(f"{final} holds a finished model: pass --overwrite True to replace it, --resume True "
                              "to continue its run, or another --bundle_root")
        logger.warning("overwrite: removing the finished model %s before training", final)
        final.unlink()
        (Path(ckpt_dir) / RECORD_FILE).unlink(missing_ok=True)


def check_training_batches(loader, n_cases: int | None = None) -> None:
    """Before training: the training loader yields at least one batch (per process under DDP).

    A loader with ``drop_last`` drops an incomplete batch; a training part smaller than one batch then
    runs no step, and MONAI's trainer finishes with only a warning and no ``model.pt`` (exit status 0).
    Under DDP each process gets ``ceil(n_cases / world_size)`` cases (``DistributedSampler`` pads).

    Args:
        loader: the training data loader (its ``len`` is its batches per epoch; one without a length is
            not checked).
        n_cases: cases in the training part, for the message.

    Raises:
        BundleRunError: the loader yields no batch, naming the cases, the batch size and the fix.
    """
    import torch.distributed as dist

    try:
        if len(loader) > 0:
            return
    except TypeError:
        return
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    n = int(n_cases) if n_cases is not None else None
    if n == 0:
        raise BundleRunError("the training part has no cases: check the manifest's split and fold columns")
    batch_size = getattr(loader, "batch_size", None)
    if n is None or batch_size is None:
        raise BundleRunError(f"the training loader yields no batch{'' if n is None else f' from {n} cases'}: no "
                             "training step would run and no model would be written")
    per_process = math.ceil(n / world)
    where = f" ({per_process} per process over {world})" if world > 1 else ""
    raise BundleRunError(f"the training part has {n} cases{where}, fewer than one batch of {batch_size}; the "
                         "loader drops an incomplete batch (drop_last), so no training step would run and no "
                         f"model would be written: pass --batch_size {per_process} or less, or use more cases")


def check_evaluation_run(ckpt_path: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
                         argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Before evaluation: overrides defined, the model recorded and trained with this run's model ids.

    Logs a warning when ``manifest`` is not the file (path or content) the model was trained on.

    Returns:
        the model's record.
    """
    record = check_inference_run(ckpt_path, argv=argv, what="evaluation")
    if manifest is not None:
        trained_path, trained_hash = record.get("manifest"), record.get("manifest_sha256")
        now_path, now_hash = str(Path(manifest).resolve()), file_sha256(manifest)
        if trained_hash != now_hash or trained_path != now_path:
            logger.warning("evaluation manifest %s (sha256 %s) differs from the one %s was trained on: %s (sha256 %s)",
                           now_path, (now_hash or "missing")[:12], ckpt_path, trained_path,
                           (trained_hash or "unknown")[:12])
        else:
            logger.info("evaluation manifest is the training manifest %s (sha256 %s)", now_path, now_hash[:12])
    return record


def check_inference_run(ckpt_path: str | os.PathLike, *, argv: Sequence[str] | None = None,
                        what: str = "inference") -> dict[str, Any]:
    """Before inference: overrides defined, the model recorded and trained with this run's model ids.

    Args:
        ckpt_path: the model file.
        argv: the command line (default ``sys.argv``; for tests).
        what: the run's name in messages.

    Returns:
        the model's record.
    """
    command = bundle_command_line(argv)
    _check_overrides(command)
    record = load_run_record(ckpt_path)
    _compare_model(record, ckpt_path, command, what)
    return record


def check_finetune_start(ckpt_path: str | os.PathLike | None, *, ids: Sequence[str], manifest: str | os.PathLike,
                         argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Before a fine-tuning run: its starting model is a finished, recorded model of the same network and
    input, trained on the same manifest.

    The training run's own checks (:func:`check_training_run`) still apply; this adds those of the model it
    starts from. ``ids`` are the config ids that must be equal in the starting model's record and in this
    run (network and input, not the loss or the schedule, which the fine-tuning changes). The manifest
    must be the same file content (hash): a model trained on another split would have seen this run's
    validation or test cases.

    Args:
        ckpt_path: the starting model (``model.pt`` of the earlier run), or ``None`` (not set).
        ids: the config ids to compare.
        manifest: this run's manifest.
        argv: the command line (default ``sys.argv``; for tests).

    Returns:
        the starting model's record.

    Raises:
        BundleRunError: ``ckpt_path`` unset or not a file, a model without a record, another manifest, an id
            that differs (both values named).
    """
    if ckpt_path is None:
        raise BundleRunError("baseline_ckpt is not set: this run fine-tunes a trained model; train the baseline "
                             "(train.json, --bundle_root DIR) and pass --baseline_ckpt DIR/models/model.pt")
    if not Path(ckpt_path).is_file():
        raise BundleRunError(f"baseline_ckpt: no model file {ckpt_path}: train the baseline (train.json, "
                             "--bundle_root DIR) and pass --baseline_ckpt DIR/models/model.pt")
    record = load_run_record(ckpt_path)
    trained_hash, now_hash = record.get("manifest_sha256"), file_sha256(manifest)
    if trained_hash != now_hash:
        raise BundleRunError(
            f"baseline_ckpt {ckpt_path} was trained on manifest {record.get('manifest')} (sha256 "
            f"{(trained_hash or 'unknown')[:12]}), this run's is {Path(manifest).resolve()} (sha256 "
            f"{(now_hash or 'missing')[:12]}): fine-tune on the manifest (and split) the baseline was trained on")
    _compare_model(record, ckpt_path, bundle_command_line(argv), "fine-tuning", ids=ids)
    return record
