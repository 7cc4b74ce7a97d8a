"""Post-hoc BatchNorm recalibration of finished OCT bundle runs, then the test split scored again.

For runs trained before ``bn_recalibration`` existed (or with it off): the recalibration changes no
weight and no training step (``fairmonai.handlers.batchnorm_recalibration``), so recalibrating the
final ``models/model.pt`` afterwards gives the model the switch would have produced, up to the
batch composition of the one pass (the last epoch's shuffle here). Each run folder is one
``bundle_root`` of an OCT experiment (``python -m fairmonai.experiments run bundles/oct_glaucoma_fami
fami_seeds ...``); its ``logs/train.log`` (``train.log`` in runs of the former demo script) starts with
the command that trained it, from which the configs and overrides are read back. Writes
``models/model_bnrecal.pt`` and ``eval_bnrecal/report_test/`` next to the original files (nothing
is overwritten) and prints the test metrics before and after; runs already done are only read.

    python examples/recalibrate_oct_runs.py runs/fami_seeds/dn_seed* runs/fami_seeds/fami_dn_seed*
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import subprocess
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from fairmonai.handlers import recalibrate_batchnorm

KEYS = (("auc", "metrics", "auc", "overall"), ("eom", "disparities", "eom", "value"),
        ("eodd", "disparities", "eodd", "value"), ("dp_gap", "disparities", "dp_difference", "value"))


def _training_command(root: Path) -> list[str]:
    log = root / "logs" / "train.log"
    log = log if log.is_file() else root / "train.log"
    if not log.is_file():
        raise ValueError(f"{root}: no logs/train.log (not a run folder of an experiment)")
    first = log.read_text().splitlines()[0]
    if not first.startswith("$ "):
        raise ValueError(f"{log} does not start with the training command")
    return shlex.split(first[2:])


def _overrides(cmd: list[str]) -> tuple[list[str], dict[str, str]]:
    args = cmd[cmd.index("run") + 1:]
    pairs = dict(zip(args[0::2], args[1::2]))
    files = ast.literal_eval(pairs.pop("--config_file"))
    return files, {k[2:]: v for k, v in pairs.items() if k not in ("--meta_file", "--logging_file", "--resume")}


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _metrics(report: Path) -> dict[str, float]:
    rep = json.loads(report.read_text())["attributes"]["race"]
    return {name: rep[a][b][c] for name, a, b, c in KEYS}


def recalibrate_run(root: Path) -> dict[str, dict[str, float]]:
    """Recalibrate and score one run (a run that already has its recalibrated report is only read)."""
    after = root / "eval_bnrecal" / "report_test" / "report.json"
    if after.is_file():
        return {"before": _metrics(root / "eval" / "report_test" / "report.json"), "after": _metrics(after)}
    cmd = _training_command(root)
    files, overrides = _overrides(cmd)
    parser = ConfigParser()
    parser.read_config(files)
    for k, v in overrides.items():
        parser[k] = _value(v)
    network = parser.get_parsed_content("network_def")
    saved = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(saved.get("model", saved))  # weights beside the run record, or (older runs) alone
    loader = parser.get_parsed_content("train#dataloader")
    loader.sampler.set_epoch(int(overrides["epochs"]) - 1)  # the last epoch's shuffle
    n = recalibrate_batchnorm(network, loader)
    ckpt = root / "models" / "model_bnrecal.pt"
    # keep the run record beside the weights: evaluation refuses a model file without one
    torch.save({**saved, "model": network.state_dict()} if "model" in saved else network.state_dict(), ckpt)
    evaluate = [*cmd]
    evaluate[evaluate.index("--config_file") + 1] = str([*files, str(Path(files[0]).parent / "evaluate.json")])
    evaluate += ["--ckpt_path", str(ckpt), "--output_dir", str(root / "eval_bnrecal")]
    with open(root / "evaluate_bnrecal.log", "w") as log:
        subprocess.run(evaluate, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"{root}: {n} BatchNorm layers recalibrated", flush=True)
    return {"before": _metrics(root / "eval" / "report_test" / "report.json"),
            "after": _metrics(root / "eval_bnrecal" / "report_test" / "report.json")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="bundle_root folders of finished runs")
    ap.add_argument("--out", type=Path, default=None, help="write all results to this JSON file")
    args = ap.parse_args()
    results = {str(r): recalibrate_run(r) for r in args.runs}
    print(f"{'run':<60}" + "".join(f"{k:>18}" for k, *_ in KEYS))
    for run, res in results.items():
        print(f"{run:<60}" + "".join(f"{res['before'][k]:>8.3f} -> {res['after'][k]:<6.3f}" for k, *_ in KEYS))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
