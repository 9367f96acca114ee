"""The output lease's logic on a local folder (and fsspec's memory store), with an injected clock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from synth.engine.lease import HEARTBEAT_S, LEASE, TTL_S, Lease, LeaseHeld, LeaseRecord
from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.spec import OutputSpec


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def never_gone(rec: LeaseRecord) -> bool:
    return False


@pytest.fixture(params=["local", "memory"])
def storage(request, tmp_path):
    uri = str(tmp_path / "out") if request.param == "local" else f"memory://lease-{uuid.uuid4().hex}/out"
    return Storage(OutputSpec(uri=uri))


def lease(storage: Storage, clock: Clock, **kw) -> Lease:
    return Lease(storage, clock=clock, gone=never_gone, **kw)


def test_ttl_outlasts_several_heartbeats():
    assert TTL_S >= 4 * HEARTBEAT_S


def test_a_live_lease_refuses_a_second_acquirer_naming_the_holder(storage):
    clock = Clock()
    first = lease(storage, clock).acquire()
    rec = first.read()
    assert rec is not None and rec.holder == first.id and rec.ttl_s == TTL_S
    clock.t += TTL_S - 1  # not renewed, but not expired yet
    with pytest.raises(LeaseHeld) as e:
        lease(storage, clock).acquire()
    msg = str(e.value)
    assert isinstance(e.value, StorageError) and e.value.exit_code == 3
    assert "\n" not in msg
    assert f"host {rec.host}, pid {rec.pid}, since {rec.started_at[:19]}Z" in msg
    assert f"last heartbeat {TTL_S - 1:.0f} s ago" in msg and "new output path" in msg
    assert first.read().holder == first.id  # the refused acquirer changed nothing


def test_an_expired_lease_is_taken_over_and_its_old_holder_finds_out(storage):
    clock = Clock()
    old = lease(storage, clock).acquire()
    clock.t += TTL_S + 0.5
    new = lease(storage, clock).acquire()
    assert new.held and new.read().holder == new.id
    assert old.renew() is False and old.lost and "passed to another synth run" in old.lost
    old.release()  # must not remove the new holder's lease
    assert new.read().holder == new.id
    new.release()
    assert new.read() is None


def test_renewal_keeps_the_lease_alive_past_the_first_ttl(storage):
    clock = Clock()
    held = lease(storage, clock).acquire()
    started = held.read().started_at
    for _ in range(4):  # four heartbeats span twice the TTL
        clock.t += TTL_S / 2
        assert held.renew()
    rec = held.read()
    assert rec.started_at == started and rec.age(clock()) == 0
    with pytest.raises(LeaseHeld):
        lease(storage, clock).acquire()


def test_release_lets_the_next_run_in_at_once(storage):
    clock = Clock()
    lease(storage, clock).acquire().release()
    assert storage.read_bytes(LEASE) is None
    assert lease(storage, clock).acquire().held


def test_a_lease_removed_under_its_holder_is_taken_again_by_it(storage):
    clock = Clock()
    held = lease(storage, clock).acquire()
    storage.remove(LEASE)
    assert held.renew() and held.read().holder == held.id


def test_a_lease_synth_did_not_write_counts_as_expired(storage):
    storage.write_bytes(LEASE, b"not json")
    assert lease(storage, Clock()).acquire().held


def test_the_lease_of_a_process_of_this_machine_that_is_gone_is_taken_at_once(tmp_path):
    """No waiting for the TTL after a kill: the holder's pid is checked (with its start time)."""
    storage = Storage(OutputSpec(uri=str(tmp_path / "out")))
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    clock = Clock(time.time())
    live = Lease(storage, clock=clock).acquire()  # default liveness check: this process is alive
    with pytest.raises(LeaseHeld):
        Lease(storage, clock=clock).acquire()
    rec = json.loads(storage.read_bytes(LEASE))
    rec.update(holder="killed-run", pid=dead_pid, pid_started=None)
    storage.write_bytes(LEASE, json.dumps(rec).encode())
    taker = Lease(storage, clock=clock).acquire()  # renewed_at is fresh, yet the holder is gone
    assert taker.read().holder == taker.id
    assert live.renew() is False


def test_a_holder_on_another_host_is_judged_by_the_ttl_alone(tmp_path):
    storage = Storage(OutputSpec(uri=str(tmp_path / "out")))
    clock = Clock(time.time())
    rec = LeaseRecord(
        holder="h",
        host="some-other-host",
        pid=1,
        started_at="2026-01-01T00:00:00+00:00",
        renewed_at=datetime_iso(clock.t - 5),
    )
    storage.write_bytes(LEASE, rec.model_dump_json().encode())
    with pytest.raises(LeaseHeld, match="host some-other-host, pid 1"):
        Lease(storage, clock=clock).acquire()
    clock.t += TTL_S
    assert Lease(storage, clock=clock).acquire().held


def test_heartbeat_thread_renews_until_released(tmp_path):
    storage = Storage(OutputSpec(uri=str(tmp_path / "out")))
    held = Lease(storage, heartbeat_s=0.02).acquire().start()
    first = held.read().renewed_at
    deadline = time.monotonic() + 10
    while held.read().renewed_at == first and time.monotonic() < deadline:
        time.sleep(0.01)  # polling an observable condition, bounded by the deadline
    assert held.read().renewed_at != first
    held.release()
    assert storage.read_bytes(LEASE) is None and not held._thread.is_alive()


def test_heartbeat_reports_a_lost_lease_once(tmp_path):
    storage = Storage(OutputSpec(uri=str(tmp_path / "out")))
    clock = Clock(time.time())
    lost: list[str] = []
    held = Lease(storage, clock=clock, gone=never_gone, heartbeat_s=0.02, on_lost=lost.append).acquire()
    clock.t += TTL_S + 1
    Lease(storage, clock=clock, gone=never_gone).acquire()  # taken over before the heartbeat starts
    held.start()
    held._thread.join(10)
    assert not held._thread.is_alive() and len(lost) == 1 and "passed to another synth run" in lost[0]


def test_overwrite_keeps_the_lease_of_the_run_replacing_the_folder(tmp_path):
    from synth.engine.manifest import Manifest
    from synth.spec import parse_job

    job = parse_job(
        {
            "name": "j",
            "count": 10,
            "generator": {"kind": "structured", "prompt": "p"},
            "output": {"uri": str(tmp_path / "out"), "shard_size": 5},
        }
    )
    storage = Storage(job.output)
    held = Lease(storage).acquire()
    Manifest(storage).open(job)
    storage.write_bytes("data/x.parquet", b"x")
    storage.write_bytes("_manifest/commits/shard-00000000.json", b"{}")
    Manifest(storage).open(job, overwrite=True)
    assert held.read().holder == held.id
    assert storage.list("data") == [] and storage.list("_manifest/commits") == []
    assert storage.read_bytes("_manifest/job.json") is not None


def datetime_iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat()
