"""`.ci/run` must fail when pytest collects no test (exit code 5), not pass as green."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_script_runs_make_test_only():
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#")]
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]


def test_make_test_fails_when_no_test_is_collected(tmp_path):
    # The venv exists (this test runs inside it), so `make test` goes straight to pytest.
    venv = Path(sys.executable).parent.parent
    (tmp_path / "test_nothing.py").write_text("# no tests here\n")
    env = {**os.environ, "PYTEST_ADDOPTS": ""}
    res = subprocess.run(
        ["make", "-s", "test", f"VENV={venv}", f"PYTEST_ARGS={tmp_path} -p no:cacheprovider --rootdir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert "no tests ran" in res.stdout
    assert res.returncode != 0
