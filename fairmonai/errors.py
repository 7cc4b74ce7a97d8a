"""User-input errors, and how a bundle run reports them.

**The problem.** A bundle runs as ``python -m monai.bundle run``. An error in what the user gave it (a
manifest value, an image file) is raised deep inside MONAI's config machinery, which wraps it:
``RuntimeError: Failed to evaluate ConfigExpression ...`` or ``RuntimeError: applying transform ...``,
each ``raise ... from`` the one before. The user's error is line 13 of a 60-line traceback and the
last line names a MONAI object, not the file at fault.

**The design.** Two parts, both small:

* :class:`InputError`, the base class of every error about user input that fairmonai raises:
  :class:`~fairmonai.data.ManifestError` (file, row and column of a manifest),
  :class:`~fairmonai.data.ImageCheckError` (the header check of a data list: case ids and files)
  and :class:`~fairmonai.data.ImageReadError` (an image that cannot be read: case id and file).
  Raising code needs nothing else; the class is what marks an error as the user's to fix. It
  subclasses ``ValueError`` so existing ``except ValueError`` code keeps working, and it is built
  from one message string (``InputError(message)``), as PyTorch's ``DataLoader`` does when it
  re-raises a worker's exception in the main process.
* :func:`install_excepthook`, called when ``fairmonai`` is imported (every bundle config imports
  it), replaces ``sys.excepthook`` with a hook that, for an uncaught exception, prints the normal
  traceback (the previous hook's output, unchanged), then, when the exception chain
  (``__cause__`` / ``__context__``) holds an :class:`InputError`, prints ``<ErrorClass>: <message>``
  of that error as the **last line** of stderr. The process then exits with status 1 as Python
  always does after an uncaught exception. Nothing is caught or swallowed: the hook only runs
  when the interpreter is already exiting because of the exception, and only adds output.

  Through a ``DataLoader`` with worker processes the exception object does not survive (the
  worker's traceback is re-raised as text inside a ``RuntimeError``); the hook then finds the
  line ``...<InputError subclass>: <message>`` in that text and repeats it last.

  Under ``torchrun`` each rank is its own ``python -m monai.bundle run`` process, so the hook runs
  on the failing rank (its output prefixed ``[rankN]:``); when torchrun gave the rank an error file
  (``TORCHELASTIC_ERROR_FILE``), the hook also records the error there, its traceback ending with
  the :class:`InputError`'s line, so the "Root Cause" block of torchrun's summary, which the
  launcher prints last (followed only by its ``====`` rule), ends with it too.

**No SIGABRT.** MONAI's ``CacheDataset`` fills its cache in a ``multiprocessing.pool.ThreadPool``
inside ``with``; when a case fails, ``with`` calls ``terminate()``, which drops the queued cases but
does not wait for the worker threads, so a worker is still transforming another case (in PyTorch's
C++ code, the GIL released) while the exception travels up and the interpreter shuts down. A
daemon thread that asks for the GIL after shutdown has begun is ended with ``pthread_exit``, whose
forced unwinding through PyTorch's C++ frames calls ``std::terminate``: ``terminate called without
an active exception``, exit 134. (Seen under gdb: the aborting thread's stack is
``PyThread_exit_thread`` <- ``take_gil`` <- ``THPVariable_clear`` in a MONAI transform's tensor
indexing.) The worker's unfinished task is harmless while the interpreter lives; it is fatal only
at shutdown, so that is where the hook deals with it: before returning, it waits (up to
``pool_join_timeout`` seconds) for the pool worker threads still running (``DummyProcess``, the
thread class of every ``ThreadPool``) to finish their task and exit. Should one still run after
that (or at once after Ctrl-C), the hook flushes stdio and the logging handlers and ends the
process with ``os._exit(1)`` (130 after Ctrl-C), which skips the shutdown that would kill the
thread. This runs for every uncaught exception, not only input errors. A ``ThreadPool`` left open
(neither closed nor terminated) keeps idle workers alive, which delays such an exit by the timeout.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.dummy import DummyProcess
from types import TracebackType

__all__ = ["InputError", "find_input_error", "input_error_line", "install_excepthook", "POOL_JOIN_TIMEOUT"]

#: Seconds the hook waits for thread-pool workers still running a task before the process exits.
POOL_JOIN_TIMEOUT = 30.0


class InputError(ValueError):
    """An error in what the user gave a run (a manifest, an image file, a data list), not in the code.

    Subclasses name where the problem is (file, row and column; case id and file). A bundle run
    that stops on one prints ``<ErrorClass>: <message>`` as its last line (see
    :func:`install_excepthook`).
    """


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first, each once."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)


def find_input_error(exc: BaseException) -> InputError | None:
    """The outermost :class:`InputError` in ``exc``'s chain (``__cause__``, else ``__context__``), or ``None``."""
    for e in _chain(exc):
        if isinstance(e, InputError):
            return e
    return None


