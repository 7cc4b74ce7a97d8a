"""Fold report (FaMI Table 2, Figures 2-3): values against sklearn / numpy / scipy / the bundle's report.json.

Synthetic run folders as the runner leaves them: ``<conf>_seed0_fold<k>/eval/predictions_{val,test}.csv``
(every fold model scores the same test cases; the held-out folds are the same for every model),
``report_val/report.json`` written by :func:`fairmonai.reports.write_report` with the bundle's options,
and ``penalty_curve.csv`` logs with each method's diagnostic column.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from fairmonai.reports.fold_report import (
    STATISTICS,
    FoldReportError,
    check_fold_report_settings,
    main,
    write_fold_report,
)
from fairmonai.reports.penalty_curve import rmse_to_moving_average, total_variation

GROUPS = ("Asian", "Black", "White")
REPO = Path(__file__).resolve().parents[2]


def _layout(n_cell: int, prefix: str):
    """Case ids, labels and race with ``n_cell`` cases in every (group, label) cell."""
    labels = np.tile(np.repeat([0, 1], n_cell), len(GROUPS))
    race = np.repeat(GROUPS, 2 * n_cell)
    return np.array([f"{prefix}{i:03d}" for i in range(len(labels))]), labels, race


def _write_predictions(path: Path, ids, labels, race, score) -> None:
    pd.DataFrame({"case_id": ids, "label": labels, "score": score, "prediction": (score >= 0.5).astype(int),
                  "race": race}).to_csv(path, index=False)


def make_grid(root: Path, quality: dict, *, n_folds: int, test_cell: int = 8, retrain=(), seed: int = 0,
              drop=None) -> pd.DataFrame:
    """The runner's per-run table of a synthetic k-fold grid; ``quality`` is each model's class separation.

    A case's logit is ``sep * (2 y - 1)`` plus a case effect shared by all models and the model's own
    noise (so averaging fold models does not make the test AUC 1). ``drop``: ``(conf, fold, group,
    label)`` whose cases are left out of that held-out fold."""
    rows = []
    for c, (conf, sep) in enumerate(quality.items()):
        for fold in [*range(n_folds), *([-1] if conf in retrain else [])]:
            d = root / f"{conf}_seed0_fold{fold}"
            (d / "eval").mkdir(parents=True)
            for s, split in enumerate(("val", "test") if fold >= 0 else ("test",)):
                ids, labels, race = _layout(test_cell, "t") if split == "test" else _layout(8 + fold % 3, f"v{fold}_")
                case = np.random.default_rng([seed, 99, fold + 1 if split == "val" else 0]).normal(size=len(ids))
                noise = np.random.default_rng([seed, c, fold + 1, s]).normal(size=len(ids))
                score = 1.0 / (1.0 + np.exp(-(sep * (2 * labels - 1) + 0.7 * case + 0.7 * noise)))
                if drop is not None and split == "val" and (conf, fold) == drop[:2]:
                    keep = ~((race == drop[2]) & (labels == drop[3]))
                    ids, labels, race, score = ids[keep], labels[keep], race[keep], score[keep]
                _write_predictions(d / "eval" / f"predictions_{split}.csv", ids, labels, race, score)
                rows.append({"configuration": conf, "seed": 0, "fold": fold, "split": split, "auc": None,
                             "run_dir": str(d)})
    return pd.DataFrame(rows)


def bundle_report(run_dir: Path, split: str = "val") -> dict:
    """report.json as the OCT bundle writes it (evaluate.json's PredictionsWriter options)."""
    from fairmonai.reports import write_report

    out = Path(run_dir) / "eval" / f"report_{split}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_report(Path(run_dir) / "eval" / f"predictions_{split}.csv", out, attributes=["race"],
                     schema="oct_glaucoma", n_bootstrap=0, seed=0, reference_group="Black")
    return json.loads((out / "report.json").read_text())["attributes"]["race"]


