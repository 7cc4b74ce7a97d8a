"""``python -m fairmonai.reports`` on bad input: status 1, one stderr line naming the case and the column,
nothing written, and the check runs before torch / MONAI / matplotlib are imported. Also: the missing-value
counts per attribute in report.json, report.md and on stdout.

Timing is not asserted here (benchmarks time things); the import check is what keeps rejection fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from fairmonai.reports import ReportInputError, write_report
from fairmonai.reports._inputs import MSG_BAD_VALUE, MSG_EMPTY_FILE, MSG_NOT_FOUND
from fairmonai.reports.__main__ import main

CLS = "case_id,label,score,sex\na,0,0.2,male\nb,1,{score},female\nc,1,0.9,female\n"
SEG = "case_id,dice,{hd_col},age_group\na,0.8,0.1,0-40\nb,{dice},{hd},41-50\n"
GOOD = "case_id,label,score,sex\na,0,0.2,male\nb,1,0.7,male\nc,0,0.6,female\nd,1,0.9,female\n"
PROB = "case_id,label,prob_0,prob_1,prob_2,sex\na,2,0.1,0.2,0.7,male\nb,0,{p0},0.2,0.3,female\n"

# (file text, the error after "<path>: "); every case id and column named is the one at fault
BAD_INPUTS = {
    "score_1.7": (CLS.format(score="1.7"), "case 'b', column 'score': value 1.7 is outside [0, 1]"),
    "score_-0.2": (CLS.format(score="-0.2"), "case 'b', column 'score': value -0.2 is outside [0, 1]"),
    "score_NaN": (CLS.format(score="NaN"), "case 'b', column 'score': value 'NaN' is missing (empty or NaN)"),
    "score_nan_lower": (CLS.format(score="nan"), "case 'b', column 'score': value 'nan' is missing (empty or NaN)"),
    "score_inf": (CLS.format(score="inf"), "case 'b', column 'score': value 'inf' is not finite"),
    "score_text": (CLS.format(score="high"), "case 'b', column 'score': value 'high' is not a number"),
    "score_empty": (CLS.format(score=""), "case 'b', column 'score': value '' is missing (empty or NaN)"),
    "dice_1.5": (SEG.format(hd_col="normhd", dice="1.5", hd="0.2"),
                 "case 'b', column 'dice': value 1.5 is outside [0, 1]"),
    "normhd_-0.3": (SEG.format(hd_col="normhd", dice="0.5", hd="-0.3"),
                    "case 'b', column 'normhd': value -0.3 is negative (NormHD = HD95 / hd_max is >= 0)"),
    "normhd_inf": (SEG.format(hd_col="normhd", dice="0.5", hd="inf"),
                   "case 'b', column 'normhd': value 'inf' is not finite"),
    "hd95_-1": (SEG.format(hd_col="hd95", dice="0.5", hd="-1"),
                "case 'b', column 'hd95': value -1 is negative (a distance; inf when one mask is empty)"),
    "hd95_-inf": (SEG.format(hd_col="hd95", dice="0.5", hd="-inf"), "case 'b', column 'hd95': value '-inf' is "
                                                                    "not finite"),
    "prob_sum": (PROB.format(p0="0.1"), "case 'b', column 'prob_0..prob_2': probabilities sum to 0.6, not 1 "
                                        "(tolerance 0.001)"),
    "label_binary_2": ("case_id,label,score,sex\na,2,0.3,male\n",
                       "case 'a', column 'label': label 2 is not 0 or 1 (a binary 'score' column; use "
                       "prob_0..prob_{K-1} for K classes)"),
    "label_fraction": ("case_id,label,score,sex\na,0.5,0.3,male\n",
                       "case 'a', column 'label': label 0.5 is not a class index (0, 1, ...)"),
    "several_bad": ("case_id,label,score,sex\na,0,1.2,male\nb,1,1.3,male\nc,1,1.4,female\n",
                    "case 'a', column 'score': value 1.2 is outside [0, 1] (2 more case(s) in this column)"),
    "empty_file": ("", "the predictions file is empty (0 bytes)"),
    "row_too_long": ("case_id,label,score,sex\na,0,0.2,male,extra\n",
                     "cannot be read as CSV (a row has more fields than the header)"),
    "header_only": ("case_id,label,score,sex\n", "the predictions file has a header but no rows"),
    "missing_score_column": ("case_id,label,sex\na,0,male\n",
                             "cannot tell the task: expected 'dice' (segmentation) or 'label' with 'score' / "
                             "'prob_*' columns (classification); columns are ['case_id', 'label', 'sex']"),
    "missing_case_id_column": ("id,label,score,sex\na,0,0.3,male\n", "missing column 'case_id'"),
    "missing_hd_column": ("case_id,dice,age_group\na,0.5,0-40\n",
                          "segmentation predictions need a 'normhd' or 'hd95' column"),
}


def _cli(path, out, *extra):
    return main([str(path), "--out", str(out), "--n-bootstrap", "0", *extra])


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_exits_1_with_one_line_naming_case_and_column(tmp_path, capsys, name):
    text, error = BAD_INPUTS[name]
    p = tmp_path / f"{name}.csv"
    p.write_text(text)
    out = tmp_path / "out" / "report"
    assert _cli(p, out) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {p}: {error}\n"  # exactly one line
    assert not (tmp_path / "out").exists()  # not even the parent folder
    assert sorted(x.name for x in tmp_path.iterdir()) == [p.name]


def test_missing_file_and_missing_attribute_column(tmp_path, capsys):
    assert _cli(tmp_path / "nope.csv", tmp_path / "out") == 1
    assert capsys.readouterr().err == "error: " + MSG_NOT_FOUND.format(path=tmp_path / "nope.csv") + "\n"
    p = tmp_path / "p.csv"
    p.write_text(GOOD)
    assert _cli(p, tmp_path / "out", "--attributes", "race") == 1
    assert capsys.readouterr().err == f"error: {p}: missing attribute column(s) ['race']\n"
    assert _cli(p, tmp_path / "out", "--confidence-level", "1.5") == 1
    assert capsys.readouterr().err == "error: confidence_level must be a number in (0, 1), got 1.5\n"
    assert not (tmp_path / "out").exists()


def test_message_constants_match_the_text():
    assert MSG_EMPTY_FILE.format(path="p.csv") == "p.csv: the predictions file is empty (0 bytes)"
    assert MSG_BAD_VALUE.format(path="p.csv", case="b", column="score", problem="value 1.7 is outside [0, 1]",
                                more="") == "p.csv: case 'b', column 'score': value 1.7 is outside [0, 1]"


def test_legal_edge_values_are_accepted(tmp_path):
    # hd95 inf (one mask empty) -> NormHD 1; a NormHD above 1 is legal (the public script does not clip);
    # Dice exactly 0 and 1; both columns present: normhd is used
    pd.DataFrame({"case_id": ["a", "b", "c", "d"], "dice": [1.0, 0.0, 0.5, 0.5], "hd95": [0, "inf", 30, 15],
                  "normhd": [0.0, 1.0, 1.3, 0.1], "age_group": ["0-40", "0-40", "41-50", "41-50"]}
                 ).to_csv(tmp_path / "s.csv", index=False)
    rep = json.loads(write_report(tmp_path / "s.csv", tmp_path / "r", attributes=["age_group"])["json"].read_text())
    assert rep["mean_normhd"] == pytest.approx((0 + 1 + 1.3 + 0.1) / 4)
    # only hd95: NormHD = min(hd95 / 150, 1), inf -> 1
    pd.DataFrame({"case_id": ["a", "b"], "dice": [1.0, 0.0], "hd95": [15, "inf"], "age_group": ["0-40", "41-50"]}
                 ).to_csv(tmp_path / "h.csv", index=False)
    rep = json.loads(write_report(tmp_path / "h.csv", tmp_path / "q", attributes=["age_group"])["json"].read_text())
    assert rep["mean_normhd"] == pytest.approx((0.1 + 1.0) / 2)


def test_failure_after_the_check_leaves_nothing(tmp_path, monkeypatch):
    from fairmonai.reports import plots

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    p = tmp_path / "p.csv"
    p.write_text(GOOD)
    monkeypatch.setattr(plots, "metric_bar_chart", broken)
    monkeypatch.setattr(plots, "fairness_chart", broken)  # the classification report's fairness figure
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(p, tmp_path / "new" / "rep", n_bootstrap=0)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.csv"]  # no report, no temporary folder
    # an existing report folder keeps its files untouched
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text("{}")
    with pytest.raises(RuntimeError):
        write_report(p, tmp_path / "old", n_bootstrap=0)
    assert [x.name for x in (tmp_path / "old").iterdir()] == ["report.json"]
    assert (tmp_path / "old" / "report.json").read_text() == "{}"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["old", "p.csv"]


def test_rejection_imports_no_torch_monai_or_matplotlib(tmp_path):
    """Every bad input is rejected before the heavy libraries load (this is what makes rejection fast)."""
    paths = []
    for name, (text, _) in BAD_INPUTS.items():
        p = tmp_path / f"{name}.csv"
        p.write_text(text)
        paths.append(str(p))
    paths.append(str(tmp_path / "missing.csv"))
    script = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from fairmonai.reports.__main__ import main
        codes = []
        for p in {paths!r}:
            with contextlib.redirect_stderr(io.StringIO()):
                codes.append(main([p, "--out", p + ".out"]))
        print(json.dumps({{"codes": codes, "loaded": [m for m in ("torch", "monai", "matplotlib", "ignite")
                                                   if m in sys.modules]}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["codes"] == [1] * len(paths)
    assert result["loaded"] == []
    assert not any(p.name.endswith(".out") for p in tmp_path.iterdir())


def test_cli_process_prints_one_line_and_no_traceback(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text(CLS.format(score="1.7"))
    run = subprocess.run([sys.executable, "-m", "fairmonai.reports", str(p), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr == f"error: {p}: case 'b', column 'score': value 1.7 is outside [0, 1]\n"
    assert run.stdout == "" and not (tmp_path / "o").exists()


# ---- missing-value policies: counted per attribute


def test_exclusion_counts_in_report_json_markdown_and_stdout(tmp_path, capsys):
    # a schema with one attribute per policy; 6 cases:
    #   density (exclude): "" and "unknown" -> 2 excluded; menopause (category): "" -> 1 mapped to 'unknown';
    #   sex (error): complete
    schema = {"name": "toy", "id_column": "case_id", "path_columns": [], "label": None, "attributes": {
        "density": {"categories": ["a", "b"], "missing": "exclude"},
        "menopause": {"categories": ["pre", "post", "unknown"], "missing": "category", "missing_category": "unknown"},
        "sex": {"categories": ["female", "male"], "missing": "error"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    pd.DataFrame({
        "case_id": list("uvwxyz"), "label": [0, 1, 0, 1, 0, 1], "score": [0.2, 0.8, 0.4, 0.6, 0.1, 0.7],
        "density": ["a", "", "unknown", "b", "a", "b"],
        "menopause": ["pre", "post", "", "pre", "post", "pre"],
        "sex": ["female", "male", "female", "male", "female", "male"],
    }).to_csv(tmp_path / "p.csv", index=False)
    assert _cli(tmp_path / "p.csv", tmp_path / "rep", "--schema", str(tmp_path / "schema.json")) == 0
    out = capsys.readouterr().out
    assert "  density: 2 excluded (missing-value policy exclude)\n" in out
    assert "  menopause: 0 excluded, 1 mapped to 'unknown' (missing-value policy category)\n" in out
    assert "  sex: 0 excluded (missing-value policy error)\n" in out
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["missing_values"] == {
        "density": {"policy": "exclude", "n_excluded": 2, "n_unknown": 0, "unknown_category": None},
        "menopause": {"policy": "category", "n_excluded": 0, "n_unknown": 1, "unknown_category": "unknown"},
        "sex": {"policy": "error", "n_excluded": 0, "n_unknown": 0, "unknown_category": None},
    }
    # the metrics agree: 2 density cases in no group; the mapped menopause case is the 'unknown' group
    assert rep["attributes"]["density"]["n_excluded"] == 2
    assert rep["attributes"]["density"]["group_sizes"] == {"a": 2, "b": 2}
    assert rep["attributes"]["menopause"]["group_sizes"] == {"pre": 3, "post": 2, "unknown": 1}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| density | exclude | 2 | - |" in md
    assert "| menopause | category | 0 | 1 ('unknown') |" in md
    assert "6 cases. 2 excluded (in no group, overall figures only); missing-value policy exclude." in md


def test_segmentation_exclusion_counts(tmp_path):
    # MAMA-MIA: breast density 'exclude' (2 empty), menopausal status 'category' (1 'unknown' as the writer puts it)
    pd.DataFrame({"case_id": list("abcd"), "dice": [0.8, 0.6, 0.4, 0.2], "normhd": [0.1, 0.2, 0.3, 0.4],
                  "age_group": ["0-40", "0-40", "41-50", "41-50"],
                  "menopausal_status": ["pre", "unknown", "post", "pre"], "breast_density": ["a", "", "", "d"]}
                 ).to_csv(tmp_path / "seg.csv", index=False)
    files = write_report(tmp_path / "seg.csv", tmp_path / "rep", schema="mama_mia")
    rep = json.loads(files["json"].read_text())
    assert rep["missing_values"]["breast_density"]["n_excluded"] == 2
    assert rep["missing_values"]["menopausal_status"] == {"policy": "category", "n_excluded": 0, "n_unknown": 1,
                                                          "unknown_category": "unknown"}
    assert rep["variables"]["breast_density"]["n_excluded"] == 2
    assert rep["variables"]["menopausal_status"]["counts"] == [2, 1, 1]  # pre, post, unknown


def test_unknown_is_a_value_error_without_the_exclude_policy(tmp_path):
    # 'unknown' means "excluded" only where the schema says so; under policy 'error' it is not a category
    p = tmp_path / "p.csv"
    p.write_text("case_id,label,score,sex\na,0,0.2,unknown\n")
    with pytest.raises(ReportInputError) as err:
        write_report(p, tmp_path / "o", schema="isic2020", n_bootstrap=0)
    assert str(err.value) == (f"{p}: case 'a', column 'sex': value 'unknown' is not one of the schema's categories "
                              "['female', 'male']")


def test_unknown_is_in_no_group_without_a_schema(tmp_path):
    """Without a schema, "unknown" (what the per-case writers write for a case in no group) is left out of
    the groups, unless the caller names it as a group."""
    p = tmp_path / "p.csv"
    p.write_text("case_id,label,score,sex\na,0,0.2,female\nb,1,0.9,male\nc,1,0.7,unknown\nd,0,0.4,male\n")
    rep = json.loads(write_report(p, tmp_path / "o", n_bootstrap=0)["json"].read_text())
    assert rep["attributes"]["sex"]["groups"] == ["female", "male"]
    assert rep["attributes"]["sex"]["n_excluded"] == 1