def _input_error_names() -> set[str]:
    names, todo = set(), [InputError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*(?P<name>[A-Za-z_]\w*): (?P<message>.*\S)\s*$")


def _line_from_text(exc: BaseException) -> str | None:
    """The last ``[module.]<InputError subclass>: message`` line in the messages of ``exc``'s chain.

    A ``DataLoader`` worker's exception reaches the main process as the text of its traceback;
    this finds the input error's line in it.
    """
    names = _input_error_names()
    for e in _chain(exc):
        found = None
        for line in str(e).splitlines():
            m = _ERROR_LINE.match(line)
            if m and m.group("name") in names:
                found = f"{m.group('name')}: {m.group('message')}"
        if found is not None:
            return found
    return None


def input_error_line(exc: BaseException) -> str | None:
    """``"<ErrorClass>: <message>"`` of the input error behind ``exc``, or ``None`` when there is none.

    The error is the outermost :class:`InputError` of the chain; failing that, the line such an
    error left in the text of a chained exception (a ``DataLoader`` worker's re-raised traceback).
    """
    err = find_input_error(exc)
    if err is not None:
        return f"{type(err).__name__}: {err}"
    return _line_from_text(exc)


def _record_for_torchelastic(exc: BaseException, line: str) -> None:
    """Write ``line`` as this rank's root cause into torchrun's error file, when torchrun gave one."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    import json
    import traceback

    # torchrun's summary prints py_callstack under "Root Cause": end it with the input error's line
    callstack = "".join(traceback.format_exception(exc)) + line + "\n"
    data = {"message": {"message": line, "extraInfo": {"py_callstack": callstack, "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass


def _finish_pool_workers(timeout: float) -> bool:
    """Wait up to ``timeout`` s in all for running ``ThreadPool`` worker threads; True when none is left."""
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if isinstance(t, DummyProcess) and t is not threading.current_thread() and t.is_alive():
            t.join(max(0.0, deadline - time.monotonic()))
    return not any(isinstance(t, DummyProcess) and t.is_alive() for t in threading.enumerate())


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing more to save
            pass
    logging.shutdown()


def _make_hook(previous: Callable, pool_join_timeout: float) -> Callable:
    def fairmonai_excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        previous(exc_type, exc, tb)
        line = input_error_line(exc) if isinstance(exc, Exception) else None
        if line is not None:
            print(line, file=sys.stderr)
            _record_for_torchelastic(exc, line)
        interrupted = not isinstance(exc, Exception)  # Ctrl-C: do not make the user wait
        if not _finish_pool_workers(0.0 if interrupted else pool_join_timeout):
            _flush_all()
            os._exit(130 if interrupted else 1)
        try:
            sys.stderr.flush()
        except Exception:
            pass

    fairmonai_excepthook.fairmonai = True  # type: ignore[attr-defined]
    fairmonai_excepthook.previous = previous  # type: ignore[attr-defined]
    return fairmonai_excepthook


def install_excepthook(pool_join_timeout: float = POOL_JOIN_TIMEOUT) -> None:
    """Install the fairmonai ``sys.excepthook`` (see the module docstring); installing twice is a no-op.

    The hook calls the hook it replaces first, so other customisations keep working.

    Args:
        pool_join_timeout: seconds to wait for thread-pool workers still running a task at exit
            before ending the process with ``os._exit(1)``.
    """
    if getattr(sys.excepthook, "fairmonai", False):
        return
    sys.excepthook = _make_hook(sys.excepthook, pool_join_timeout)
