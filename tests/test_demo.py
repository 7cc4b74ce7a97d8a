"""`make demo`'s job: predictions cover exactly the test split, and the report's AUC is sklearn's."""

import json

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairmonai.data import load_manifest
from fairmonai.demo import run_demo


def test_demo_scores_the_test_split_once(tmp_path, capsys):
    res = run_demo(tmp_path, n=90, seed=1, n_bootstrap=20)
    out = capsys.readouterr().out
    assert f"report: {res['markdown']}" in out
    records = load_manifest(res["manifest"], "oct_glaucoma")
    test_ids = {r["case_id"] for r in records if r["split"] == "test"}
    pred = pd.read_csv(res["predictions"])
    assert set(pred["case_id"]) == test_ids and len(pred) == len(test_ids)
    rep = json.loads(res["json"].read_text())["attributes"]["race"]
    assert rep["metrics"]["auc"]["overall"] == pytest.approx(roc_auc_score(pred["label"], pred["score"]), abs=1e-12)
    assert rep["disparities"]["eodd"]["strategy"] == "one_vs_rest"


def _report(auc, by_group, eodd):
    disp = {k: {"value": v} for k, v in {"es_auc": 0.5, "eom": 0.75, "eodd": eodd, "dp_difference": 0.1,
                                          "eo_difference": 0.2}.items()}
    return {"attributes": {"race": {"groups": list(by_group), "metrics": {"auc": {"overall": auc, "by_group": by_group}},
                                    "disparities": disp}}}


def test_side_by_side_table():
    from fairmonai.bundle_demo import side_by_side

    text = side_by_side({"dn": _report(0.8, {"Asian": 0.7, "Black": None}, 1.25),
                         "fami_dn": _report(0.75, {"Asian": 0.72, "Black": 0.7}, 0.5)})
    lines = text.splitlines()
    assert lines[0].split() == ["dn", "fami_dn"]
    assert lines[1].split() == ["AUC", "overall", "0.800", "0.750"]
    assert lines[3].split() == ["AUC", "Black", "n/a", "0.700"]
    assert [ln for ln in lines if ln.startswith("EOdd")][0].split()[-2:] == ["1.250", "0.500"]


def test_bundle_command_points_at_the_bundle(tmp_path):
    from fairmonai.bundle_demo import BUNDLE, bundle_command

    cmd = bundle_command(["train.json", "method_fami.json"], tmp_path, {"epochs": "3"})
    assert cmd[1:4] == ["-m", "monai.bundle", "run"]
    files = cmd[cmd.index("--config_file") + 1]
    assert files == f"['{BUNDLE / 'configs' / 'train.json'}','{BUNDLE / 'configs' / 'method_fami.json'}']"
    assert all((BUNDLE / "configs" / n).is_file() for n in ("train.json", "method_fami.json"))
    assert cmd[-2:] == ["--epochs", "3"] and cmd[cmd.index("--bundle_root") + 1] == str(tmp_path)


def test_all_models_are_the_eight_overlay_combinations():
    from fairmonai.bundle_demo import ALL_MODELS, BUNDLE, MODELS

    assert sorted(ALL_MODELS) == sorted(["dn", "vit", "fami_dn", "fami_vit", "mine_dn", "mine_vit", "mige_dn",
                                         "mige_vit"])
    assert ALL_MODELS["mige_vit"] == ["train.json", "method_mige.json", "net_vit.json"]
    assert ALL_MODELS["vit"] == ["train.json", "net_vit.json"]
    assert all(ALL_MODELS[k] == v for k, v in MODELS.items())
    assert all((BUNDLE / "configs" / f).is_file() for files in ALL_MODELS.values() for f in files)


@pytest.mark.parametrize("reuse, trained", [(True, ["fami_dn"]), (False, ["dn", "fami_dn"])])
def test_run_bundle_demo_reuses_finished_models_only_when_asked(tmp_path, monkeypatch, capsys, reuse, trained):
    import fairmonai.bundle_demo as bd

    def write_report(name):
        f = tmp_path / name / "eval" / "report_test" / "report.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        rep = _report(0.8, {"Asian": 0.7}, 0.5)
        rep["attributes"]["race"]["n_samples"] = 10
        f.write_text(json.dumps(rep))

    write_report("dn")
    calls = []

    def fake_run(cmd, log, show):  # the evaluate command of a model writes its report
        calls.append(cmd)
        if "evaluate.json" in cmd[cmd.index("--config_file") + 1]:
            write_report(log.parent.name)

    monkeypatch.setattr(bd, "_run", fake_run)
    reports = bd.run_bundle_demo(tmp_path, epochs=1, reuse=reuse)
    assert sorted(reports) == ["dn", "fami_dn"]
    roots = [c[c.index("--bundle_root") + 1] for c in calls]
    assert sorted(set(roots)) == sorted(str(tmp_path / m) for m in trained) and len(calls) == 2 * len(trained)
