"""The A/B/C design's report: statistics against scipy and hand counts, orderings, figures from run folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from fairmonai.reports.vae_representation import (
    collect_runs,
    condition_prevalence,
    fine_label_table,
    gap_test,
    ordering_checks,
    write_vae_report,
)

# run means per (mix, group): dark falls A > B > C, light rises, light < dark under B; latent std falls
MEANS = {("A", "light"): (0.010, 0.90), ("A", "dark"): (0.050, 0.99), ("B", "light"): (0.012, 0.85),
         ("B", "dark"): (0.030, 0.90), ("C", "light"): (0.020, 0.80), ("C", "dark"): (0.025, 0.85)}


def _per_run(gaps=(0.01, 0.02, 0.04)):
    rows = []
    for rep, gap in enumerate(gaps):
        for (mix, group), (mse, std) in MEANS.items():
            extra = gap if (mix == "B" and group == "dark") else 0.0
            rows.append({"mix": mix, "repeat": rep, "seed": 0, "group": group, "mse_mean": mse + extra - 0.018 * (mix == "B" and group == "dark"),
                         "latent_std_mean": std, "run": f"{mix}_repeat{rep}"})
    return pd.DataFrame(rows)


def test_gap_test_equals_scipy_and_the_exact_hand_value():
    per_run = _per_run((0.01, 0.02, 0.04))
    res = gap_test(per_run, "mse", "B")
    light = 0.012
    diffs = [0.030 + g - 0.018 - light for g in (0.01, 0.02, 0.04)]
    assert res["differences"] == pytest.approx(diffs)
    assert res["n_repeats"] == 3 and res["mean_difference"] == pytest.approx(np.mean(diffs))
    ref = wilcoxon(diffs)
    assert res["statistic"] == ref.statistic and res["p_value"] == pytest.approx(ref.pvalue)
    # all three differences positive: W = 0, exact two-sided p = 2 / 2^3
    assert res["statistic"] == 0.0 and res["p_value"] == pytest.approx(0.25)
    mixed = gap_test(_per_run((0.01, -0.03, 0.04, 0.05, 0.02)), "mse", "B")
    d = np.asarray(mixed["differences"])
    # hand: ranks of |d|; W = min(sum of positive ranks, sum of negative ranks)
    ranks = pd.Series(np.abs(d)).rank().to_numpy()
    assert mixed["statistic"] == pytest.approx(min(ranks[d > 0].sum(), ranks[d < 0].sum()))
    assert "added" in res["test"] and "0.25" in res["note"]


def test_gap_test_with_one_repeat_gives_no_p_value():
    res = gap_test(_per_run((0.01,)), "mse", "B")
    assert res["n_repeats"] == 1 and res["p_value"] is None


def test_orderings_hold_and_fail_as_constructed():
    checks = ordering_checks(_per_run())
    assert all(v["holds"] for v in checks.values()), checks
    assert checks["dark_mse_falls_A_to_C"]["values"]["A"] == pytest.approx(0.05)
    flipped = _per_run()
    flipped.loc[(flipped["mix"] == "C") & (flipped["group"] == "dark"), "mse_mean"] = 0.06
    checks = ordering_checks(flipped)
    assert checks["dark_mse_falls_A_to_C"]["holds"] is False and checks["light_mse_rises_A_to_C"]["holds"]
    assert ordering_checks(flipped[flipped["mix"] != "C"])["dark_mse_falls_A_to_C"]["holds"] is None


def test_condition_prevalence_hand_counts():
    t = pd.DataFrame({"fitzpatrick": ["1", "1", "2", "5", "6", "6", "3", ""],
                      "label": ["benign", "malignant", "benign", "benign", "malignant", "malignant", "benign", "benign"],
                      "condition": ["nevus", "melanoma", "nevus", "nevus", "melanoma", "bcc", "nevus", "nevus"]})
    p = condition_prevalence(t).set_index(["granularity", "value"])
    assert p.loc[("label", "benign"), "count_light"] == 2 and p.loc[("label", "benign"), "count_dark"] == 1
    assert p.loc[("label", "malignant"), "share_dark"] == pytest.approx(2 / 3)
    assert p.loc[("condition", "bcc"), "count_light"] == 0 and p.loc[("condition", "bcc"), "share_dark"] == pytest.approx(1 / 3)
    assert set(p.index.get_level_values(0)) == {"label", "condition"}  # no nine_partition_label column
    with pytest.raises(ValueError, match="no 'fitzpatrick' column"):
        condition_prevalence(t.drop(columns="fitzpatrick"))


def test_fine_label_table_keeps_labels_with_enough_images_per_group():
    rows = []
    for label, n_light, n_dark in (("nevus", 6, 5), ("bcc", 6, 4)):
        rows += [{"mix": "B", "condition": label, "tone_group": "light", "mse": 0.01 * (i + 1)} for i in range(n_light)]
        rows += [{"mix": "B", "condition": label, "tone_group": "dark", "mse": 0.02} for i in range(n_dark)]
    t = fine_label_table(pd.DataFrame(rows), min_images=5)
    assert list(t["fine_label"]) == ["nevus"]
    r = t.iloc[0]
    assert (r["n_light"], r["n_dark"]) == (6, 5) and r["mse_light"] == pytest.approx(0.035) and r["mse_dark"] == pytest.approx(0.02)


def _run_folder(root, mix, rep, ids, mse):
    f = root / f"{mix}_repeat{rep}_seed0"
    (f / "eval" / "report_test").mkdir(parents=True)
    per_image = pd.DataFrame({"case_id": ids, "tone_group": ["light", "light", "dark", "dark"],
                              "fitzpatrick": ["1", "2", "5", "6"], "label_name": ["benign"] * 4,
                              "mse": mse, "latent_std": [0.9, 0.9, 0.8, 0.8]})
    per_image.to_csv(f / "eval" / "reconstruction_test.csv", index=False)
    runs = pd.DataFrame([{"group": g, "n_images": 2, "mse_mean": per_image[per_image.tone_group == g].mse.mean(),
                          "latent_std_mean": per_image[per_image.tone_group == g].latent_std.mean(),
                          "mix": mix, "repeat": rep, "seed": 0} for g in ("all", "light", "dark")])
    runs.to_csv(f / "eval" / "report_test" / "runs.csv", index=False)
    img = np.zeros((2, 8, 8, 3), np.uint8)
    np.savez(f / "eval" / "report_test" / "examples.npz", light_case_id=np.array(ids[:2]), light_image=img,
             light_recon=img, dark_case_id=np.array(ids[2:]), dark_image=img, dark_recon=img)
    return f


def test_report_from_run_folders(tmp_path):
    folders = [_run_folder(tmp_path, m, r, [f"r{r}_{i}" for i in range(4)], [0.01, 0.02, 0.05 - 0.01 * k, 0.06 - 0.01 * k])
               for r in range(2) for k, m in enumerate("ABC")]
    per_run, per_image = collect_runs(folders)
    assert len(per_run) == 12 and len(per_image) == 24 and set(per_run["group"]) == {"light", "dark"}
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"fitzpatrick": ["1", "6"], "label": ["benign", "malignant"]}).to_csv(manifest, index=False)
    summary = write_vae_report(folders, tmp_path / "report", manifest=manifest, min_images=1)
    assert summary["orderings"]["dark_mse_falls_A_to_C"]["holds"] is True
    assert summary["means_over_repeats"]["mse"]["A"]["dark"] == pytest.approx(0.055)
    for name in ("mse_boxplots.png", "latent_std_boxplots.png", "reconstructions_repeat0.png",
                 "condition_prevalence.png", "fine_label_mse.png", "report.md"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["gap_tests"]["mse"]["n_repeats"] == 2
    # the grid refuses example images that differ between the mixes of a repeat
    bad = _run_folder(tmp_path / "bad", "B", 0, ["x0", "x1", "x2", "x3"], [0.1] * 4)
    with pytest.raises(ValueError, match="example images"):
        write_vae_report([folders[0], bad], tmp_path / "report2", manifest=manifest)
    with pytest.raises(FileNotFoundError, match="runs.csv does not exist: evaluate the run"):
        collect_runs([tmp_path / "nothing"])
