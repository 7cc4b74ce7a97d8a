"""Hänel et al.'s search for the fairness loss weight lambda, with Optuna (an optional extra).

The paper chooses each loss's weight by a hyperparameter search and shows the result as its Figure 3
(lambda against sigma_IoU and accuracy). Here, for one method overlay of a bundle whose
``method_*.json`` fine-tunes ``train.json``'s baseline (the ISIC bundle):

1. the baseline is trained once, as the unit ``baseline`` of the output folder, and evaluated on the
   validation split;
2. each trial draws ``fair_lambda`` log-uniformly from ``[low, high]`` (default ``[0.1, 1000]``)
   with Optuna's TPE sampler (seeded), fine-tunes the baseline with it (unit ``lambda_<value>``,
   ``--baseline_ckpt`` the baseline's ``model.pt``) and evaluates the **final** model on the
   validation split; the objective, minimised, is its sigma_IoU (Table 3's ``sigma_iou``);
3. the trials are kept in an Optuna study on SQLite storage (``<out>/search.db`` by default), so a
   stopped search continues: a finished trial is not run again, and a trial that was interrupted
   (left ``RUNNING`` by a killed process) or failed is tried again first with its own lambda, in its
   own unit folder (named by lambda, ``lambda_<value>``), whose training
   :func:`~fairmonai.experiments.runs.run_bundle_unit` resumes from its last checkpoint. One search
   process per study: a second process on the same storage would take the first's running trials
   for interrupted ones;
4. ``search.csv`` (one row per finished trial: lambda, sigma_IoU, accuracy, AUC, balanced accuracy),
   ``search.json`` (the best lambda, the baseline's row, the settings) and ``figure3.png``
   (:func:`plot_lambda_search`: Figure 3 plus AUC and balanced accuracy, the baseline as horizontal
   lines) are written to the output folder. The best lambda is the default to put in the overlay.

The test split is never touched by the search.

Optuna is imported only here, when a search runs; without it :func:`search_lambda` raises
:class:`OptunaMissing` naming the extra (``pip install 'fairmonai[search]'``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..errors import InputError
from .runs import BundleRun, check_bundle, run_bundle_unit

__all__ = [
    "OptunaMissing",
    "OPTUNA_MISSING_MSG",
    "SEARCH_COLUMNS",
    "search_lambda",
    "plot_lambda_search",
    "validation_row",
    "unit_name",
]

OPTUNA_MISSING_MSG = (
    "the lambda search needs optuna, an optional extra of fairmonai: pip install 'fairmonai[search]' "
    "(optuna==5.0.0); training, evaluation and inference do not need it"
)
#: the columns of ``search.csv`` (Table 3's names)
SEARCH_COLUMNS = ("trial", "fair_lambda", "sigma_iou", "accuracy", "auc", "balanced_accuracy")


class OptunaMissing(InputError):
    """The lambda search was asked for without the optional package optuna."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise OptunaMissing(OPTUNA_MISSING_MSG) from None
    return optuna


def unit_name(fair_lambda: float) -> str:
    """The unit folder of the trial with this lambda (10 significant digits: one folder per lambda, so an
    interrupted trial tried again resumes its own training)."""
    return f"lambda_{float(fair_lambda):.10g}"


def validation_row(unit_dir: str | Path) -> dict:
    """The Table 3 row (``eval/report_val/table3.csv``) of a unit evaluated on the validation split.

    Raises:
        InputError: no such file (the unit was not evaluated on ``val``).
    """
    path = Path(unit_dir) / "eval" / "report_val" / "table3.csv"
    if not path.is_file():
        raise InputError(f"no validation Table 3 {path}: evaluate the run with evaluate.json --eval_split val")
    return pd.read_csv(path).iloc[0].to_dict()


