"""``make demo``: train DN and FaMI-DN with the OCT glaucoma bundle on the synthetic cohort, score the
test split once, and print the two fairness reports side by side.

Each model is one ``python -m monai.bundle run`` of the OCT bundle (train.json, plus method_fami.json
for FaMI), then the same with evaluate.json; the commands are printed so a user can rerun any of them.
The bundle's folder is an argument (``bundle=``, ``--bundle`` of ``python -m fairmonai.demo``); its
default, ``bundles/oct_glaucoma_fami``, is taken from the current directory (the repository's root),
never from where the package is installed, and a missing folder is an error naming the path. Both
models share one synthetic cohort and one seed, so only the loss differs.

Demo settings (not the paper's; chosen so two models train in about ten minutes on a 2-core CPU):
volumes of 32^3, batch 16, ``demo_epochs`` epochs, SGD with learning rate 0.01 and momentum 0.9 (the
paper's 1e-4 without momentum needs its 150 epochs), BatchNorm statistics recalibrated on the training
data after each epoch (``bn_recalibration``: at this learning rate the moving averages lag the weights
and the eval-mode model predicts one class). The last model is evaluated, as in the paper.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .experiments.runs import bundle_command as experiment_command
from .experiments.runs import check_bundle

__all__ = ["ALL_MODELS", "BUNDLE", "DEMO_OVERRIDES", "bundle_command", "run_bundle_demo", "side_by_side"]

#: The OCT bundle used when none is given: relative to the current directory (the repository's layout).
BUNDLE = Path("bundles/oct_glaucoma_fami")
DEMO_OVERRIDES = {
    "image_size": "[32,32,32]",
    "batch_size": "16",
    "learning_rate": "0.01",
    "momentum": "0.9",
    "num_workers": "0",
    "penalty_log_every": "5",
    "bn_recalibration": "True",
}
MODELS = {"dn": ["train.json"], "fami_dn": ["train.json", "method_fami.json"]}
# Every network x method combination of the bundle, as overlay lists (``make demo`` trains MODELS).
ALL_MODELS = {
    f"{method}{net}": ["train.json", *([f"method_{method[:-1]}.json"] if method else []),
                       *(["net_vit.json"] if net == "vit" else [])]
    for method in ("", "fami_", "mine_", "mige_") for net in ("dn", "vit")
}


def bundle_command(configs: Sequence[str], bundle_root: Path, overrides: dict[str, str],
                   bundle: str | Path = BUNDLE) -> list[str]:
    """The ``python -m monai.bundle run`` command line for ``configs`` of the OCT bundle in folder ``bundle``."""
    return experiment_command(Path(bundle), configs, bundle_root, overrides)


def _run(cmd: list[str], log: Path, show: Sequence[str]) -> None:
    """Run a command, keep its whole output in ``log``, echo the lines containing any of ``show``."""
    print(f"  running monai.bundle (command and full output in {log})", flush=True)
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            f.write(line)
            if any(s in line for s in show):
                print("    " + line.split(" - INFO - ")[-1].rstrip(), flush=True)
        if proc.wait() != 0:
            raise RuntimeError(f"command failed (exit {proc.returncode}); see {log}")


def side_by_side(reports: dict[str, dict], attribute: str = "race") -> str:
    """A text table of two or more report.json files: AUC overall and per group, and the fairness indices."""
    names = list(reports)
    groups = reports[names[0]]["attributes"][attribute]["groups"]
    rows = [("AUC overall", [r["attributes"][attribute]["metrics"]["auc"]["overall"] for r in reports.values()])]
    for g in groups:
        rows.append((f"AUC {g}", [r["attributes"][attribute]["metrics"]["auc"]["by_group"][g] for r in reports.values()]))
    for key, label in (("es_auc", "ES-AUC"), ("eom", "EOM (1 = fair)"), ("eodd", "EOdd (0 = fair)"),
                       ("dp_difference", "DP gap"), ("eo_difference", "EO gap")):
        rows.append((label, [r["attributes"][attribute]["disparities"][key]["value"] for r in reports.values()]))
    width = max(len(n) for n in names) + 2
    lines = ["".ljust(18) + "".join(n.rjust(width + 4) for n in names)]
    for label, values in rows:
        lines.append(label.ljust(18) + "".join(("n/a" if v is None else f"{v:.3f}").rjust(width + 4) for v in values))
    return "\n".join(lines)


def run_bundle_demo(out: str | Path, *, epochs: int = 10, seed: int = 0, extra: dict[str, str] | None = None,
                    models: dict[str, list[str]] | None = None, reuse: bool = False,
                    bundle: str | Path = BUNDLE) -> dict:
    """Train and evaluate ``models`` (default DN and FaMI-DN) of the OCT bundle in folder ``bundle``
    (relative paths from the current directory); return ``{model: report dict}`` and print the
    comparison. With ``reuse``, a model that already has a test report in ``out`` is not trained again
    (the experiments use this to resume; ``make demo`` always trains).

    Raises:
        BundleNotFound: ``bundle`` is missing or has no ``configs/metadata.json``.
    """
    bundle = check_bundle(bundle)
    models = MODELS if models is None else models
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = {**DEMO_OVERRIDES, "epochs": str(epochs), "seed": str(seed),
                 "dataset_dir": str(out / "synthetic_oct"), **(extra or {})}
    t0 = time.time()
    reports = {}
    for i, (name, configs) in enumerate(models.items(), 1):
        root = out / name
        report = root / "eval" / "report_test" / "report.json"
        if not (reuse and report.is_file()):
            root.mkdir(exist_ok=True)
            print(f"[{i}/{len(models)}] {name}: train {epochs} epochs, then evaluate the last model on the test split",
                  flush=True)
            _run(bundle_command(configs, root, {**overrides, "overwrite": "True"}, bundle), root / "train.log",
                 show=("Metrics -- val_auc",))
            _run(bundle_command([*configs, "evaluate.json"], root, overrides, bundle), root / "evaluate.log",
                 show=("fairness report written",))
        reports[name] = json.loads(report.read_text())
    first = next(iter(reports.values()))
    print(f"\nTest split, {first['attributes']['race']['n_samples']} eyes, EOdd Black vs rest "
          f"({time.time() - t0:.0f} s):\n")
    print(side_by_side(reports))
    print("\nreports: " + ", ".join(str(out / n / "eval" / "report_test" / "report.md") for n in models))
    return reports
