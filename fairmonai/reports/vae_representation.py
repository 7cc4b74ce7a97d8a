"""The report of the skin-tone representation design (López-Pérez, Hauberg and Feragen): A/B/C x repeats.

Input: the run folders of the design (``bundles/fitzpatrick17k_vae``, one per mix and repeat), each with
``eval/report_test/runs.csv`` (its mix, repeat and per-group means), ``eval/reconstruction_test.csv`` (per
test image ``mse`` and ``latent_std``) and ``eval/report_test/examples.npz``. :func:`write_vae_report`
writes to one folder:

* ``per_run.csv`` (mix, repeat, group, means) and ``per_image.csv`` (every test image of every run);
* ``mse_boxplots.png`` and ``latent_std_boxplots.png`` (Figures 3 and 6): by training set x test group,
  over per-run means (left) and per image (right);
* ``reconstructions_repeat<r>.png`` (Figures 1, 4, 5): the same test images (light, then dark) and their
  reconstructions by the A, B and C models of one repeat;
* ``condition_prevalence.png`` / ``.csv`` (Figure 7): share of each condition among the light and the dark
  images of the manifest, at each label granularity the manifest has (``label``, ``nine_partition_label``,
  ``condition``);
* ``fine_label_mse.png`` / ``.csv`` (Figure 8): per fine label (``condition``, else the three-partition
  label) and training set, the mean MSE of its light test images against its dark ones, pooled over
  repeats, for labels with at least ``min_images`` images in each group; a y = x line; counts shown;
* ``summary.json`` and ``report.md``: mean per (mix, group), the paper's orderings checked, and the
  Wilcoxon signed-rank test over the per-repeat dark - light differences under B (:func:`gap_test`; the
  paper calls the gap "significant" without naming a test: this test is added).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .fold_statistics import compare_folds

__all__ = ["collect_runs", "gap_test", "ordering_checks", "condition_prevalence", "fine_label_table",
           "write_vae_report", "MIX_ORDER", "METRICS"]

MIX_ORDER = ("A", "B", "C")
GROUP_ORDER = ("light", "dark")
METRICS = ("mse", "latent_std")
GRANULARITIES = ("label", "nine_partition_label", "condition")


def collect_runs(folders: Sequence[str | os.PathLike], split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_run, per_image)`` of the run folders: per run and tone group its means (``mse_mean``,
    ``latent_std_mean``, ``n_images``); per image its values; both with ``mix``, ``repeat``, ``seed``, ``run``.

    Raises:
        FileNotFoundError: a folder without its evaluation files, naming the file.
    """
    runs, images = [], []
    for f in folders:
        f = Path(f)
        table_file, image_file = f / "eval" / f"report_{split}" / "runs.csv", f / "eval" / f"reconstruction_{split}.csv"
        for p in (table_file, image_file):
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist: evaluate the run (evaluate.json, eval_split {split}) first")
        t = pd.read_csv(table_file, dtype={"mix": str})
        t = t[t["group"].isin(GROUP_ORDER)].assign(run=f.name)
        runs.append(t)
        key = t.iloc[0]
        im = pd.read_csv(image_file, dtype={"case_id": str, "fitzpatrick": str}).assign(
            mix=key["mix"], repeat=int(key["repeat"]), seed=int(key["seed"]), run=f.name)
        images.append(im)
    per_run = pd.concat(runs, ignore_index=True)
    per_run["repeat"] = per_run["repeat"].astype(int)
    return per_run, pd.concat(images, ignore_index=True)