def penalty_log(run_dir: Path, rng, diagnostic: str | None) -> Path:
    n = 12
    frame = {"iteration": np.arange(5, 5 * n + 1, 5), "epoch": np.repeat(np.arange(1, 4), 4), "n_samples": 80,
             "mi_knn": rng.uniform(0.0, 0.2, n)}
    if diagnostic:
        # 'penalty' (E[v * SFD] for FaMI) is large here: it must never be what the figure shows
        frame.update({"task_loss": 0.6, "mu": 0.5, "penalty": 1e3 * rng.uniform(size=n),
                      diagnostic: rng.normal(size=n)})
    frame["loss"] = 0.6
    path = Path(run_dir) / "eval" / "penalty_curve.csv"
    pd.DataFrame(frame).to_csv(path, index=False)
    return path


LABELS = {"fami_vit": "FaMI-ViT", "vit": "ViT", "fin_vit": "FIN-ViT", "mine_vit": "MINE-ViT"}
SETTINGS = {
    "attribute": "race", "metrics": ["auc", "eom", "eodd"], "statistic": "ranksum", "star_p": 0.005,
    "table_rows": ["vit", "fin_vit", "fami_vit"], "second_table_rows": ["mine_vit"], "labels": LABELS,
    "figure2": {"reference": "fami_vit", "others": ["vit", "fin_vit"]},
    "best_versus_closest": {"candidates": ["fami_vit"], "alternatives": ["vit", "fin_vit", "mine_vit"]},
    "figure3": ["fami_vit", "mine_vit", "vit"], "moving_average_k": 3, "n_bootstrap": 20,
}
PAPER = {"source": "Sadri et al. 2025, Table 2",
         "values": {"fami_vit": {"auc": {"train": "0.80 +- 0.02", "test": 0.79}}}}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Ten folds, four models; vit's fold 3 has no Asian glaucoma case; fin_vit's fold 7 failed."""
    root = tmp_path_factory.mktemp("grid")
    runs = make_grid(root, {"fami_vit": 1.0, "fin_vit": 0.3, "vit": 0.0, "mine_vit": 0.1}, n_folds=10,
                     drop=("vit", 3, "Asian", 1))
    rng = np.random.default_rng(1)
    for conf, diag in (("fami_vit", "msq_sfd"), ("mine_vit", "dv"), ("vit", None)):
        for k in range(10):
            penalty_log(root / f"{conf}_seed0_fold{k}", rng, diag)
    theirs = {(c, k): bundle_report(root / f"{c}_seed0_fold{k}") for c, k in (("fami_vit", 0), ("vit", 3))}
    (root / "fin_vit_seed0_fold7" / "eval" / "predictions_val.csv").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = write_fold_report(runs, root / "out", SETTINGS, paper=PAPER)
    return {"root": root, "runs": runs, "report": report, "theirs": theirs, "out": root / "out",
            "warnings": [str(w.message) for w in caught]}


def _val(root: Path, conf: str, k: int, split: str = "val") -> pd.DataFrame:
    return pd.read_csv(root / f"{conf}_seed0_fold{k}" / "eval" / f"predictions_{split}.csv")


def test_fold_values_equal_sklearn_numpy_and_the_bundles_report(grid):
    fami = grid["report"]["configurations"]["fami_vit"]
    aucs = []
    for k in range(10):
        df = _val(grid["root"], "fami_vit", k)
        aucs.append(roc_auc_score(df["label"], df["score"]))
        assert fami["folds"][str(k)]["auc"] == pytest.approx(aucs[-1], abs=1e-12)
    assert fami["train"]["auc"]["mean"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert fami["train"]["auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
    assert fami["train"]["auc"]["n"] == 10
    for (conf, k), theirs in grid["theirs"].items():  # the same numbers as write_report's report.json
        ours = grid["report"]["configurations"][conf]["folds"][str(k)]
        assert ours["auc"] == theirs["metrics"]["auc"]["overall"]
        assert ours["eom"] == theirs["disparities"]["eom"]["value"]
        assert ours["eodd"] == theirs["disparities"]["eodd"]["value"]
        assert ours["matches_report_json"] is True
    # reference group and groups read from report.json: one_vs_rest, Black vs rest
    eodd = grid["report"]["eodd"]
    assert (eodd["strategy"], eodd["reference_group"]) == ("one_vs_rest", "Black")
    assert eodd["report_json"]["groups_compared"] == ["Black", "rest"]
    md = (grid["out"] / "table.md").read_text()
    assert "strategy one_vs_rest, groups compared: Black vs rest" in md


def test_mean_probability_test_auc_equals_sklearn_on_hand_averaged_scores(grid):
    frames = [_val(grid["root"], "fami_vit", k, "test") for k in range(10)]
    avg = pd.concat(frames).groupby("case_id").agg(label=("label", "first"), score=("score", "mean"))
    test = grid["report"]["configurations"]["fami_vit"]["test"]
    assert test["auc"] == pytest.approx(roc_auc_score(avg["label"], avg["score"]), abs=1e-12)
    assert (test["kind"], test["n_models"], test["n_cases"]) == ("mean_probability", 10, 48) and test["auc"] < 1
    written = pd.read_csv(grid["out"] / "test_predictions" / "fami_vit.csv").set_index("case_id")
    np.testing.assert_allclose(written["score"], avg["score"].loc[written.index], rtol=0, atol=1e-15)
    assert "- FaMI-ViT: mean of 10 fold models' probabilities (folds [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])" in (
        grid["out"] / "table.md").read_text()


def test_ten_folds_ranksum_exact_p_and_star(grid):
    fam = grid["report"]["families"]["figure2"]["auc"]
    conf = grid["report"]["configurations"]
    fami, vit = conf["fami_vit"]["train"]["auc"]["values"], conf["vit"]["train"]["auc"]["values"]
    assert min(fami) > max(vit)  # the reference is better in every fold
    row = next(r for r in fam["rows"] if r["other"] == "vit")
    exact = stats.mannwhitneyu(fami, vit, alternative="two-sided", method="exact").pvalue
    assert row["p_raw"] == pytest.approx(exact, rel=1e-12)
    assert row["p_raw"] == pytest.approx(2 / comb(20, 10), rel=1e-9)
    assert (row["method"], row["star"], fam["m"]) == ("exact", True, 2)
    assert row["p_bonferroni"] == pytest.approx(2 * exact, rel=1e-12)
    # Table 2: best FaMI against the closest alternative (FIN-ViT, 9 folds left): star on FaMI-ViT's Train AUC
    t2 = grid["report"]["families"]["table2"]["auc"]
    assert (t2["reference"], t2["rows"][0]["other"], t2["m"]) == ("fami_vit", "fin_vit", 3)
    assert t2["rows"][0]["p_raw"] == pytest.approx(2 / comb(19, 9), rel=1e-9)
    table = pd.read_csv(grid["out"] / "table.csv").set_index("configuration")
    assert bool(table.loc["fami_vit", "auc_star"]) and not table.loc["fin_vit", "auc_star"]
    fami_line = next(line for line in (grid["out"] / "table.md").read_text().splitlines()
                     if line.startswith("| FaMI-ViT"))
    assert "**\\*" in fami_line.split("|")[2]  # bold (best) and starred
    assert (grid["out"] / "figure2.png").stat().st_size > 0


def test_group_lacking_a_class_counted_and_warned(grid):
    v = grid["report"]["configurations"]["vit"]["validity"]
    assert (v["auc"]["n_valid"], v["auc"]["n_folds"]) == (9, 10)
    assert v["auc"]["missing"] == {"3": [["Asian", 1]]}
    assert v["eodd"]["n_valid"] == 10  # Black and the rest both still have both classes
    assert grid["report"]["configurations"]["fami_vit"]["validity"]["auc"]["n_valid"] == 10
    assert any(w.startswith("vit fold 3 (val): ") and "Asian" in w for w in grid["warnings"])
    # the fold's value is the metric's defined value, as in the bundle's report
    assert grid["report"]["configurations"]["vit"]["folds"]["3"]["matches_report_json"] is True
    md = (grid["out"] / "table.md").read_text()
    vit_line = next(line for line in md.split("## Pooled")[1].splitlines() if line.startswith("| ViT "))
    assert "9 of 10" in vit_line
    pooled = grid["report"]["configurations"]["fami_vit"]["pooled_oof"]
    cat = pd.concat([_val(grid["root"], "fami_vit", k) for k in range(10)])
    assert pooled["auc"] == pytest.approx(roc_auc_score(cat["label"], cat["score"]), abs=1e-12)
    assert pooled["n_cases"] == len(cat)


def test_missing_predictions_of_one_fold_skipped_and_listed(grid):
    assert {"configuration": "fin_vit", "fold": 7, "split": "val"}.items() <= grid["report"]["missing"][0].items()
    fin = grid["report"]["configurations"]["fin_vit"]
    assert fin["train"]["auc"]["n"] == 9 and "7" not in fin["folds"]
    assert any("missing" in w and "fin_vit fold 7 val" in w for w in grid["warnings"])
    assert "(n=9)" in (grid["out"] / "table.md").read_text()


def test_bold_marks_the_best_per_column(grid):
    conf = grid["report"]["configurations"]
    table = pd.read_csv(grid["out"] / "table.csv")
    first = table[table["table"] == "first"].set_index("configuration")
    for m, pick in (("auc", np.argmax), ("eom", np.argmax), ("eodd", np.argmin)):  # EOdd: lower is better
        names = ["vit", "fin_vit", "fami_vit"]
        best = names[pick([np.mean(conf[c]["train"][m]["values"]) for c in names])]
        assert first[f"{m}_best_train"].to_dict() == {c: c == best for c in names}
        best_test = names[pick([conf[c]["test"][m] for c in names])]
        assert first[f"{m}_best_test"].to_dict() == {c: c == best_test for c in names}
    md = (grid["out"] / "table.md").read_text().split("## Table 2 (second part)")[0]
    lines = {line.split("|")[1].strip(): line.split("|") for line in md.splitlines() if line.startswith("| ")}
    assert lines["FaMI-ViT"][2].strip().startswith("**")  # best Train AUC
    assert not lines["ViT"][2].strip().startswith("**")
    assert lines["FaMI-ViT"][4].strip() == "0.80 ± 0.02 / 0.79" and lines["ViT"][4].strip() == "-"  # paper


def test_penalty_curves_tv_and_rmse(grid):
    fig3 = grid["report"]["figure3"]
    for conf in ("fami_vit", "mine_vit", "vit"):
        tv, rmse = [], []
        for k in range(10):
            x = pd.read_csv(grid["root"] / f"{conf}_seed0_fold{k}" / "eval" / "penalty_curve.csv")["mi_knn"].to_numpy()
            tv.append(total_variation(x))
            rmse.append(rmse_to_moving_average(x, 3))
            assert fig3[conf]["folds"][str(k)]["tv"] == pytest.approx(tv[-1], abs=1e-15)
            assert fig3[conf]["folds"][str(k)]["rmse_ma"] == pytest.approx(rmse[-1], abs=1e-15)
        assert fig3[conf]["tv_mean"] == pytest.approx(np.mean(tv)) and fig3[conf]["tv_sd"] == pytest.approx(
            np.std(tv, ddof=1))
        assert fig3[conf]["rmse_mean"] == pytest.approx(np.mean(rmse))
    assert [fig3[c]["diagnostic_column"] for c in ("fami_vit", "mine_vit", "vit")] == ["msq_sfd", "dv", None]
    assert (grid["out"] / "figure3.png").stat().st_size > 0


def test_five_folds_no_star_best_fold_and_cli(tmp_path, capsys):
    runs = make_grid(tmp_path, {"fami_vit": 1.2, "vit": 0.0}, n_folds=5, seed=3)
    grid_csv = tmp_path / "table2.csv"
    runs.to_csv(grid_csv, index=False)
    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps({"configurations": {"fami_vit": {}, "vit": {}}, "fold_report": {
        "attribute": "race", "reference_group": "Black", "table_rows": ["vit", "fami_vit"], "n_bootstrap": 0,
        "figure2": {"reference": "fami_vit", "others": ["vit"]}, "paper": "absent_paper.json"}}))
    assert main([str(grid_csv), "--settings", str(exp), "--out", str(tmp_path / "out"),
                 "--test-column", "best_fold"]) == 0
    assert "absent_paper.json not found" in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    row = report["families"]["figure2"]["auc"]["rows"][0]
    vals = report["configurations"]
    assert min(vals["fami_vit"]["train"]["auc"]["values"]) > max(vals["vit"]["train"]["auc"]["values"])
    assert row["p_raw"] == pytest.approx(2 / comb(10, 5), rel=1e-9) and row["p_raw"] >= 0.0079
    assert not row["star"]
    for conf in ("fami_vit", "vit"):  # best_fold: the best validation AUC; its test predictions
        val_auc = [roc_auc_score(*_val(tmp_path, conf, k)[["label", "score"]].T.to_numpy()) for k in range(5)]
        best = int(np.argmax(val_auc))
        test = _val(tmp_path, conf, best, "test")
        assert vals[conf]["test"]["fold"] == best
        assert vals[conf]["test"]["auc"] == pytest.approx(roc_auc_score(test["label"], test["score"]), abs=1e-12)
    assert report["test_column"]["kind"] == "best_fold"


def test_retrain_column_and_its_errors(tmp_path):
    runs = make_grid(tmp_path, {"fami_vit": 2.0, "vit": 0.5}, n_folds=3, retrain=("fami_vit",), test_cell=4)
    s = {"attribute": "race", "reference_group": "Black", "test_column": "retrain", "table_rows": ["fami_vit"]}
    report = write_fold_report(runs, tmp_path / "a", s)
    test = _val(tmp_path, "fami_vit", -1, "test")
    assert report["configurations"]["fami_vit"]["test"]["fold"] == -1
    assert report["configurations"]["fami_vit"]["test"]["auc"] == pytest.approx(
        roc_auc_score(test["label"], test["score"]), abs=1e-12)
    with pytest.raises(FoldReportError,
                       match=r"test_column 'retrain': configuration 'vit' has no test run with fold -1"):
        write_fold_report(runs, tmp_path / "b", {**s, "table_rows": ["fami_vit", "vit"]})
    # fold models scoring different test cases cannot be averaged
    bad = _val(tmp_path, "vit", 1, "test").iloc[1:]
    bad.to_csv(tmp_path / "vit_seed0_fold1" / "eval" / "predictions_test.csv", index=False)
    with pytest.raises(FoldReportError, match=r"configuration 'vit': the fold models' test predictions hold different "
                                              r"cases: fold 1 .* lacks \['t000'\]"):
        write_fold_report(runs, tmp_path / "c", {**s, "test_column": "mean_probability", "table_rows": ["vit"]})
    for k in range(3):  # no usable fold: an error naming the configuration
        (tmp_path / f"vit_seed0_fold{k}" / "eval" / "predictions_val.csv").unlink()
    with pytest.raises(FoldReportError, match=r"configuration 'vit' has no usable fold"):
        write_fold_report(runs, tmp_path / "d", {**s, "test_column": "best_fold", "table_rows": ["vit"]})


CONFS = ["dn", "fami_dn", "fami_vit", "vit"]


@pytest.mark.parametrize("settings, message", [
    ({"attribute": "race", "colour": 1}, "t.json: fold_report: unknown key 'colour'"),
    ({"metrics": ["auc"]}, "t.json: fold_report: missing key 'attribute'"),
    ({"attribute": 3}, "t.json: fold_report.attribute: expected a non-empty text, got 3"),
    ({"attribute": "race", "figure2": {"reference": "fami", "others": ["vit"]}},
     "t.json: fold_report.figure2.reference: 'fami' is not one of the configurations"),
    ({"attribute": "race", "figure2": {"reference": "fami_vit", "others": "vit"}},
     "t.json: fold_report.figure2.others: expected a non-empty list of configuration names, got 'vit'"),
    ({"attribute": "race", "test_column": "median"},
     "t.json: fold_report.test_column: unknown test column 'median'; allowed: ['mean_probability', 'best_fold', "
     "'retrain']"),
    ({"attribute": "race", "statistic": "ttest"}, "t.json: fold_report.statistic: unknown statistic 'ttest'"),
    ({"attribute": "race", "star_p": 0}, "t.json: fold_report.star_p: expected a number in (0, 1], got 0"),
    ({"attribute": "race", "metrics": ["auc", "f1"]}, "t.json: fold_report.metrics: unknown metric 'f1'"),
    ({"attribute": "race", "table_rows": ["dn", "mine_dn"]},
     "t.json: fold_report.table_rows: 'mine_dn' is not one of the configurations"),
    ({"attribute": "race", "labels": {"dn": "DN", "vit": "DN"}},
     "t.json: fold_report.labels: display name(s) ['DN'] given to more than one configuration"),
    ({"attribute": "race", "best_versus_closest": {"candidates": ["fami_dn"], "alternatives": ["fami_dn"]}},
     "t.json: fold_report.best_versus_closest.alternatives: ['fami_dn'] also among the candidates"),
    ({"attribute": "race", "moving_average_k": 0}, "t.json: fold_report.moving_average_k: expected an integer >= 1"),
])
def test_check_settings_errors_name_the_key(settings, message):
    with pytest.raises(ValueError) as e:
        check_fold_report_settings(settings, CONFS, where="t.json: fold_report")
    assert str(e.value).startswith(message)


def test_check_settings_defaults_and_table2_file():
    s = check_fold_report_settings({"attribute": "race"}, CONFS, where="x")
    assert (s["table_rows"], s["test_column"], s["statistic"], s["star_p"], s["metrics"]) == (
        CONFS, "mean_probability", "ranksum", 0.005, ["auc", "eom", "eodd"])
    exp = json.loads((REPO / "bundles/oct_glaucoma_fami/experiments/table2.json").read_text())
    s = check_fold_report_settings(exp["fold_report"], list(exp["configurations"]), where="table2.json: fold_report")
    assert s["figure2"]["reference"] == "fami_vit" and s["reference_group"] is None and s["seed"] == 0
    from fairmonai.reports.fold_statistics import FOLD_TESTS

    assert STATISTICS == FOLD_TESTS


def test_paper_values_checked(tmp_path):
    runs = make_grid(tmp_path, {"dn": 1.0}, n_folds=2, test_cell=3)
    s = {"attribute": "race", "reference_group": "Black", "n_bootstrap": 0}
    with pytest.raises(FoldReportError, match=r"fold_report: paper.values.dn.auc.train: cannot read 'high'"):
        write_fold_report(runs, tmp_path / "o", s, paper={"source": "p", "values": {"dn": {"auc": {"train": "high"}}}})


def test_cli_bad_input_exit_2_one_line(tmp_path, capsys):
    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps({"configurations": {"dn": {}}}))
    cases = [
        ([str(tmp_path / "none.csv"), "--settings", str(exp), "--out", str(tmp_path / "o")],
         f"error: {exp}: no 'fold_report' object"),
        ([str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")],
         "error: the following arguments are required: --settings"),
    ]
    for argv, line in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == line + "\n"
    exp.write_text(json.dumps({"configurations": {"dn": {}}, "fold_report": {"attribute": "race", "test_column": "x"}}))
    assert main([str(tmp_path / "none.csv"), "--settings", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'none.csv'}: cannot read the grid CSV")
    pd.DataFrame({"configuration": ["dn"], "seed": [0]}).to_csv(tmp_path / "g.csv", index=False)
    assert main([str(tmp_path / "g.csv"), "--settings", str(exp), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == ("error: the grid table lacks column(s) ['fold', 'split', 'run_dir']; it has "
                                       "['configuration', 'seed'] (expected the runner's <name>.csv)\n")
    pd.DataFrame({"configuration": ["dn"], "seed": [0], "fold": [0], "split": ["val"], "run_dir": [str(tmp_path)]}
                 ).to_csv(tmp_path / "g.csv", index=False)
    assert main([str(tmp_path / "g.csv"), "--settings", str(exp), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == ("error: exp.json: fold_report.test_column: unknown test column 'x'; allowed: "
                                       "['mean_probability', 'best_fold', 'retrain']\n")


def test_import_is_light():
    code = ("import sys, fairmonai.reports.fold_report; "
            "print(sorted(m for m in ('torch', 'monai', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
