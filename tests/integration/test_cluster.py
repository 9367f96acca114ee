"""Multi-node: gateways and workers on two nodes; the worker node is lost mid-run; the job completes.
A node that joins mid-run gets workers when the job allows the pool to grow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads

from synth.simulator.stats import key_label

ROOT = Path(__file__).resolve().parents[2]


def test_job_survives_losing_a_node(tmp_path):
    out = str(tmp_path / "out")
    summary = run_scenario("tests.integration.cluster_scenario", out)
    assert summary["error"] is None, summary
    # gateways and workers were placed on both nodes before one was lost
    assert len(summary["nodes"].get("GatewayActor", [])) == 2, summary
    assert summary["doomed"] in summary["nodes"]["GatewayActor"]
    workers = [n for k, v in summary["nodes"].items() if "ShardWorker" in k for n in v]
    assert summary["doomed"] in workers and len(set(workers)) == 2, summary
    assert summary["committed_at_loss"] < 24
    assert summary["complete"] and summary["records"] + summary["dead"] == 1200
    # the lost node's gateway was replaced on the other node, and its key served the rest of the run
    assert summary["gateways_replaced"] >= 1, summary
    assert summary["keys_after_loss"] == sorted(key_label(k) for k in ("sk-cluster-one", "sk-cluster-two")), summary
    assert summary["doomed"] not in summary["nodes"]["MonitorActor"]  # progress and the directory live on
    ids = pads.dataset(f"{out}/data").to_table(columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids)) == summary["records"]


def run_scenario(module: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def test_workers_grow_onto_a_node_that_joins_mid_run(tmp_path):
    out = str(tmp_path / "out")
    summary = run_scenario("tests.integration.cluster_grow_scenario", out, "4")
    assert summary["error"] is None, summary
    assert summary["workers_before"] == 2 and summary["committed_at_join"] < summary["shards"], summary
    # engine.max_workers 4 over 2 starting workers: Ray Data adds workers on the node that joined
    # (a fixed pool, max_workers unset, leaves that node without any)
    assert summary["worker_on_new_node"], summary
    assert summary["complete"] and summary["records"] + summary["dead"] == 3200, summary
    ids = pads.dataset(f"{out}/data").to_table(columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids)) == summary["records"]
