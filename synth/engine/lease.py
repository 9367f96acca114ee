"""One run per output at a time: the lease ``<output>/_manifest/lease.json``.

A run takes the lease before it claims the output folder, renews it by a heartbeat (every
``HEARTBEAT_S``) and releases it at every stop. A second run into the same output finds it live and
is refused in one line naming the holder (exit 3), having written nothing. A holder that died stops
renewing: its lease expires ``TTL_S`` after the last heartbeat and the next run takes it over (at
once when the holder was a process of this machine that is gone, so a killed run resumes at once).

Every change is a compare-and-swap (:mod:`synth.engine.leasestore`), so two runs never both hold it:

- a local folder: the lease is created by hard-linking a complete temporary file (which fails when
  one exists, like ``O_CREAT | O_EXCL``); renewals, takeovers and releases compare and write under
  an exclusive ``flock`` of the ``_manifest`` folder;
- S3: a conditional put creates it (``If-None-Match: *``), and renewals, takeovers and releases
  carry ``If-Match`` with the ETag just read;
- other fsspec stores: exclusive create where the store offers it; a renewal or takeover reads
  again just before it writes, so two takeovers of the same expired lease within one round trip
  could both write (the later wins, and the earlier finds out at its first heartbeat).

After each write the lease is read back: holding it means reading one's own id there.

Expiry compares ``renewed_at`` with this machine's clock: machines sharing an output need clocks
that agree to within a few seconds (NTP). A holder that stalls longer than the TTL (a suspended
laptop) and finds at its next heartbeat that another run took over stops as Ctrl-C stops it; what
its workers publish in the seconds before that can meet the new run's cleanup, the one overlap the
TTL bounds rather than excludes.
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import psutil
from pydantic import BaseModel

from synth.engine.leasestore import store_for
from synth.engine.storage import Storage
from synth.errors import StorageError

LEASE = "_manifest/lease.json"
TTL_S = 30.0  # a lease not renewed for this long is expired
HEARTBEAT_S = 5.0  # renewal period: several chances to renew before the TTL runs out
ATTEMPTS = 5  # compare-and-swap rounds before giving up on a lease that keeps changing
log = logging.getLogger("synth.engine.lease")


class LeaseHeld(StorageError):
    """Another live run holds the output's lease."""


class LeaseLost(StorageError):
    """This run's lease was taken over by another run (it stalled past the TTL)."""


class LeaseRecord(BaseModel):
    """What the lease object holds: who holds it and since when."""

    holder: str
    host: str
    pid: int
    pid_started: float | None = None  # the process's start time: a reused pid is not the holder
    pid_ns: str | None = None  # the pid namespace: a pid means something only within it
    started_at: str
    renewed_at: str
    ttl_s: float = TTL_S

    def age(self, now: float) -> float:
        return now - _epoch(self.renewed_at)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _pid_ns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def holder_gone(rec: LeaseRecord) -> bool:
    """True when the holder provably died: a process of this machine (same host and pid namespace)
    that no longer runs. Anything else is judged by the TTL alone."""
    if rec.host != socket.gethostname() or rec.pid_ns != _pid_ns():
        return False
    born = _started(rec.pid)
    return born is None or (rec.pid_started is not None and abs(born - rec.pid_started) > 0.01)


