"""The lambda search: its input errors before any run (optuna missing, unknown method, bad range), and the
Optuna study on a stand-in for the bundle runs (a known objective of lambda): it approaches the minimum,
continues a stopped study, tries an interrupted trial's lambda again in its own folder, and never
evaluates the test split. The search on the real bundle at the smoke size is the slow test at the end."""

import json
import math
import sys
from pathlib import Path

import pytest

from fairmonai.experiments.__main__ import main
from fairmonai.experiments.lambda_search import OPTUNA_MISSING_MSG, OptunaMissing, search_lambda, validation_row

ISIC = Path(__file__).resolve().parents[2] / "bundles" / "isic2020_fairness_losses"


def test_without_optuna_the_error_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(OptunaMissing, match=r"pip install 'fairmonai\[search\]'"):
        search_lambda(ISIC, tmp_path, method="iou")
    assert main(["lambda-search", str(ISIC), "--method", "iou", "--out", str(tmp_path)]) == 2
    assert OPTUNA_MISSING_MSG in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was trained


def test_inputs_checked_first(tmp_path):
    with pytest.raises(Exception, match=r"no overlay method_fami.json .*methods: \['dp_l2', 'dp_mi', 'eo_l2', "
                                        r"'eo_mi', 'iou'\]"):
        search_lambda(ISIC, tmp_path, method="fami")
    with pytest.raises(Exception, match=r"0 < low < high, got \[10.0, 1.0\]"):
        search_lambda(ISIC, tmp_path, method="iou", low=10.0, high=1.0)
    with pytest.raises(Exception, match="n_trials must be an integer >= 1, got 0"):
        search_lambda(ISIC, tmp_path, method="iou", n_trials=0)
    with pytest.raises(Exception, match="evaluate the run with evaluate.json --eval_split val"):
        validation_row(tmp_path)


def _fake_units(monkeypatch, calls):
    """Replace the bundle runs by a stand-in: each unit writes its validation Table 3 row, with
    sigma_IoU = (log10 lambda - log10 30)^2 (minimum at lambda 30; the baseline: 1.0)."""
    import pandas as pd

    from fairmonai.experiments import lambda_search

    def fake(bundle, out, run, echo=True):
        calls.append((run.name, run.eval_splits, dict(run.overrides)))
        lam = run.overrides.get("fair_lambda")
        sigma = 1.0 if lam is None else (math.log10(lam) - math.log10(30.0)) ** 2
        d = Path(out) / run.name / "eval" / "report_val"
        d.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"sigma_iou": sigma, "accuracy": 0.8, "auc": 0.7, "balanced_accuracy": 0.6}]).to_csv(
            d / "table3.csv", index=False)
        return {}

    monkeypatch.setattr(lambda_search, "run_bundle_unit", fake)


def test_search_approaches_the_minimum_and_continues_a_stopped_study(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    calls = []
    _fake_units(monkeypatch, calls)
    first = search_lambda(ISIC, tmp_path, method="iou", n_trials=12, echo=False)
    assert [c[0] for c in calls][0] == "baseline" and all(c[1] == ("val",) for c in calls)  # never the test split
    assert len(calls) == 13 and first["n_trials"] == 12
    table = __import__("pandas").read_csv(tmp_path / "search.csv")
    assert len(table) == 12 and table["fair_lambda"].between(0.1, 1000).all()
    # the objective is the written sigma_IoU; the best trial is its minimum, and TPE gets within a factor 3 of 30
    assert table["sigma_iou"].tolist() == pytest.approx([(math.log10(x) - math.log10(30)) ** 2 for x in table["fair_lambda"]])
    assert first["best_fair_lambda"] == pytest.approx(table.loc[table["sigma_iou"].idxmin(), "fair_lambda"])
    assert 10 < first["best_fair_lambda"] < 90
    assert first["baseline"]["sigma_iou"] == 1.0
    assert (tmp_path / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each trial fine-tunes the search's baseline, in a folder named by its lambda
    for name, _, o in calls[1:]:
        assert o["baseline_ckpt"] == str(tmp_path / "baseline" / "models" / "model.pt") and o["seed"] == 0
        assert name == f"lambda_{o['fair_lambda']:.10g}"
    # a second call with 14 trials runs 2 more (the baseline unit is called again and finds itself done)
    calls.clear()
    again = search_lambda(ISIC, tmp_path, method="iou", n_trials=14, echo=False)
    assert [c[0] for c in calls][0] == "baseline" and len(calls) == 3 and again["n_trials"] == 14
    assert json.loads((tmp_path / "search.json").read_text())["n_trials"] == 14


def test_an_interrupted_trial_is_tried_again_with_its_lambda(tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    calls = []
    _fake_units(monkeypatch, calls)
    study = optuna.create_study(study_name="lambda_iou", storage=f"sqlite:///{tmp_path / 'search.db'}",
                                direction="minimize")
    study.ask({"fair_lambda": optuna.distributions.FloatDistribution(0.1, 1000, log=True)})  # left RUNNING
    stale = study.trials[0].params["fair_lambda"]
    result = search_lambda(ISIC, tmp_path, method="iou", n_trials=2, echo=False)
    names = [c[0] for c in calls]
    assert names[1] == f"lambda_{stale:.10g}" and len(names) == 3  # the stale lambda first, then one new draw
    assert result["n_trials"] == 2
    calls.clear()
    search_lambda(ISIC, tmp_path, method="iou", n_trials=2, echo=False)  # nothing left: only the baseline unit
    assert [c[0] for c in calls] == ["baseline"]


@pytest.mark.slow
def test_search_on_the_smoke_bundle(tmp_path):
    """Two trials on the real bundle at the smoke size: each trial's sigma_IoU is its unit's validation Table 3."""
    pytest.importorskip("optuna")
    import pandas as pd

    result = search_lambda(ISIC, tmp_path, method="iou", n_trials=2, overlays=["smoke.json"],
                           overrides={"epochs": 1}, echo=False)
    table = pd.read_csv(tmp_path / "search.csv")
    assert len(table) == 2 and result["n_trials"] == 2
    for _, row in table.iterrows():
        unit = pd.read_csv(tmp_path / f"lambda_{row['fair_lambda']:.10g}" / "eval" / "report_val" / "table3.csv")
        assert row["sigma_iou"] == pytest.approx(unit["sigma_iou"].iloc[0])
    assert not list(tmp_path.glob("*/eval/report_test"))
