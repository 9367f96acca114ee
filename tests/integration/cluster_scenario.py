"""A two-node Ray cluster on one machine (ray.cluster_utils.Cluster) that loses its worker node while
a job runs through the HTTP simulator. Run as a script by test_cluster.py; prints a JSON summary."""

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


def main(out: str) -> None:
    sim = SimulatorProcess(latency_ms=40).start()
    try:
        scenario(out, sim)
    finally:
        sim.stop()


def scenario(out: str, sim: SimulatorProcess) -> None:
    os.environ["CLUSTER_KEY_1"] = "sk-cluster-one"
    os.environ["CLUSTER_KEY_2"] = "sk-cluster-two"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"})
    doomed = cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    deadline = time.monotonic() + 60
    while (
        len([n for n in ray.nodes() if n["Alive"]]) < 2 or ray.available_resources().get("CPU", 0) < 3
    ) and time.monotonic() < deadline:
        time.sleep(0.2)  # both nodes must be registered before gateways are placed
    job = load_job(
        {
            "name": "cluster",
            "count": 1200,
            "seed": 1,
            "generator": {
                "kind": "structured",
                "prompt": "Item {n}",
                "vars": {"n": {"kind": "range", "low": 1, "high": 10**6}},
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            },
            "providers": [
                {
                    "name": "default",
                    "model": "compat:m",
                    "base_url": sim.openai_url,
                    "keys": [{"env": "CLUSTER_KEY_1", "rpm": 1200}, {"env": "CLUSTER_KEY_2", "rpm": 1200}],
                }
            ],
            "output": {"uri": out, "shard_size": 50},
            "engine": {"workers": 3},
        }
    )
    t, result, manifest = start_run(job)
    deadline = time.monotonic() + 180
    placement: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        # where the actors run, just before the node goes: wait until all workers are up and working
        placement = {}
        for a in ray.util.state.list_actors(filters=[("state", "=", "ALIVE")]):
            placement.setdefault(a["class_name"], []).append(a["node_id"])
        workers = [n for k, v in placement.items() if "ShardWorker" in k for n in v]
        if len(workers) >= 3 and len(manifest.committed()) >= 2:
            break
        time.sleep(0.2)
    committed_at_loss = len(manifest.committed())
    cluster.remove_node(doomed)
    # once two more shards are in (the requests in flight at the loss long answered), count each
    # key's answers at the simulator: the lost node's key must serve again after that
    while t.is_alive() and len(manifest.committed()) < committed_at_loss + 2:
        time.sleep(0.1)
    after_loss = {k: v["ok"] for k, v in sim.stats()["by_key"].items()}
    t.join(timeout=400)
    run = result.get("run")
    at_end = {k: v["ok"] for k, v in sim.stats()["by_key"].items()}
    print(
        "RESULT "
        + json.dumps(
            {
                "keys_after_loss": sorted(k for k, n in at_end.items() if n > after_loss.get(k, 0)),
                "rounds": run.stats.get("rounds") if run else None,
                "gateways_replaced": run.stats.get("gateways_replaced") if run else None,
                "error": result.get("error"),
                "complete": run.complete if run else False,
                "records": run.records if run else 0,
                "dead": run.dead_letters if run else 0,
                "committed_at_loss": committed_at_loss,
                "nodes": {k: sorted(set(v)) for k, v in placement.items()},
                "doomed": doomed.node_id,
            }
        ),
        flush=True,
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
