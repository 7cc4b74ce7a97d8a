"""The lambda search's input errors, before any run: optuna missing (an optional extra), unknown method, bad range.

The search itself needs optuna, which the test environment does not install; it is not run here."""

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