def gap_test(per_run: pd.DataFrame, metric: str = "mse", mix: str = "B") -> dict:
    """Wilcoxon signed-rank test (two-sided, :func:`~fairmonai.reports.fold_statistics.compare_folds`'s
    ``"signedrank"``: exact without tied differences) of the per-repeat differences ``dark - light`` of the
    run means of ``metric`` under ``mix``; pairs are the two test groups of one run.

    Returns:
        ``{"test", "mix", "metric", "n_repeats", "differences", "mean_difference", "median_difference",
        "statistic", "p_value", "note"}``; with fewer than 2 repeats ``statistic`` and ``p_value`` are ``None``.
        With n repeats and no ties the smallest possible two-sided exact p is ``2 / 2^n`` (0.25 for 3).
    """
    col = f"{metric}_mean"
    part = per_run[per_run["mix"] == mix].pivot_table(index=["seed", "repeat"], columns="group", values=col)
    part = part.dropna()
    diff = (part["dark"] - part["light"]).to_numpy(dtype=float) if len(part) else np.array([])
    out = {"test": "Wilcoxon signed-rank, two-sided (scipy.stats.wilcoxon), over repeats; added: the paper names no test",
           "mix": mix, "metric": metric, "n_repeats": int(len(diff)), "differences": diff.tolist(),
           "mean_difference": float(diff.mean()) if len(diff) else None,
           "median_difference": float(np.median(diff)) if len(diff) else None, "statistic": None, "p_value": None,
           "note": f"smallest attainable two-sided p with {len(diff)} repeats: {2.0 / 2 ** len(diff):.4g}" if len(diff) else ""}
    if len(diff) >= 2 and np.any(diff != 0):
        res = compare_folds(part["dark"].to_numpy(dtype=float), part["light"].to_numpy(dtype=float),
                            test="signedrank", names=("dark", "light"))
        out["statistic"], out["p_value"] = res.statistic, res.p
    return out


def _means(per_run: pd.DataFrame, metric: str) -> pd.DataFrame:
    return per_run.pivot_table(index="mix", columns="group", values=f"{metric}_mean", aggfunc="mean")


def ordering_checks(per_run: pd.DataFrame) -> dict:
    """The paper's orderings on the means over repeats of the per-run means: dark-test MSE falls A > B > C,
    light-test MSE rises A < B < C, light MSE below dark under B, latent std falls with more dark data
    (A > B > C) on each test group. Each entry: ``{"holds": bool, "values": {...}}`` (``holds`` is
    ``None`` when a mix or group is missing)."""
    mse, std = _means(per_run, "mse"), _means(per_run, "latent_std")

    def chain(table, group, decreasing):
        if group not in table or not all(m in table.index for m in MIX_ORDER):
            return {"holds": None, "values": {}}
        v = [float(table.loc[m, group]) for m in MIX_ORDER]
        ok = all(a > b for a, b in zip(v, v[1:])) if decreasing else all(a < b for a, b in zip(v, v[1:]))
        return {"holds": bool(ok), "values": dict(zip(MIX_ORDER, v))}

    checks = {
        "dark_mse_falls_A_to_C": chain(mse, "dark", True),
        "light_mse_rises_A_to_C": chain(mse, "light", False),
        "latent_std_dark_falls_A_to_C": chain(std, "dark", True),
        "latent_std_light_falls_A_to_C": chain(std, "light", True),
    }
    if "B" in mse.index and {"light", "dark"} <= set(mse.columns):
        light, dark = float(mse.loc["B", "light"]), float(mse.loc["B", "dark"])
        checks["light_mse_below_dark_under_B"] = {"holds": light < dark, "values": {"light": light, "dark": dark}}
    else:
        checks["light_mse_below_dark_under_B"] = {"holds": None, "values": {}}
    return checks


