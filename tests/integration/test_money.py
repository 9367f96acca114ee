"""Money is data: every answer paid for ends in the dataset and none is bought twice, whatever
stops the run (SIGKILL, a budget), judged by the simulator's own count of answers it gave."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads

KEY = "sk-http-secret-alpha-0001"  # HTTP_KEY_A, set by conftest
CONCURRENCY = 16  # per key: the most answers that can be in flight when a run is killed

JOB = """
name: money
count: {count}
seed: 11
generator:
  kind: structured
  prompt: "Describe item {{n}}"
  vars: {{n: {{kind: range, low: 1, high: 1000000}}}}
  schema: {{type: object, properties: {{a: {{type: string}}, b: {{type: integer}}}}, required: [a, b]}}
providers:
  - name: default
    model: compat:gpt-4o-mini
    base_url: {url}
    keys: [{{env: HTTP_KEY_A, alias: alpha, rpm: {rpm}, max_concurrency: {conc}}}]
    price: {{input_per_mtok: 150, output_per_mtok: 600}}
    max_retries: {retries}
{budget}
output: {{uri: "{out}", shard_size: {shard}}}
"""


def write_job(
    tmp: Path, sim_url: str, out: Path, *, count: int, rpm: int, shard: int, budget: str = "", retries: int = 6
) -> Path:
    job = tmp / "job.yaml"
    job.write_text(
        JOB.format(
            count=count,
            url=sim_url + "/v1",
            rpm=rpm,
            conc=CONCURRENCY,
            out=out,
            shard=shard,
            budget=budget,
            retries=retries,
        )
    )
    return job


def synth_cmd(job: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "synth", "run", str(job), "--quiet", *extra]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def ids_of(out: Path) -> list[str]:
    return pads.dataset(str(out / "data"), partitioning="hive").to_table(columns=["id"])["id"].to_pylist()


def scan(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_sigkill_ten_times_pays_once(simulator, tmp_path):
    simulator.restore()
    n = 1500
    out = tmp_path / "out"
    job = write_job(tmp_path, simulator.url, out, count=n, rpm=2400, shard=100)
    rng = random.Random(7)
    kills = 0
    for _ in range(10):
        before = simulator.stats()["ok"]
        proc = subprocess.Popen(
            synth_cmd(job, "--no-cache"), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        # kill at a random moment once this run is buying answers
        while proc.poll() is None and simulator.stats()["ok"] <= before and time.monotonic() < deadline:
            time.sleep(0.05)  # polling an observable condition (the simulator's count), bounded
        if proc.poll() is None:
            try:
                proc.wait(rng.uniform(0.2, 2.5))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait()
    assert kills >= 8, f"only {kills} runs were still running when their kill came"

    r = subprocess.run(synth_cmd(job, "--no-cache"), env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ids = ids_of(out)
    assert len(ids) == len(set(ids)) == n
    stats = json.loads((out / "stats.json").read_text())
    asked = simulator.stats()["ok"]
    print(
        f"\nSIGKILL x{kills}: planned {n}, answers asked of the provider {asked}, records {stats['records']}, "
        f"replayed in the last run {stats['answers']['journal_hits']}"
    )
    # reasks: a structured answer the simulator gives is valid unless malformed_rate is set (it is 0)
    assert asked <= n * 1.01 + kills * CONCURRENCY
    assert not scan(out, KEY)


def test_budget_stop_then_resume_with_more_pays_once(simulator, tmp_path):
    simulator.restore()
    n = 400
    out = tmp_path / "out"
    job = write_job(tmp_path, simulator.url, out, count=n, rpm=6000, shard=100, budget="budget: {max_usd: 1}")
    first = subprocess.run(synth_cmd(job, "--no-cache"), env=env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 4, first.stderr[-3000:]  # stopped by its budget
    assert "budget" in first.stderr
    paid_first = simulator.stats()["ok"]
    assert 0 < paid_first < n
    committed_first = json.loads((out / "stats.json").read_text())["records"]
    # the journal holds every answer bought, committed or not
    journaled = sum(1 for f in (out / "_journal").rglob("*.jsonl") for line in f.read_bytes().splitlines() if line)
    assert journaled >= paid_first

    job.write_text(job.read_text().replace("max_usd: 1", "max_usd: 100"))
    second = subprocess.run(synth_cmd(job, "--no-cache"), env=env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    asked = simulator.stats()["ok"]
    stats = json.loads((out / "stats.json").read_text())
    print(f"\nbudget stop: planned {n}, answers asked {paid_first} then {asked} in total, records {stats['records']}")
    assert asked <= n * 1.01
    # what the first run bought and did not commit was replayed, not bought again
    assert stats["answers"]["journal_hits"] >= paid_first - committed_first - CONCURRENCY
    ids = ids_of(out)
    assert len(ids) == len(set(ids)) == n


def test_a_second_run_into_a_new_output_asks_for_nothing(simulator, tmp_path):
    simulator.restore()
    n = 120
    job = write_job(tmp_path, simulator.url, tmp_path / "a", count=n, rpm=6000, shard=40)
    first = subprocess.run(synth_cmd(job), env=env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    asked = simulator.stats()["ok"]
    assert asked >= n
    second = subprocess.run(
        synth_cmd(job, "-o", str(tmp_path / "b")), env=env(), capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert simulator.stats()["ok"] == asked  # every answer came from the cache
    stats = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert stats["answers"]["cache_hits"] == n and stats["records"] == n
    # the same data, cost aside (a cached answer costs nothing)
    a = pads.dataset(str(tmp_path / "a" / "data")).to_table(columns=["id", "record"]).sort_by("id")
    b = pads.dataset(str(tmp_path / "b" / "data")).to_table(columns=["id", "record"]).sort_by("id")
    assert a.equals(b)
    cache = Path(os.environ["SYNTH_CACHE_DIR"])
    assert list(cache.rglob("*.jsonl")) and not scan(cache, KEY)
    # the cache commands see it, and clear it
    st = subprocess.run(
        [sys.executable, "-m", "synth", "cache", "stats", str(cache), "--json"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert st.returncode == 0 and json.loads(st.stdout)["entries"] == n
    cl = subprocess.run(
        [sys.executable, "-m", "synth", "cache", "clear", str(cache)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cl.returncode == 0 and f"removed {n}" in cl.stdout
    assert not list(cache.rglob("*.jsonl"))


def test_a_run_where_every_call_fails_says_so_and_exits_non_zero(simulator, tmp_path):
    simulator.restore()
    out = tmp_path / "out"
    job = write_job(tmp_path, simulator.url, out, count=20, rpm=6000, shard=10, retries=0)
    simulator.configure(error_rate=1.0)
    try:
        r = subprocess.run(synth_cmd(job), env=env(), capture_output=True, text=True, timeout=600)
    finally:
        simulator.restore()
    assert r.returncode == 6, r.stderr[-3000:]
    first = next(line for line in r.stderr.splitlines() if line.startswith("error:"))
    assert first.startswith("error: all 20 calls to compat:gpt-4o-mini failed:") and "HTTP 5" in first, first
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dead_letters"] == 20 and stats["failure_reasons"][0]["count"] == 20
    assert KEY not in r.stderr + r.stdout