# ------------------------------------------------------------------ the lease
class Lease:
    """The lease on one output folder. ``acquire()`` takes it or raises :class:`LeaseHeld`;
    ``start()`` renews it every ``heartbeat_s`` in a daemon thread; ``release()`` stops the
    heartbeat and removes the lease if it is still this run's. ``clock`` (epoch seconds) and
    ``gone`` (is a holder provably dead) are seams for tests."""

    def __init__(
        self,
        storage: Storage,
        *,
        ttl_s: float = TTL_S,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.time,
        gone: Callable[[LeaseRecord], bool] = holder_gone,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.storage, self.ttl_s, self.heartbeat_s = storage, ttl_s, heartbeat_s
        self.clock, self.gone, self.on_lost = clock, gone, on_lost
        self.id = uuid.uuid4().hex
        self.held = False
        self.lost: str | None = None
        self._store = store_for(storage, LEASE)
        self._started_at: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        now = _iso(self.clock())
        pid = os.getpid()
        rec = LeaseRecord(
            holder=self.id,
            host=socket.gethostname(),
            pid=pid,
            pid_started=_started(pid),
            pid_ns=_pid_ns(),
            started_at=self._started_at or now,
            renewed_at=now,
            ttl_s=self.ttl_s,
        )
        return json.dumps(rec.model_dump(), indent=1).encode()

    @staticmethod
    def parse(data: bytes | None) -> LeaseRecord | None:
        if data is None:
            return None
        try:
            return LeaseRecord.model_validate_json(data)
        except ValueError:  # not a lease synth wrote: treated as expired
            return LeaseRecord(holder="?", host="?", pid=0, started_at=_iso(0), renewed_at=_iso(0))

    def read(self) -> LeaseRecord | None:
        """The lease as it is now (None when no run holds one)."""
        return self.parse(self._store.read()[0])

    def expired(self, rec: LeaseRecord) -> bool:
        return rec.age(self.clock()) > max(rec.ttl_s, 0.0) or self.gone(rec)

    def _mine(self) -> bool:
        rec = self.read()
        return rec is not None and rec.holder == self.id

    def acquire(self) -> Lease:
        """Take the lease, or raise :class:`LeaseHeld` naming the live holder."""
        try:
            for _ in range(ATTEMPTS):
                data, token = self._store.read()
                rec = self.parse(data)
                if rec is not None and rec.holder != self.id and not self.expired(rec):
                    raise LeaseHeld(self.held_message(rec))
                self._started_at = _iso(self.clock())
                if rec is None:
                    self._store.create(self._record())
                elif rec.holder != self.id:  # expired: replaced only if no one changed it meanwhile
                    log.info(
                        "taking over the expired lease of %s (host %s, pid %s)", self.storage.uri, rec.host, rec.pid
                    )
                    self._store.replace(self._record(), token)
                if self._mine():  # read back: whatever the writes said, the lease says who holds it
                    self.held = True
                    return self
            rec = self.read()
            raise LeaseHeld(
                self.held_message(rec)
                if rec
                else f"{self.storage.uri}: the lease keeps changing; "
                "another synth run is starting on this output; try again in a few seconds"
            )
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - fsspec/botocore errors vary; name the cause in one line
            raise StorageError(
                f"cannot take the lease {self.storage.url(LEASE)}: {type(e).__name__}: "
                f"{(str(e).strip().splitlines() or [''])[0][:200]}; check the output's storage"
            ) from None

    def held_message(self, rec: LeaseRecord) -> str:
        age = max(0.0, rec.age(self.clock()))
        return (
            f"{self.storage.uri} is being written by another synth run (host {rec.host}, pid {rec.pid}, "
            f"since {rec.started_at[:19]}Z, last heartbeat {age:.0f} s ago); wait for it to finish or stop it "
            f"(a stopped run's lease expires {rec.ttl_s:.0f} s after its last heartbeat), or use a new output path"
        )

    def renew(self) -> bool:
        """One heartbeat: False when the lease is no longer this run's (``lost`` says why)."""
        data, token = self._store.read()
        rec = self.parse(data)
        if rec is None:  # removed under us: take it again unless someone else already has
            self._store.create(self._record())
        elif rec.holder == self.id:
            self._store.replace(self._record(), token)
        if self._mine():
            return True
        now = self.read()
        who = f"host {now.host}, pid {now.pid}" if now else "no one"
        self.lost = (
            f"the lease on {self.storage.uri} passed to another synth run ({who}) after this run "
            f"did not renew it for over {self.ttl_s:.0f} s; this run stopped; what it committed is kept"
        )
        self.held = False
        return False

    def start(self) -> Lease:
        """Renew every ``heartbeat_s`` in a daemon thread until released or lost."""
        self._thread = threading.Thread(target=self._beat, name="synth-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.renew():
                    if not self._stop.is_set():
                        log.error("%s", self.lost)
                        if self.on_lost is not None:
                            self.on_lost(self.lost or "")
                    return
                last_ok = time.monotonic()
            except Exception as e:  # noqa: BLE001 - storage unreachable for a moment: try again next beat
                late = time.monotonic() - last_ok
                (log.warning if late > self.ttl_s / 2 else log.debug)(
                    "renewing the lease on %s failed (%s), %.0f s since the last renewal",
                    self.storage.uri,
                    type(e).__name__,
                    late,
                )

    def release(self) -> None:
        """Stop the heartbeat; remove the lease if it is still this run's."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.heartbeat_s + 30)
        if not self.held:
            return
        self.held = False
        try:
            data, token = self._store.read()
            rec = self.parse(data)
            if rec is not None and rec.holder == self.id:
                self._store.delete(token)
        except Exception as e:  # noqa: BLE001 - an unreleased lease only delays the next run by the TTL
            log.warning(
                "could not release the lease on %s (%s); it expires in %.0f s",
                self.storage.uri,
                type(e).__name__,
                self.ttl_s,
            )


# A process a shell starts in the background ignores SIGINT, and then ``_thread.interrupt_main()``
# does nothing; while a run holds its lease, this signal's handler raises KeyboardInterrupt instead.
_INTERRUPT = signal.SIGUSR2


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def interrupt_main() -> None:
    """Stop the main thread's run as Ctrl-C does, from any thread, whether or not SIGINT is handled."""
    _thread.interrupt_main(signal.SIGINT if callable(signal.getsignal(signal.SIGINT)) else _INTERRUPT)


@contextmanager
def hold(storage: Storage, **kwargs: Any) -> Iterator[Lease]:
    """Hold the output's lease for the body. Losing it to another run interrupts the body (when it
    runs in the main thread) and ends as :class:`LeaseLost`; the lease is released at every exit."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(_INTERRUPT, _raise_interrupt) if main else None
    try:
        lease = Lease(storage, on_lost=(lambda _msg: interrupt_main()) if main else None, **kwargs).acquire()
        lease.start()
        try:
            yield lease
        except KeyboardInterrupt:
            if lease.lost:
                raise LeaseLost(lease.lost) from None
            raise
        finally:
            lease.release()
    finally:
        if main:
            signal.signal(_INTERRUPT, previous)