def condition_prevalence(manifest: str | os.PathLike | pd.DataFrame, *, light: Sequence[str] = ("1", "2"),
                         dark: Sequence[str] = ("5", "6"), attribute: str = "fitzpatrick") -> pd.DataFrame:
    """Figure 7's table: per label granularity present (``label``, ``nine_partition_label``, ``condition``) and
    value, the count and share among light and among dark images of the manifest.

    Raises:
        ValueError: the manifest has no ``attribute`` column or no granularity column, naming the columns.
    """
    t = pd.read_csv(manifest, dtype=str, keep_default_na=False) if not isinstance(manifest, pd.DataFrame) else manifest
    if attribute not in t:
        raise ValueError(f"manifest has no '{attribute}' column (columns {list(t.columns)})")
    cols = [c for c in GRANULARITIES if c in t]
    if not cols:
        raise ValueError(f"manifest has none of the label columns {list(GRANULARITIES)}")
    t = t.assign(tone_group=np.where(t[attribute].astype(str).isin([str(x) for x in light]), "light",
                                     np.where(t[attribute].astype(str).isin([str(x) for x in dark]), "dark", "")))
    t = t[t["tone_group"] != ""]
    rows = []
    for c in cols:
        counts = t.groupby([c, "tone_group"]).size().unstack(fill_value=0)
        for g in GROUP_ORDER:
            if g not in counts:
                counts[g] = 0
        totals = counts.sum(axis=0)
        for value, r in counts.iterrows():
            rows.append({"granularity": c, "value": value, "count_light": int(r["light"]), "count_dark": int(r["dark"]),
                         "share_light": r["light"] / totals["light"] if totals["light"] else float("nan"),
                         "share_dark": r["dark"] / totals["dark"] if totals["dark"] else float("nan")})
    return pd.DataFrame(rows)


def fine_label_table(per_image: pd.DataFrame, min_images: int = 5) -> pd.DataFrame:
    """Figure 8's table: per training set and fine label (``condition`` where present and filled, else
    ``label_name``), mean MSE and number of images (pooled over repeats) of each test group; only labels with
    at least ``min_images`` images in both groups."""
    label = "condition" if "condition" in per_image and per_image["condition"].astype(str).str.len().gt(0).all() \
        else "label_name"
    g = per_image.groupby(["mix", label, "tone_group"])["mse"].agg(["mean", "size"]).unstack("tone_group")
    g.columns = [f"{a}_{b}" for a, b in g.columns]
    g = g.reset_index().rename(columns={label: "fine_label", "mean_light": "mse_light", "mean_dark": "mse_dark",
                                        "size_light": "n_light", "size_dark": "n_dark"})
    for c in ("mse_light", "mse_dark", "n_light", "n_dark"):
        if c not in g:
            g[c] = np.nan
    g = g[(g["n_light"] >= min_images) & (g["n_dark"] >= min_images)]
    g["n_light"], g["n_dark"] = g["n_light"].astype(int), g["n_dark"].astype(int)
    g["label_column"] = label
    return g[["mix", "fine_label", "label_column", "mse_light", "mse_dark", "n_light", "n_dark"]].reset_index(drop=True)


