"""Only synth's own output on the terminal during a run: Ray's logs and warnings go to a log file.

Ray writes to the terminal in three ways: its C++ core prints straight to file descriptor 2, its
Python loggers (``ray``, ``ray.data``) print to ``sys.stderr``, and Ray Data raises Python warnings.
While a run is on, fds 1 and 2 point at the log file (processes Ray starts inherit that, not the
terminal), ``sys.stdout``/``sys.stderr`` write to the terminal through saved copies of the original
fds (so the progress line and synth's own messages still show), and Ray's loggers and Python
warnings write to the log file. With ``verbose`` the terminal is left as it is and Ray's loggers and
warnings are copied to the log file as well.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from typing import Any, TextIO

from synth.engine.storage import Storage

LOGS = "_logs"
log = logging.getLogger("synth.engine")


def log_name(now: datetime | None = None) -> str:
    """``_logs/run-<UTC timestamp>.log``, relative to the output."""
    now = now or datetime.now(timezone.utc)
    return f"{LOGS}/run-{now:%Y%m%dT%H%M%SZ}.log"


@contextmanager
def ray_logs(storage: Storage, verbose: bool = False) -> Iterator[str]:
    """Route Ray's output to ``<output>/_logs/run-<UTC timestamp>.log`` for the duration; yields the
    local path written. A remote output gets the file from a local temporary one at the end."""
    rel = log_name()
    if storage.local:
        path = storage.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
    else:  # written locally (it must exist before Ray starts), uploaded when the run ends
        fd, path = tempfile.mkstemp(prefix="synth-run-", suffix=".log")
        os.close(fd)
    try:
        with terminal_only_ours(path, verbose):
            yield path
    finally:
        if not storage.local:
            _upload(storage, rel, path)


def _upload(storage: Storage, rel: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            storage.write_bytes(rel, f.read())
    except Exception as e:  # noqa: BLE001 - a log that cannot be uploaded must not fail the run
        log.warning("could not write Ray's log to %s (%s); it is kept at %s", storage.url(rel), type(e).__name__, path)
    else:
        os.remove(path)


@contextmanager
def terminal_only_ours(log_path: str, verbose: bool = False) -> Iterator[None]:
    """Inside: the terminal shows synth's output only; Ray's goes to ``log_path`` (appended). With
    ``verbose``, Ray's loggers and warnings go to both. Everything is restored on exit, exceptions
    and KeyboardInterrupt included."""
    import ray.data  # noqa: F401 - it sets up its loggers on import: imported first so they are routed

    with ExitStack() as undo:
        out = _open_log(log_path)
        undo.callback(out.close)
        out.write(f"# {datetime.now(timezone.utc).isoformat()} pid {os.getpid()}: Ray's logs and warnings\n")
        undo.enter_context(_route_ray_loggers(out, keep_console=verbose))
        undo.enter_context(_route_warnings(out, tee=verbose))
        if not verbose:
            undo.enter_context(_fd_to_log(1, "stdout", out))
            undo.enter_context(_fd_to_log(2, "stderr", out))
        yield


def _open_log(path: str) -> TextIO:
    # O_APPEND: Python's writes and the C++ core's writes to fd 2 interleave without overwriting
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return io.TextIOWrapper(
        io.FileIO(fd, "w", closefd=True), encoding="utf-8", errors="backslashreplace", write_through=True
    )


@contextmanager
def _fd_to_log(fd: int, name: str, out: TextIO) -> Iterator[None]:
    """Point ``fd`` at the log file; ``sys.<name>``, if it writes to ``fd``, keeps the terminal."""
    stream: Any = getattr(sys, name)
    _flush(stream)
    terminal = os.dup(fd)
    try:
        os.dup2(out.fileno(), fd)
        ours = None
        if _fileno(stream) == fd:  # not when it is a notebook's or a test runner's stream: it is not moved
            ours = io.TextIOWrapper(
                io.FileIO(terminal, "w", closefd=False),
                encoding=stream.encoding,
                errors=stream.errors or "backslashreplace",
                line_buffering=True,
                write_through=True,
            )
            setattr(sys, name, ours)
        try:
            yield
        finally:
            if ours is not None:
                _flush(ours)
                setattr(sys, name, stream)
                ours.close()
            _flush(stream)  # what Ray wrote through the original stream belongs to the log
            _flush_c_stdio()
            os.dup2(terminal, fd)
    finally:
        os.close(terminal)


@contextmanager
def _route_ray_loggers(out: TextIO, keep_console: bool) -> Iterator[None]:
    """Ray's loggers that print to the console print to the log file instead (or as well)."""
    to_file = logging.StreamHandler(out)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_file.setLevel(logging.INFO)
    changed: list[tuple[logging.Logger, list[logging.Handler]]] = []
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger) or not (name == "ray" or name.startswith("ray.")):
            continue
        console = [
            h for h in lg.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]
        if not console:
            continue
        removed: list[logging.Handler] = [] if keep_console else list(console)
        for h in removed:
            lg.removeHandler(h)
        lg.addHandler(to_file)
        changed.append((lg, removed))
    try:
        yield
    finally:
        for lg, removed in changed:
            lg.removeHandler(to_file)
            for h in removed:
                if h not in lg.handlers:
                    lg.addHandler(h)


@contextmanager
def _route_warnings(out: TextIO, tee: bool) -> Iterator[None]:
    original = warnings.showwarning

    def show(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
    ) -> None:
        if file is None:
            try:
                out.write(warnings.formatwarning(message, category, filename, lineno, line))
            except (OSError, ValueError):  # the log is closed or gone: the warning is not worth a crash
                pass
        if file is not None or tee:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _flush(stream: Any) -> None:
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _flush_c_stdio() -> None:
    """C code's buffered stdout would otherwise reach the terminal once the fds are back."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass
