"""A one-node Ray cluster (ray.cluster_utils.Cluster) that gains a node while a job runs with
``engine.max_workers`` above its starting workers. Run as a script by test_cluster.py; prints a
JSON summary."""

from __future__ import annotations

import json
import os
import sys
import time

import ray
import ray.util.state
from ray.cluster_utils import Cluster

from synth.api import load_job
from tests.support.runs import start_run
from tests.support.simulator import SimulatorProcess

COUNT = 3200


def main(out: str, max_workers: int) -> None:
    sim = SimulatorProcess(ttft_ms=200, tpot_ms=0).start()
    try:
        scenario(out, sim, max_workers)
    finally:
        sim.stop()


def worker_nodes() -> list[str]:
    return [
        a["node_id"]
        for a in ray.util.state.list_actors(filters=[("state", "=", "ALIVE")])
        if "ShardWorker" in a["class_name"]
    ]


def scenario(out: str, sim: SimulatorProcess, max_workers: int) -> None:
    os.environ["GROW_KEY"] = "sk-grow-one"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1"})
    ray.init(address=cluster.address, log_to_driver=False)
    job = load_job(
        {
            "name": "grow",
            "count": COUNT,
            "seed": 1,
            "generator": {
                "kind": "structured",
                "prompt": "Item {n}",
                "vars": {"n": {"kind": "range", "low": 1, "high": 10**6}},
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            },
            # 16 requests in flight at 200 ms: 80 records/s, 40 s; Ray Data notices a new node within 20 s
            "providers": [
                {
                    "name": "default",
                    "model": "compat:m",
                    "base_url": sim.openai_url,
                    "keys": [{"env": "GROW_KEY", "max_concurrency": 16}],
                }
            ],
            "output": {"uri": out, "shard_size": 25},
            "engine": {"workers": 2, "max_workers": max_workers, "concurrency": 25},
        }
    )
    t, result, manifest = start_run(job)
    deadline = time.monotonic() + 120
    while t.is_alive() and not manifest.committed() and time.monotonic() < deadline:
        time.sleep(0.1)  # the job is under way before the node joins
    committed_at_join = len(manifest.committed())
    before = worker_nodes()
    joined = cluster.add_node(num_cpus=8, node_ip_address="127.0.0.1")  # Ray Data shares a small one out
    cluster.wait_for_nodes()
    on_new: list[str] = []
    while t.is_alive() and time.monotonic() < deadline:
        on_new = [n for n in worker_nodes() if n == joined.node_id]
        if on_new:
            break
        time.sleep(0.2)
    t.join(timeout=300)
    run = result.get("run")
    print(
        "RESULT "
        + json.dumps(
            {
                "error": result.get("error"),
                "complete": run.complete if run else False,
                "records": run.records if run else 0,
                "dead": run.dead_letters if run else 0,
                "shards": len(manifest.committed()),
                "committed_at_join": committed_at_join,
                "workers_before": len(before),
                "worker_on_new_node": bool(on_new),
                "joined": joined.node_id,
                "head": cluster.head_node.node_id,
            }
        ),
        flush=True,
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