def _boxplots(per_run: pd.DataFrame, per_image: pd.DataFrame, metric: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"light": "#e8b27a", "dark": "#6b3e26"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (data, col, what) in zip(axes, ((per_run, f"{metric}_mean", "per-run means"),
                                            (per_image, metric, "per image"))):
        mixes = [m for m in MIX_ORDER if (data["mix"] == m).any()]
        for i, m in enumerate(mixes):
            for j, g in enumerate(GROUP_ORDER):
                key = "group" if "group" in data else "tone_group"
                v = data[(data["mix"] == m) & (data[key] == g)][col].dropna().to_numpy()
                if not len(v):
                    continue
                b = ax.boxplot([v], positions=[i * 3 + j], widths=0.8, patch_artist=True, showfliers=what == "per image")
                b["boxes"][0].set_facecolor(colours[g])
                ax.scatter(np.full(len(v), i * 3 + j) + (np.random.default_rng(0).uniform(-0.2, 0.2, len(v))
                                                         if what != "per image" else 0), v, s=8, c="k", zorder=3,
                           alpha=1.0 if what != "per image" else 0.0)
        ax.set_xticks([i * 3 + 0.5 for i in range(len(mixes))])
        ax.set_xticklabels([f"train {m}" for m in mixes])
        ax.set_title(f"{title}: {what}")
        ax.set_ylabel(metric.replace("_", " "))
    from matplotlib.patches import Patch

    axes[1].legend(handles=[Patch(facecolor=colours[g], label=f"{g} test") for g in GROUP_ORDER], loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reconstruction_grid(folders_by_mix: dict, path: Path, repeat: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = {m: np.load(Path(f) / "eval" / "report_test" / "examples.npz") for m, f in folders_by_mix.items()}
    mixes = [m for m in MIX_ORDER if m in ex]
    first = ex[mixes[0]]
    cols, ids = [], []
    for g in GROUP_ORDER:
        if f"{g}_image" in first:
            for k in range(len(first[f"{g}_image"])):
                cols.append((g, k))
                ids.append(str(first[f"{g}_case_id"][k]))
    for m in mixes[1:]:  # the same test images in every model of the repeat
        other = [str(ex[m][f"{g}_case_id"][k]) for g, k in cols]
        if other != ids:
            raise ValueError(f"repeat {repeat}: mix {m}'s example images {other} differ from mix {mixes[0]}'s {ids}")
    fig, axes = plt.subplots(1 + len(mixes), len(cols), figsize=(1.3 * len(cols), 1.4 * (1 + len(mixes))), squeeze=False)
    for j, (g, k) in enumerate(cols):
        axes[0, j].imshow(first[f"{g}_image"][k])
        axes[0, j].set_title(g, fontsize=7)
        for i, m in enumerate(mixes):
            axes[i + 1, j].imshow(ex[m][f"{g}_recon"][k])
    for i, name in enumerate(["input"] + [f"train {m}" for m in mixes]):
        axes[i, 0].set_ylabel(name, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"test images and their reconstructions, repeat {repeat}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ids


def _prevalence_plot(table: pd.DataFrame, path: Path, top: int = 15) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grans = list(dict.fromkeys(table["granularity"]))
    fig, axes = plt.subplots(1, len(grans), figsize=(5 * len(grans), 4.5), squeeze=False)
    for ax, gname in zip(axes[0], grans):
        t = table[table["granularity"] == gname].copy()
        t["total"] = t["count_light"] + t["count_dark"]
        t = t.sort_values("total", ascending=False).head(top)[::-1]
        y = np.arange(len(t))
        ax.barh(y - 0.2, t["share_light"], height=0.4, color="#e8b27a", label="light")
        ax.barh(y + 0.2, t["share_dark"], height=0.4, color="#6b3e26", label="dark")
        ax.set_yticks(y)
        ax.set_yticklabels([str(v)[:28] for v in t["value"]], fontsize=7)
        ax.set_xlabel("share of the group's images")
        ax.set_title(gname + (f" (top {top})" if len(table[table["granularity"] == gname]) > top else ""))
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fine_label_plot(table: pd.DataFrame, path: Path, min_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = [m for m in MIX_ORDER if (table["mix"] == m).any()] or list(MIX_ORDER)
    fig, axes = plt.subplots(1, len(mixes), figsize=(4.2 * len(mixes), 4.2), squeeze=False)
    for ax, m in zip(axes[0], mixes):
        t = table[table["mix"] == m]
        # each panel its own range (the mixes' errors differ by an order of magnitude), square, from 0
        hi = float(np.nanmax(t[["mse_light", "mse_dark"]].to_numpy())) * 1.15 if len(t) else 1.0
        ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="y = x")
        ax.scatter(t["mse_light"], t["mse_dark"], s=14)
        for r in t.itertuples():
            ax.annotate(f"{str(r.fine_label)[:18]} ({r.n_light}/{r.n_dark})", (r.mse_light, r.mse_dark), fontsize=6)
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("mean MSE, light test images")
        ax.set_ylabel("mean MSE, dark test images")
        ax.set_title(f"train {m}: labels with >= {min_images} images per group")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_vae_report(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                     manifest: str | os.PathLike | None = None, min_images: int = 5, light: Sequence[str] = ("1", "2"),
                     dark: Sequence[str] = ("5", "6"), split: str = "test") -> dict:
    """Write the design's report (module docstring) to ``out``; return ``summary.json``'s content.

    ``manifest`` (Figure 7) defaults to the one recorded in the first run's ``models/run_record.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_run, per_image = collect_runs(folders, split)
    per_run.to_csv(out / "per_run.csv", index=False)
    per_image.to_csv(out / "per_image.csv", index=False)
    _boxplots(per_run, per_image, "mse", out / "mse_boxplots.png", "reconstruction MSE")
    _boxplots(per_run, per_image, "latent_std", out / "latent_std_boxplots.png", "mean latent std")
    grids = {}
    by_repeat: dict[tuple, dict] = {}
    for f in folders:
        r = per_run[per_run["run"] == Path(f).name].iloc[0]
        by_repeat.setdefault((int(r["seed"]), int(r["repeat"])), {})[str(r["mix"])] = f
    for (seed, rep), mixes in sorted(by_repeat.items())[:1]:
        grids[f"reconstructions_repeat{rep}.png"] = _reconstruction_grid(mixes, out / f"reconstructions_repeat{rep}.png", rep)
    if manifest is None:
        record = Path(folders[0]) / "models" / "run_record.json"
        if record.is_file():
            manifest = json.loads(record.read_text())["fairmonai_run_record"].get("manifest")
    prevalence = None
    if manifest is not None:
        prevalence = condition_prevalence(manifest, light=light, dark=dark)
        prevalence.to_csv(out / "condition_prevalence.csv", index=False)
        _prevalence_plot(prevalence, out / "condition_prevalence.png")
    fine = fine_label_table(per_image, min_images)
    fine.to_csv(out / "fine_label_mse.csv", index=False)
    _fine_label_plot(fine, out / "fine_label_mse.png", min_images)
    means = {m: _means(per_run, m).round(6).to_dict(orient="index") for m in METRICS}
    summary = {"runs": int(per_run["run"].nunique()), "repeats": sorted(per_run["repeat"].unique().tolist()),
               "mixes": [m for m in MIX_ORDER if (per_run["mix"] == m).any()], "means_over_repeats": means,
               "orderings": ordering_checks(per_run),
               "gap_tests": {m: gap_test(per_run, m, "B") for m in METRICS},
               "reconstruction_grids": grids, "manifest": None if manifest is None else str(manifest),
               "fine_labels_shown": int(len(fine)), "min_images": int(min_images)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [f"# Skin-tone representation design: {summary['runs']} runs, repeats {summary['repeats']}", "",
             "| training set | group | mean MSE | mean latent std |", "|---|---|---|---|"]
    for m in summary["mixes"]:
        for g in GROUP_ORDER:
            lines.append(f"| {m} | {g} | {means['mse'].get(m, {}).get(g, float('nan')):.5f} | "
                         f"{means['latent_std'].get(m, {}).get(g, float('nan')):.5f} |")
    lines += ["", "## The paper's orderings", ""]
    lines += [f"- {k}: {'holds' if v['holds'] else 'does not hold' if v['holds'] is False else 'n/a'} "
              f"({', '.join(f'{a} {b:.5f}' for a, b in v['values'].items())})" for k, v in summary["orderings"].items()]
    lines += ["", "## Light-dark gap under B (Wilcoxon signed-rank over repeats; added, the paper names no test)", ""]
    for m, t in summary["gap_tests"].items():
        p = "n/a" if t["p_value"] is None else f"{t['p_value']:.4g}"
        md = "n/a" if t["mean_difference"] is None else f"{t['mean_difference']:.5f}"
        lines.append(f"- {m}: dark - light mean {md} over {t['n_repeats']} repeats, p = {p} ({t['note']})")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return summary
