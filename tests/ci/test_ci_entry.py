"""`.ci/run` (which runs `make test`) must fail when pytest collects no test (exit code 5), not pass as green."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_run_fails_when_no_test_is_collected(tmp_path):
    """`.ci/run` itself, with make's variables from the environment (the venv this test runs in, so make
    goes straight to pytest; a folder holding no test): pytest says so and the script exits non-zero."""
    venv = Path(sys.executable).parent.parent
    (tmp_path / "test_nothing.py").write_text("# no tests here\n")
    env = {**os.environ, "PYTEST_ADDOPTS": "", "VENV": str(venv),
           "PYTEST_ARGS": f"{tmp_path} -p no:cacheprovider --rootdir={tmp_path}"}
    res = subprocess.run(["bash", str(ROOT / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert "no tests ran" in res.stdout
    assert res.returncode != 0