def plot_lambda_search(trials: pd.DataFrame, baseline: Mapping, path: str | Path) -> Path:
    """Figure 3 of Hänel et al. with AUC and balanced accuracy: the trials' validation values against lambda
    (log axis), left panel sigma_IoU, right panel accuracy, AUC and balanced accuracy; the baseline's
    values as dashed horizontal lines of the same colours.

    Args:
        trials: rows with ``fair_lambda`` and the metrics of :data:`SEARCH_COLUMNS`.
        baseline: the baseline's row (same metric names).
        path: the PNG to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trials.sort_values("fair_lambda")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    panels = ((left, ("sigma_iou",), "σ_IoU (lower is fairer)"),
              (right, ("accuracy", "auc", "balanced_accuracy"), "accuracy, AUC, balanced accuracy"))
    for ax, names, title in panels:
        for i, name in enumerate(names):
            colour = f"C{i}"
            ax.plot(t["fair_lambda"], t[name], "o", color=colour, label=name)
            value = baseline.get(name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                ax.axhline(float(value), color=colour, linestyle="--", linewidth=1, label=f"{name} (baseline)")
        ax.set_xscale("log")
        ax.set_xlabel("λ (fair_lambda)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def search_lambda(
    bundle: str | Path,
    out: str | Path,
    *,
    method: str,
    n_trials: int = 20,
    low: float = 0.1,
    high: float = 1000.0,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    overlays: Sequence[str] = (),
    overrides: Mapping[str, object] | None = None,
    echo: bool = True,
) -> dict:
    """Search ``fair_lambda`` of ``method_<method>.json`` (see the module docstring); return ``search.json``'s dict.

    Args:
        bundle: the bundle folder.
        out: the search's folder (units ``baseline`` and ``lambda_<value>``, the study, the results).
        method: the overlay's name without ``method_`` and ``.json`` (e.g. ``"iou"``).
        n_trials: trials wanted in the study in all (finished ones count; default 20, the paper's).
        low, high: the log-uniform range of lambda (default ``[0.1, 1000]``).
        storage: an Optuna storage URL (default ``sqlite:///<out>/search.db``).
        study_name: default ``lambda_<method>``.
        seed: the TPE sampler's seed and the runs' ``--seed``.
        overlays: more config files of the bundle for every run (e.g. ``["cpu.json"]``).
        overrides: ``--key value`` for every run.
        echo: echo the runs' epoch lines.

    Raises:
        OptunaMissing: optuna is not installed.
        InputError: an unknown method overlay, a bad range or number of trials, a bundle command that fails.
    """
    bundle = check_bundle(bundle)
    overlay = f"method_{method}.json"
    if not (bundle / "configs" / overlay).is_file():
        known = sorted(p.stem.removeprefix("method_") for p in (bundle / "configs").glob("method_*.json"))
        raise InputError(f"no overlay {overlay} in {bundle / 'configs'}; methods: {known}")
    if not (0 < low < high) or not all(math.isfinite(x) for x in (low, high)):
        raise InputError(f"the lambda range must satisfy 0 < low < high, got [{low}, {high}]")
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise InputError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    optuna = _optuna()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = {**dict(overrides or {}), "seed": seed}
    configs = tuple(overlays)
    run_bundle_unit(bundle, out, BundleRun("baseline", ("train.json", *configs), common, ("val",)), echo=echo)
    baseline = validation_row(out / "baseline")
    baseline_ckpt = str(out / "baseline" / "models" / "model.pt")

    def objective(trial) -> float:
        lam = trial.suggest_float("fair_lambda", low, high, log=True)
        name = unit_name(lam)
        unit = BundleRun(name, ("train.json", overlay, *configs),
                         {**common, "fair_lambda": lam, "baseline_ckpt": baseline_ckpt}, ("val",))
        run_bundle_unit(bundle, out, unit, echo=echo)
        row = validation_row(out / name)
        for key in SEARCH_COLUMNS[3:]:
            trial.set_user_attr(key, float(row[key]))
        return float(row["sigma_iou"])

    study = optuna.create_study(study_name=study_name or f"lambda_{method}",
                                storage=storage or f"sqlite:///{out / 'search.db'}", direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    finished = {unit_name(t.params["fair_lambda"]) for t in done}
    again: dict[str, float] = {}  # interrupted or failed trials' lambdas by unit, once each, tried before new draws
    for t in study.trials:
        if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL) and "fair_lambda" in t.params:
            name = unit_name(t.params["fair_lambda"])
            if name not in finished:
                again.setdefault(name, t.params["fair_lambda"])
    waiting = {unit_name(t.params["fair_lambda"]) for t in study.trials
               if t.state == optuna.trial.TrialState.WAITING and "fair_lambda" in t.params}
    for name, lam in list(again.items())[:max(n_trials - len(done), 0)]:
        if name not in waiting:
            study.enqueue_trial({"fair_lambda": lam})
    if len(done) < n_trials:
        study.optimize(objective, n_trials=n_trials - len(done))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trials = pd.DataFrame([{"trial": t.number, "fair_lambda": t.params["fair_lambda"], "sigma_iou": t.value,
                            **{k: t.user_attrs.get(k) for k in SEARCH_COLUMNS[3:]}} for t in done],
                          columns=list(SEARCH_COLUMNS))
    trials.to_csv(out / "search.csv", index=False)
    plot_lambda_search(trials, baseline, out / "figure3.png")
    best = study.best_trial
    result = {"method": method, "best_fair_lambda": best.params["fair_lambda"], "best_sigma_iou": best.value,
              "n_trials": len(done), "range": [low, high], "sampler": f"TPE (seed {seed})",
              "objective": "sigma_IoU of the final fine-tuned model on the validation split",
              "baseline": {k: baseline.get(k) for k in SEARCH_COLUMNS[2:]}, "overlays": list(configs),
              "overrides": {k: v for k, v in common.items()}}
    (out / "search.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
