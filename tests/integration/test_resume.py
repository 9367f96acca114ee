"""SIGKILL of the driver at a random moment, then the same command again: exactly N unique records,
nothing half-written visible, and only the shards in flight at the kill are made again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

JOB = """
name: resume
count: 2400
seed: 5
generator:
  kind: structured
  prompt: "Item {n}"
  vars: {n: {kind: range, low: 1, high: 1000000}}
  schema: {type: object, properties: {a: {type: string}, b: {type: integer}}, required: [a, b]}
output: {uri: "OUT", shard_size: 100}
# 2,400 requests at 24,000 a minute: six seconds however fast the machine, so the kill after the
# third commit always lands mid-run
providers: [{name: default, model: "sim:default", rpm: 24000}]
"""


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_sigkill_then_resume(tmp_path, executor):
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("OUT", str(out)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "synth", "run", str(job), "--quiet", "--executor", executor]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    commits = out / "_manifest" / "commits"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and len(list(commits.glob("*.json")) if commits.exists() else []) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)  # polling an observable condition, bounded by the deadline
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # readers of the data folder see whole files only
    for f in (out / "data").rglob("*.parquet"):
        pq.read_table(f)
    committed_at_kill = {p.name for p in commits.glob("*.json")}
    assert 3 <= len(committed_at_kill) < 24

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] and stats["records"] + stats["dead_letters"] == 2400
    # committed shards were not made again; the rest were made exactly once
    assert stats["shards"]["skipped_this_run"] >= len(committed_at_kill)
    assert stats["shards"]["skipped_this_run"] + stats["shards"]["written_this_run"] == 24
    ids = pads.dataset(str(out / "data")).to_table(columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids)) == stats["records"]
    assert not list((out / "_manifest" / "intents").glob("*.json"))
