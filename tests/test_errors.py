"""fairmonai.errors: finding the input error in a chain, and the excepthook a bundle run exits through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fairmonai.data import ImageReadError, ManifestError
from fairmonai.errors import InputError, find_input_error, input_error_line

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _raise_chain():
    try:
        try:
            raise EOFError("compressed file ended")
        except EOFError as e:
            raise ImageReadError("cannot read the image", case_id="c1", key="image", file="/d/c1.nii.gz") from e
    except ImageReadError as e:
        try:
            raise RuntimeError("applying transform <LoadCaseImaged>") from e
        except RuntimeError:
            raise RuntimeError("Failed to instantiate component 'CacheDataset'")  # implicit __context__


def test_find_input_error_walks_cause_and_context():
    with pytest.raises(RuntimeError) as e:
        _raise_chain()
    err = find_input_error(e.value)
    assert isinstance(err, ImageReadError) and err.case_id == "c1"
    assert input_error_line(e.value) == "ImageReadError: case 'c1', image /d/c1.nii.gz: cannot read the image"
    assert find_input_error(RuntimeError("x")) is None and input_error_line(RuntimeError("x")) is None
    # 'raise ... from None' hides the context
    try:
        try:
            raise ManifestError("bad", file="m.csv", row=2)
        except ManifestError:
            raise KeyError("k") from None
    except KeyError as k:
        assert find_input_error(k) is None


def test_input_error_line_from_a_dataloader_worker_text():
    """A DataLoader worker's exception reaches the main process as text inside a RuntimeError."""
    text = textwrap.dedent("""\
        Caught RuntimeError in DataLoader worker process 0.
        Original Traceback (most recent call last):
          File "x.py", line 1, in f
        fairmonai.data.image_check.ImageReadError: case 'c7', image /d/c7.nii.gz: cannot read the image (EOFError: x)

        The above exception was the direct cause of the following exception:

        RuntimeError: applying transform <monai.transforms.compose.Compose object at 0x7f>""")
    assert input_error_line(RuntimeError(text)) == (
        "ImageReadError: case 'c7', image /d/c7.nii.gz: cannot read the image (EOFError: x)")
    assert input_error_line(RuntimeError("ValueError: not ours")) is None


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**ENV, **env}, timeout=120)


def test_hook_prints_the_input_error_last_and_exits_1():
    res = _python("""
        import fairmonai
        from fairmonai.data import ManifestError
        try:
            raise ManifestError("value 'Martian' is not one of the declared categories", file="m.csv", row=3,
                                column="race")
        except ManifestError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    """)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1
    assert lines[-2] == "RuntimeError: Failed to evaluate ConfigExpression"  # the normal traceback, unchanged
    assert lines[-1] == ("ManifestError: m.csv, row 3, column 'race': value 'Martian' is not one of the "
                         "declared categories")
    # other exceptions: only the normal traceback
    res = _python("import fairmonai\nraise KeyError('k')")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1] == "KeyError: 'k'"


def test_hook_records_the_input_error_for_torchrun(tmp_path):
    error_file = tmp_path / "error.json"
    res = _python("""
        import fairmonai
        from fairmonai.errors import InputError
        raise RuntimeError("wrapper") from InputError("case 'c1', image f.nii.gz: bad")
    """, TORCHELASTIC_ERROR_FILE=str(error_file))
    assert res.returncode == 1
    recorded = json.loads(error_file.read_text())["message"]
    assert recorded["message"] == "InputError: case 'c1', image f.nii.gz: bad"
    assert recorded["extraInfo"]["py_callstack"].splitlines()[-2:] == [
        "RuntimeError: wrapper", "InputError: case 'c1', image f.nii.gz: bad"]


def test_hook_waits_for_a_busy_thread_pool_worker(tmp_path):
    """A terminated ThreadPool leaves its worker running its task; the hook lets it finish before shutdown
    (shutdown would end it with pthread_exit, an abort inside C++ code)."""
    done = tmp_path / "done"
    code = f"""
        import time
        from multiprocessing.pool import ThreadPool
        import fairmonai

        def task(i):
            if i == 0:
                raise ValueError("case 0 fails")
            time.sleep(1.5)
            open({str(done)!r}, "w").write("finished")

        with ThreadPool(2) as pool:
            list(pool.imap(task, [0, 1]))  # case 0 fails while case 1 is still running
    """
    res = _python(code)
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1] == "ValueError: case 0 fails"
    assert done.read_text() == "finished"
    # past the time limit the process ends with os._exit(1) instead of a shutdown that would kill the thread
    done.unlink()
    res = _python(code.replace("import fairmonai", "import sys, fairmonai.errors as fe\n"
                               "        sys.excepthook = fe._make_hook(sys.excepthook.previous, 0.1)")
                  .replace("1.5", "5"))
    assert res.returncode == 1 and not done.exists()


def test_input_error_subclasses():
    assert issubclass(ManifestError, InputError) and issubclass(ImageReadError, InputError)
    assert issubclass(InputError, ValueError)
