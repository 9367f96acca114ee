"""Ray jobs on a cluster, through the Ray Jobs API: list them, show one's status and logs, stop one.

The address is the Ray dashboard's URL (``http://head:8265``). Every failure to reach it or to find
a job is one ConfigError line naming the address or the job id and what to do."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from synth.errors import ConfigError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# what Ray itself reads for the Jobs API address, in its order
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
CONNECT_TIMEOUT_S = 5.0


class JobRow(BaseModel):
    """What is shown of one Ray job: never its runtime environment (it may carry variables)."""

    id: str
    status: str
    name: str | None = None  # the synth job's name, from the metadata `synth submit` sets
    entrypoint: str = ""
    start: str | None = None
    end: str | None = None
    message: str | None = None

    def line(self) -> str:
        when = self.start or "-"
        took = f" ({_seconds(self.start, self.end):.1f} s)" if self.start and self.end else ""
        entry = " ".join(self.entrypoint.split())  # a driver's entrypoint may span lines
        entry = entry if len(entry) <= 100 else entry[:99] + "…"
        return f"{self.id}  {self.status:<9}  {self.name or '-'}  started {when}{took}  {entry}"


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def _seconds(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def _row(info: Any) -> JobRow:
    status = getattr(info.status, "value", str(info.status))
    return JobRow(
        id=info.submission_id or info.job_id or "-",
        status=status,
        name=(info.metadata or {}).get("synth_job"),
        entrypoint=info.entrypoint or "",
        start=_iso(info.start_time),
        end=_iso(info.end_time),
        message=info.message,
    )


def resolve_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS / RAY_ADDRESS, else the local dashboard's default URL."""
    if address:
        return address
    for name in ADDRESS_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return DEFAULT_ADDRESS


@contextmanager
def _only(address: str) -> Iterator[None]:
    """Ray lets RAY_ADDRESS override the address it is handed; the one resolved here must win."""
    saved = {k: os.environ.pop(k) for k in ADDRESS_VARIABLES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _unreachable(address: str, why: str) -> ConfigError:
    return ConfigError(
        f"cannot reach the Ray Jobs API at {address}: {why}; start the cluster, or pass --address "
        f"with its dashboard URL (e.g. {DEFAULT_ADDRESS}) or set RAY_ADDRESS"
    )


def connect(address: str | None = None) -> tuple[JobSubmissionClient, str]:
    """A client of the Jobs API at ``address`` (resolved as ``resolve_address``) and that address."""
    addr = resolve_address(address)
    url = addr if "://" in addr else f"http://{addr}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        # a quick TCP check first: an address that drops packets would otherwise hang for minutes
        try:
            port = parts.port or (443 if parts.scheme == "https" else 8265)
            with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=CONNECT_TIMEOUT_S):
                pass
        except (OSError, ValueError) as e:
            raise _unreachable(addr, type(e).__name__ if not str(e) else str(e).split("] ")[-1]) from None
    from ray.job_submission import JobSubmissionClient

    try:
        with _only(addr):
            return JobSubmissionClient(addr), addr
    except Exception as e:  # noqa: BLE001 - transports fail in many ways; each is one line
        raise _unreachable(addr, _first_line(e)) from None


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text[:200]


@contextmanager
def _job(job_id: str, address: str) -> Iterator[None]:
    """A request about one job: Ray's 404 becomes one line naming the job."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the client raises RuntimeError for any HTTP failure
        text = str(e)
        if "404" in text or "does not exist" in text:
            raise ConfigError(f"no Ray job {job_id} at {address}; `synth jobs list` shows its jobs") from None
        raise ConfigError(f"Ray job {job_id} at {address}: {_first_line(e)}") from None


def list_jobs(address: str | None = None) -> list[JobRow]:
    """Every job the cluster knows, oldest first."""
    client, addr = connect(address)
    try:
        infos = client.list_jobs()
    except Exception as e:  # noqa: BLE001
        raise _unreachable(addr, _first_line(e)) from None
    return sorted((_row(i) for i in infos), key=lambda r: (r.start or "", r.id))


def job_status(job_id: str, address: str | None = None) -> JobRow:
    client, addr = connect(address)
    with _job(job_id, addr):
        return _row(client.get_job_info(job_id))
    raise AssertionError("unreachable")  # pragma: no cover - for the type checker


def job_logs(job_id: str, address: str | None = None, *, follow: bool = False) -> Iterator[str]:
    """The job's output so far; with ``follow``, chunks as they come until the job ends."""
    client, addr = connect(address)
    with _job(job_id, addr):
        client.get_job_info(job_id)  # an unknown id fails here, in one line, not inside the stream
        if not follow:
            yield client.get_job_logs(job_id)
            return
        loop = asyncio.new_event_loop()
        stream = client.tail_job_logs(job_id)
        try:
            while True:
                try:
                    yield loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(stream, "aclose", None)  # an async generator: end its websocket
            if close is not None:
                loop.run_until_complete(close())
            loop.close()


def stop_job(job_id: str, address: str | None = None, *, wait_s: float = 0.0) -> JobRow:
    """Ask the cluster to stop a job; with ``wait_s``, wait up to that long for it to end.
    A job that has already ended is left as it is (its row says how it ended)."""
    client, addr = connect(address)
    with _job(job_id, addr):
        if _row(client.get_job_info(job_id)).status not in TERMINAL:
            client.stop_job(job_id)
        deadline = time.monotonic() + wait_s
        while True:
            row = _row(client.get_job_info(job_id))
            if row.status in TERMINAL or time.monotonic() >= deadline:
                return row
            time.sleep(0.25)  # polling the job's status, bounded by the deadline
    raise AssertionError("unreachable")  # pragma: no cover
