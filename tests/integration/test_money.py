"""Money is data: every answer paid for ends in the dataset and none is bought twice, whatever
stops the run (SIGKILL, a budget), judged by the simulator's own count of answers it gave. The runs
are `synth run` subprocesses joining one Ray started for the session (``ray_address``), except one
killed run that starts its own embedded Ray: that one's Ray must go with it."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pytest

from tests.support.runs import (
    KEY_A,
    env,
    error_lines,
    files_holding,
    http_provider,
    ids_of,
    job_doc,
    stats_of,
    synth_cmd,
    synth_run,
    write_job,
)

CONCURRENCY = 16  # per key: the most answers that can be in flight when a run is killed


def money_job(tmp: Path, url: str, out: Path, *, count: int, rpm: int, shard: int, retries: int = 6, **extra) -> Path:
    provider = http_provider(
        url,
        limits={"rpm": rpm, "max_concurrency": CONCURRENCY},
        price={"input_per_mtok": 150, "output_per_mtok": 600},
        max_retries=retries,
    )
    doc = job_doc("money", out, count, shard=shard, seed=11, prompt="Describe item {n}", providers=[provider], **extra)
    return write_job(tmp / "job.yaml", doc)


def ray_processes_of(proc: subprocess.Popen) -> dict[psutil.Process, str]:
    """The processes of the embedded Ray a run started (its reaper aside), with their names."""
    found = {}
    try:
        for p in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "reaper" not in " ".join(p.cmdline()):
                    found[p] = p.name()
    except psutil.NoSuchProcess:
        pass
    return found


@pytest.mark.timeout(600)
def test_sigkill_five_times_pays_once(simulator, ray_address, tmp_path):
    # the suite's version; benchmarks/reliability.py kills a run ten times and records the figures
    simulator.restore()
    n = 800
    out = tmp_path / "out"
    # 100 answers a second: a kill 0.1 to 1.2 s into buying leaves most of the job for later kills
    job = money_job(tmp_path, simulator.url, out, count=n, rpm=6000, shard=100)
    rng = random.Random(7)
    kills = 0
    left_behind: dict[psutil.Process, str] = {}
    for k in range(5):
        # both executors buy into the same journal: the first run starts its own Ray, the next two
        # run in one process without Ray, the last two join the session's Ray
        embedded = k == 0
        where = ["--executor", "ray"] if embedded else ["--executor", "local"] if k < 3 else []
        before = simulator.stats()["ok"]
        proc = subprocess.Popen(
            synth_cmd(job, "--no-cache", *where, address=None if k < 3 else ray_address),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        # kill at a random moment once this run is buying answers
        while proc.poll() is None and simulator.stats()["ok"] <= before and time.monotonic() < deadline:
            time.sleep(0.05)  # polling an observable condition (the simulator's count), bounded
        ray_procs = ray_processes_of(proc) if embedded else {}
        if proc.poll() is None:
            try:
                proc.wait(rng.uniform(0.1, 1.2))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait()
        if embedded:
            assert any("raylet" in name or "gcs" in name for name in ray_procs.values()), ray_procs
            left_behind = ray_procs
    assert kills >= 4, f"only {kills} runs were still running when their kill came"

    r = synth_run(job, "--no-cache", "--executor", "local")
    assert r.returncode == 0, r.stderr[-3000:]
    ids = ids_of(out)
    assert len(ids) == len(set(ids)) == n
    stats = stats_of(out)
    asked = simulator.stats()["ok"]
    print(
        f"\nSIGKILL x{kills}: planned {n}, answers asked of the provider {asked}, records {stats['records']}, "
        f"replayed in the last run {stats['answers']['journal_hits']}"
    )
    # reasks: a structured answer the simulator gives is valid unless malformed_rate is set (it is 0)
    assert asked <= n * 1.01 + kills * CONCURRENCY
    assert not files_holding(out, KEY_A)
    # the embedded Ray of the killed run went with it (long before the runs after it ended)
    assert not [p for p in left_behind if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    # the same content as a run that was never killed (a new output; the cache is off)
    whole = tmp_path / "whole"
    r = synth_run(job, "--no-cache", "-o", str(whole), address=ray_address)
    assert r.returncode == 0, r.stderr[-3000:]
    a = pads.dataset(str(out / "data")).to_table(columns=["id", "record"]).sort_by("id")
    b = pads.dataset(str(whole / "data")).to_table(columns=["id", "record"]).sort_by("id")
    assert a.num_rows == n and a.equals(b)


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_budget_stop_then_resume_with_more_pays_once(simulator, ray_address, tmp_path, executor):
    simulator.restore()
    where = {"address": ray_address} if executor == "ray" else {}
    n = 400
    out = tmp_path / "out"
    job = money_job(tmp_path, simulator.url, out, count=n, rpm=6000, shard=100, budget={"max_usd": 1})
    first = synth_run(job, "--no-cache", "--executor", executor, **where)
    assert first.returncode == 4, first.stderr[-3000:]  # stopped by its budget
    assert "budget" in first.stderr
    paid_first = simulator.stats()["ok"]
    assert 0 < paid_first < n
    committed_first = stats_of(out)["records"]
    # the journal holds every answer bought, committed or not
    journaled = sum(1 for f in (out / "_journal").rglob("*.jsonl") for line in f.read_bytes().splitlines() if line)
    assert journaled >= paid_first

    job.write_text(job.read_text().replace('"max_usd": 1}', '"max_usd": 100}'))
    second = synth_run(job, "--no-cache", "--executor", executor, **where)
    assert second.returncode == 0, second.stderr[-3000:]
    asked = simulator.stats()["ok"]
    stats = stats_of(out)
    print(f"\nbudget stop: planned {n}, answers asked {paid_first} then {asked} in total, records {stats['records']}")
    assert asked <= n * 1.01
    # what the first run bought and did not commit was replayed, not bought again
    assert stats["answers"]["journal_hits"] >= paid_first - committed_first - CONCURRENCY
    ids = ids_of(out)
    assert len(ids) == len(set(ids)) == n


def test_a_second_run_into_a_new_output_asks_for_nothing(simulator, ray_address, tmp_path):
    simulator.restore()
    n = 120
    job = money_job(tmp_path, simulator.url, tmp_path / "a", count=n, rpm=6000, shard=40)
    first = synth_run(job, address=ray_address)
    assert first.returncode == 0, first.stderr[-3000:]
    asked = simulator.stats()["ok"]
    assert asked >= n
    second = synth_run(job, "-o", str(tmp_path / "b"), address=ray_address)
    assert second.returncode == 0, second.stderr[-3000:]
    assert simulator.stats()["ok"] == asked  # every answer came from the cache
    stats = stats_of(tmp_path / "b")
    assert stats["answers"]["cache_hits"] == n and stats["records"] == n
    # the same data, cost aside (a cached answer costs nothing)
    a = pads.dataset(str(tmp_path / "a" / "data")).to_table(columns=["id", "record"]).sort_by("id")
    b = pads.dataset(str(tmp_path / "b" / "data")).to_table(columns=["id", "record"]).sort_by("id")
    assert a.equals(b)
    cache = Path(os.environ["SYNTH_CACHE_DIR"])
    assert list(cache.rglob("*.jsonl")) and not files_holding(cache, KEY_A)
    # the cache commands see it, and clear it
    cli = [sys.executable, "-m", "synth", "cache"]
    st = subprocess.run([*cli, "stats", str(cache), "--json"], env=env(), capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and json.loads(st.stdout)["entries"] == n
    cl = subprocess.run([*cli, "clear", str(cache)], env=env(), capture_output=True, text=True, timeout=60)
    assert cl.returncode == 0 and f"removed {n}" in cl.stdout
    assert not list(cache.rglob("*.jsonl"))


def test_a_run_where_every_call_fails_says_so_and_exits_non_zero(simulator, ray_address, tmp_path):
    simulator.restore()
    out = tmp_path / "out"
    job = money_job(tmp_path, simulator.url, out, count=20, rpm=6000, shard=10, retries=0)
    simulator.configure(error_rate=1.0)
    try:
        r = synth_run(job, address=ray_address)
    finally:
        simulator.restore()
    assert r.returncode == 6, r.stderr[-3000:]
    first = error_lines(r.stderr)[0]
    assert first.startswith("error: all 20 calls to compat:gpt-4o-mini failed:") and "HTTP 5" in first, first
    stats = stats_of(out)
    assert stats["dead_letters"] == 20 and stats["failure_reasons"][0]["count"] == 20
    assert KEY_A not in r.stderr + r.stdout
