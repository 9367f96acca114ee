"""One run per output at a time: two `synth run`s of one job into one output, a stale lease, a live
lease held elsewhere, and the lease on an S3-compatible server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from synth.engine.lease import LEASE, TTL_S, Lease, LeaseHeld, LeaseRecord
from synth.engine.storage import Storage
from synth.spec import OutputSpec
from tests.support.runs import env, error_lines, http_provider, ids_of, job_doc, synth_cmd, synth_run, write_job


def leased_job(tmp_path: Path, count: int, **extra) -> tuple[Path, Path]:
    out = tmp_path / "out"
    return write_job(tmp_path / "job.yaml", job_doc("leased", out, count, seed=3, **extra)), out


def test_two_runs_of_one_job_into_one_output_one_refused(ray_address, tmp_path):
    job, out = leased_job(tmp_path, 3000)
    procs = [
        subprocess.Popen(
            synth_cmd(job, address=ray_address), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=400) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], [r[1][-1500:] for r in results]
    refused = next(r for p, r in zip(procs, results) if p.returncode == 3)
    lines = error_lines(refused[1])
    assert len(lines) == 1, refused[1]
    winner = next(p for p in procs if p.returncode == 0)
    assert f"is being written by another synth run (host {socket.gethostname()}, pid {winner.pid}, since " in lines[0]
    assert "new output path" in lines[0]
    got = ids_of(out)
    assert len(got) == len(set(got)) == 3000
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] and stats["shards"]["written_this_run"] == 30
    assert not (out / "_manifest" / "lease.json").exists()  # released at the end


def test_a_stale_lease_is_taken_over(ray_address, tmp_path):
    job, out = leased_job(tmp_path, 300)
    old = datetime.now(timezone.utc) - timedelta(seconds=TTL_S + 60)
    stale = LeaseRecord(
        holder="crashed-run", host="another-machine", pid=4242, started_at=old.isoformat(), renewed_at=old.isoformat()
    )
    (out / "_manifest").mkdir(parents=True)
    (out / "_manifest" / "lease.json").write_text(stale.model_dump_json())
    r = synth_run(job, address=ray_address)
    assert r.returncode == 0, r.stderr[-2000:]
    got = ids_of(out)
    assert len(got) == len(set(got)) == 300
    assert not (out / "_manifest" / "lease.json").exists()


def test_a_live_lease_refuses_a_run_quickly_and_it_writes_nothing(tmp_path):
    job, out = leased_job(tmp_path, 300)
    held = Lease(Storage(OutputSpec(uri=str(out)))).acquire().start()  # heartbeating in this process
    try:
        before = (out / "_manifest" / "lease.json").read_bytes()
        for i, extra in enumerate(((), ("--overwrite",))):  # --overwrite does not remove another run's lease either
            ray_tmp = tmp_path / f"ray{i}"  # where its embedded Ray would keep its session, were it started
            ray_tmp.mkdir()
            r = synth_run(job, *extra, timeout=120, environ=env(RAY_TMPDIR=str(ray_tmp)))
            assert r.returncode == 3, r.stderr[-2000:]
            lines = error_lines(r.stderr)
            assert len(lines) == 1 and f"(host {socket.gethostname()}, pid {os.getpid()}, since " in lines[0], r.stderr
            assert list(ray_tmp.iterdir()) == []  # refused before Ray or anything else starts
            assert sorted(p.name for p in out.iterdir()) == ["_manifest"]
            assert sorted(p.name for p in (out / "_manifest").iterdir()) == ["lease.json"]
            assert held.read().holder == held.id
        assert held.held and not held.lost
        assert json.loads(before)["started_at"] == held.read().started_at
    finally:
        held.release()


def s3_storage(endpoint: str, bucket: str) -> Storage:
    return Storage(OutputSpec(uri=f"s3://{bucket}/ds", storage={"endpoint_url": endpoint}))


def test_s3_racing_acquirers_exactly_one_wins(s3_bucket):
    endpoint, bucket = s3_bucket
    n = 8
    leases = [Lease(s3_storage(endpoint, bucket)) for _ in range(n)]
    start = threading.Barrier(n)
    won: list[Lease] = []
    refused: list[str] = []

    def go(lease: Lease) -> None:
        start.wait()
        try:
            won.append(lease.acquire())
        except LeaseHeld as e:
            refused.append(str(e))

    threads = [threading.Thread(target=go, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(refused) == n - 1
    assert all("is being written by another synth run" in m for m in refused)
    assert won[0].read().holder == won[0].id
    won[0].release()
    assert s3_storage(endpoint, bucket).read_bytes(LEASE) is None


def test_s3_expired_lease_is_taken_over_once_and_the_old_holder_finds_out(s3_bucket):
    endpoint, bucket = s3_bucket
    old = Lease(s3_storage(endpoint, bucket)).acquire()
    with pytest.raises(LeaseHeld):
        Lease(s3_storage(endpoint, bucket)).acquire()
    assert old.renew()  # a heartbeat: a conditional put on the ETag it just read
    later = lambda: time.time() + TTL_S + 1  # noqa: E731 - the clock of a run started after the TTL
    takers = [Lease(s3_storage(endpoint, bucket), clock=later) for _ in range(4)]
    start = threading.Barrier(len(takers))
    won: list[Lease] = []

    def go(lease: Lease) -> None:
        start.wait()
        try:
            won.append(lease.acquire())
        except LeaseHeld:
            pass

    threads = [threading.Thread(target=go, args=(t,)) for t in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and won[0].read().holder == won[0].id
    assert old.renew() is False and old.lost
    old.release()  # leaves the new holder's lease alone
    assert won[0].read().holder == won[0].id
    won[0].release()
    assert Lease(s3_storage(endpoint, bucket)).read() is None


def test_a_run_whose_lease_passes_to_another_stops_and_leaves_it(simulator, ray_address, tmp_path):
    """A holder that finds another run's id in its lease (it stalled past the TTL and was taken over)
    stops as Ctrl-C stops it, keeps what it committed, and leaves the other run's lease in place."""
    simulator.restore()
    # 10 answers a second: 900 units would take 90 s, so the run is still buying when its lease passes
    job, out = leased_job(tmp_path, 900, shard=20, providers=[http_provider(simulator.url, limits={"rpm": 600})])
    proc = subprocess.Popen(
        synth_cmd(job, "--no-cache", address=ray_address),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lease = out / "_manifest" / "lease.json"
    commits = out / "_manifest" / "commits"
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    try:
        # well under way: a shard committed, and a heartbeat renewed the lease since it was taken
        while time.monotonic() < deadline and not (len(seen) >= 2 and list(commits.glob("*.json"))):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                seen.add(json.loads(lease.read_text())["renewed_at"])
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.1)  # polling an observable condition, bounded by the deadline
        now = datetime.now(timezone.utc).isoformat()
        other = LeaseRecord(holder="other-run", host="another-machine", pid=7, started_at=now, renewed_at=now)
        Storage(OutputSpec(uri=str(out))).write_bytes(LEASE, other.model_dump_json().encode())
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, stderr[-2000:]
    lines = error_lines(stderr)
    assert len(lines) == 1 and "passed to another synth run (host another-machine, pid 7)" in lines[0], stderr
    assert json.loads(lease.read_text())["holder"] == "other-run"
    assert not (out / "stats.json").exists()  # stopped before the end
    got = ids_of(out)
    assert 0 < len(got) == len(set(got)) < 900
