"""Penalty-curve report: TV and RMSE to a moving average, NaN rows, bad columns, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairmonai.reports.penalty_curve import (
    PenaltyCurveInputError,
    main,
    moving_average,
    read_penalty_log,
    rmse_to_moving_average,
    summarize_penalty_log,
    total_variation,
    write_penalty_curve_report,
)

SERIES = [1.0, 3.0, 2.0, 5.0, 4.0]


def _log(path: Path, values, iterations=None, **extra) -> Path:
    iterations = list(range(50, 50 * len(values) + 1, 50)) if iterations is None else iterations
    pd.DataFrame({"iteration": iterations, "epoch": 1, "n_samples": 512, "mi_knn": values, **extra,
                  "loss": 0.5}).to_csv(path, index=False)
    return path


def test_hand_computed_five_points():
    # TV = |3-1| + |2-3| + |5-2| + |4-5| = 7
    assert total_variation(SERIES) == 7.0
    # centred k=3, edges cut: MA = [2, 2, 10/3, 11/3, 4.5]; residuals -1, 1, -4/3, 4/3, -1/2
    np.testing.assert_allclose(moving_average(SERIES, 3), [2, 2, 10 / 3, 11 / 3, 4.5])
    assert rmse_to_moving_average(SERIES, 3) == pytest.approx(math.sqrt((2 + 32 / 9 + 0.25) / 5))
    # trailing k=3: MA = [1, 2, 2, 10/3, 11/3]; residuals 0, 1, 0, 5/3, 1/3
    np.testing.assert_allclose(moving_average(SERIES, 3, "trailing"), [1, 2, 2, 10 / 3, 11 / 3])
    assert rmse_to_moving_average(SERIES, 3, "trailing") == pytest.approx(math.sqrt((1 + 26 / 9) / 5))
    # even k centred: points t-1 .. t+2
    np.testing.assert_allclose(moving_average(SERIES, 4), [2, 11 / 4, 14 / 4, 11 / 3, 4.5])
    assert rmse_to_moving_average(SERIES, 1) == 0.0


def test_summary_states_sampling(tmp_path):
    s = summarize_penalty_log(_log(tmp_path / "fami.csv", SERIES), k=3)
    assert (s["tv"], s["n_points"], s["every_n_iterations"], s["sampling_regular"]) == (7.0, 5, 50, True)
    assert s["sampling"] == "every 50 iterations (iterations 50..250, 5 points)"
    assert s["label"] == "fami" and s["moving_average"] == "centred"


def test_nan_rows_dropped_and_counted(tmp_path):
    values = [1.0, float("nan"), 3.0, 2.0, float("nan"), 5.0, 4.0]
    s = summarize_penalty_log(_log(tmp_path / "a.csv", values, iterations=list(range(10, 71, 10))), k=3)
    assert s["n_nan_dropped"] == 2 and s["n_points"] == 5 and s["n_rows"] == 7
    assert s["tv"] == 7.0
    assert s["rmse_ma"] == pytest.approx(rmse_to_moving_average(SERIES, 3))
    assert s["sampling_regular"] and s["every_n_iterations"] == 10  # the log's interval, before dropping


def test_resumed_duplicates_keep_last_row(tmp_path):
    path = _log(tmp_path / "r.csv", [1.0, 3.0, 9.0, 2.0, 5.0, 4.0], iterations=[1, 2, 3, 3, 4, 5])
    frame, info = read_penalty_log(path)
    assert frame["mi_knn"].tolist() == SERIES and info["n_duplicate_iterations"] == 1


def test_bad_column_lists_columns(tmp_path):
    path = _log(tmp_path / "a.csv", SERIES)
    with pytest.raises(PenaltyCurveInputError) as e:
        read_penalty_log(path, "mi")
    assert str(e.value) == (f"{path}: no column 'mi'; the columns are "
                            "['iteration', 'epoch', 'n_samples', 'mi_knn', 'loss']")
    with pytest.raises(PenaltyCurveInputError, match="has no finite value"):
        read_penalty_log(_log(tmp_path / "n.csv", [float("nan")] * 3))


def test_report_files_and_default_labels(tmp_path):
    (tmp_path / "fami").mkdir()
    (tmp_path / "mine").mkdir()
    a = _log(tmp_path / "fami" / "penalty_curve.csv", SERIES, sfd_sq=0.1)
    b = _log(tmp_path / "mine" / "penalty_curve.csv", [0.5, 0.4, 0.45, 0.3, 0.2], dv=0.2)
    files = write_penalty_curve_report([a, b], tmp_path / "out", k=3)
    summary = json.loads(files["json"].read_text())
    assert [s["label"] for s in summary["logs"]] == ["fami/penalty_curve", "mine/penalty_curve"]
    assert summary["settings"]["moving_average"] == "centred" and "edges" in summary["settings"]
    table = pd.read_csv(files["csv"])
    assert table["tv"].tolist() == pytest.approx([7.0, 0.1 + 0.05 + 0.15 + 0.1])
    assert files["png"].stat().st_size > 1000
    with pytest.raises(PenaltyCurveInputError, match="1 labels for 2 logs"):
        write_penalty_curve_report([a, b], tmp_path / "out", labels=["x"])


def test_cli(tmp_path, capsys):
    a = _log(tmp_path / "fami.csv", SERIES)
    assert main([str(a), "--k", "3", "--out", str(tmp_path / "o"), "--labels", "FaMI"]) == 0
    assert "FaMI: TV 7" in capsys.readouterr().out
    assert (tmp_path / "o" / "penalty_curve.png").is_file()
    assert main([str(a), "--column", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "no column 'nope'; the columns are" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert main([str(a), "--k", "0", "--out", str(tmp_path / "o")]) == 2


def test_python_dash_m_entry_exits_2_on_bad_input(tmp_path):
    # one subprocess only (importing fairmonai.reports takes seconds); main() covers the success path
    a = _log(tmp_path / "fami.csv", SERIES)
    bad = subprocess.run([sys.executable, "-m", "fairmonai.reports.penalty_curve", str(a), "--column", "x",
                          "--k", "5", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert bad.returncode == 2, bad.stderr
    assert "error: " in bad.stderr and "no column 'x'; the columns are" in bad.stderr
