"""Records as they are committed: ``synth.stream(job)`` runs a job and yields each committed data
file as a ``pyarrow.Table`` while the job runs, and ``synth generate --stream`` writes them to
stdout as JSON lines.

A :class:`Follower` watches the output's manifest: a data file is read once its shard's commit
entry lists it, and never again (files are immutable once committed; a later piece of a shard adds
files beside them), so every record comes out exactly once, in commit order.

Stopping early. The CLI runs the job in the main thread and stops it as Ctrl-C does
(:func:`synth.engine.lease.interrupt_main`, which works with SIGINT ignored too): what is made is
committed and the answer journal shipped. In the SDK the job runs in a background thread, stopped through :func:`synth.engine.run.run_job`'s ``stop``
event, which ends it the same way.

    import synth
    for table in synth.stream("job.yaml"):     # pyarrow Tables, one per committed data file
        print(table.num_rows)
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from synth.errors import StorageError

if TYPE_CHECKING:
    import pyarrow as pa

    from synth.spec import JobSpec

log = logging.getLogger("synth.stream")
POLL_S = 0.25  # how often the manifest is read for new commits


class Follower:
    """New committed records of an output, file by file. ``poll()`` returns the tables of data files
    committed since the last call (empty when none, or before the run has claimed the output)."""

    def __init__(self, uri: str, storage: dict[str, Any] | None = None) -> None:
        self.uri = uri
        self.storage = storage
        self.seen: set[str] = set()
        self.records = 0

    def poll(self) -> list[pa.Table]:
        from synth.dataset import Output

        try:
            out = Output(self.uri, self.storage)
        except StorageError:
            return []  # not claimed by the run yet (no job.json): nothing is committed
        new = [rel for rel in out.data_files if rel not in self.seen]
        if not new:
            return []
        ds = out.dataset()  # only committed files; schema unified over them
        paths = {out.storage.path(rel): rel for rel in new}
        tables = []
        for frag in ds.get_fragments():
            rel = paths.get(frag.path)
            if rel is None:
                continue
            t = frag.to_table(schema=ds.schema)
            self.seen.add(rel)
            self.records += t.num_rows
            if t.num_rows:
                tables.append(t)
        return tables


def stream(
    job: str | Path | dict[str, Any] | JobSpec,
    *,
    output: str | None = None,
    count: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    poll_s: float = POLL_S,
) -> Iterator[pa.Table]:
    """Run (or resume) ``job`` and yield its records as ``pyarrow.Table`` s, one per data file, as
    shards commit: every record exactly once, those an earlier run committed first. Leaving the
    loop early (``break``, an exception, closing the generator) stops the run as Ctrl-C does; what
    is committed stays, and running the job again resumes it. When the run ends without completing,
    the error ``synth run``'s exit code names is raised after the last records."""
    from synth.api import load_job, preflight

    spec = load_job(job, overrides={"output.uri": output, "count": count})
    from synth.engine.run import run_job
    from synth.quick import raise_for_outcome

    state: dict[str, Any] = {}
    stop = threading.Event()

    def work() -> None:
        try:
            state["result"] = run_job(
                spec, address=address, overwrite=overwrite, progress=False, preflight=preflight, stop=stop
            )
        except KeyboardInterrupt:
            state["cancelled"] = True
        except BaseException as e:  # noqa: BLE001 - raised in the consumer's thread
            state["error"] = e

    follower = Follower(spec.output.uri, spec.output.storage.model_dump(exclude_none=True))
    thread = threading.Thread(target=work, name="synth-stream-run", daemon=True)
    thread.start()
    try:
        while True:
            running = thread.is_alive()
            yield from follower.poll()
            if not running:
                break
            thread.join(poll_s)
        if "error" in state:
            raise state["error"]
        if "result" in state:
            raise_for_outcome(state["result"])
    finally:
        if thread.is_alive():
            stop.set()
            thread.join()


def to_stdout(
    follower: Follower, stop: threading.Event, drop: tuple[str, ...] = (), out: IO[bytes] | None = None
) -> dict[str, Any]:
    """The body of ``synth generate --stream``'s writer thread: JSON lines of the records' own
    columns as shards commit, until ``stop`` is set (then once more). A reader that closes its end
    (``| head``) interrupts the run in the main thread; the state says so."""
    import os

    from synth.engine.lease import interrupt_main
    from synth.export.rows import dumps
    from synth.quick import payload_columns

    state: dict[str, Any] = {"broken": False, "lines": 0}
    sink = out if out is not None else sys.stdout.buffer

    def thread_body() -> None:
        last = False
        while True:
            last = stop.is_set()
            try:
                for t in follower.poll():
                    rows = t.select(payload_columns(t.schema, drop)).to_pylist()
                    sink.write(b"".join(dumps(r) + b"\n" for r in rows))
                    sink.flush()
                    state["lines"] += len(rows)
            except BrokenPipeError:
                state["broken"] = True
                # later writes (the interpreter's own flush at exit) go nowhere instead of failing
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sink.fileno())
                os.close(devnull)
                if not stop.is_set():
                    interrupt_main()  # stops the run as Ctrl-C does
                return
            except Exception as e:  # noqa: BLE001 - reported by the command after the run
                state["error"] = e
                return
            if last:
                return
            stop.wait(POLL_S)

    state["thread"] = threading.Thread(target=thread_body, name="synth-stream-out", daemon=True)
    state["thread"].start()
    return state


__all__ = ["Follower", "stream", "to_stdout"]
