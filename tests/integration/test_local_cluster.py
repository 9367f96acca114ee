"""cluster/local.py: a head and a worker node on 127.0.0.1 that a Ray client sees as two alive nodes,
whose worker gets the keys of --env-file, and that `stop` ends by PID, every process of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "local.py"
KEY = "sk-local-cluster-NOT-PRINTED-42"

# a separate driver: the test session's own Ray (if any) stays out of it
CLIENT = textwrap.dedent(
    """
    import json, os, sys, time
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the cluster's node table, bounded
    nodes = [n for n in ray.nodes() if n["Alive"]]
    worker = next(n["NodeID"] for n in nodes if n["NodeID"] != sys.argv[2])

    expected = sys.argv[3]  # captured with the function (a worker's sys.argv is its own)

    @ray.remote(num_cpus=0)
    def where():
        return ray.get_runtime_context().get_node_id(), os.environ.get("LOCAL_CLUSTER_KEY") == expected

    ran_on, has_key = ray.get(
        where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(worker, soft=False)).remote()
    )
    print(json.dumps({"nodes": [[n["NodeID"], n["NodeManagerAddress"]] for n in nodes], "ran_on": ran_on,
                      "worker": worker, "has_key": has_key}))
    """
)


def local(state: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid and stat[0] != "Z":  # field 5 of stat: the process group
                out.append(int(entry.name))
    return out


def test_local_cluster_starts_two_nodes_on_loopback_and_stops_them_by_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env_file = tmp_path / "keys.env"
    env_file.write_text(f"# the nodes' keys\nLOCAL_CLUSTER_KEY={KEY}\n")
    r = local(state, "start", "--workers", "1", "--port", "0", "--no-dashboard", "--env-file", str(env_file))
    record = state / "cluster.json"
    try:
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert KEY not in r.stdout + r.stderr
        recorded = json.loads(record.read_text())
        first = r.stdout.splitlines()[0]
        assert first == f"address: {recorded['address']}" and recorded["address"].startswith("127.0.0.1:")
        head, worker = recorded["nodes"]
        assert (head["name"], worker["name"]) == ("head", "worker-1") and head["pids"] and worker["pids"]

        c = subprocess.run(
            [sys.executable, "-c", CLIENT, recorded["address"], head["node_id"], KEY],
            capture_output=True,
            text=True,
            timeout=180,
            env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        )
        assert c.returncode == 0, c.stderr[-3000:]
        seen = json.loads(c.stdout.strip().splitlines()[-1])
        assert sorted(seen["nodes"]) == sorted([[head["node_id"], "127.0.0.1"], [worker["node_id"], "127.0.0.1"]])
        assert seen["ran_on"] == seen["worker"] == worker["node_id"] and seen["has_key"] is True

        st = local(state, "status")
        assert st.returncode == 0 and "supervisor: pid" in st.stdout and "alive" in st.stdout, st.stdout

        pids = [recorded["supervisor"], *head["pids"], *worker["pids"]]
        assert group_members(recorded["supervisor"])  # the nodes and their helpers share the supervisor's group
        s = local(state, "stop", timeout=120)
        assert s.returncode == 0, (s.stdout, s.stderr)
        assert s.stdout.strip() == f"stopped: supervisor pid {recorded['supervisor']} and its nodes"
        left = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" != _state(p)]
        assert left == [] and group_members(recorded["supervisor"]) == []
        assert not record.exists()
        again = local(state, "stop")
        assert again.returncode == 2 and again.stderr.startswith("error: no local cluster recorded in ")
    finally:
        if record.exists():  # a failed assertion above: end what was started, by its PID
            if local(state, "stop", timeout=120).returncode != 0:
                try:
                    os.killpg(json.loads(record.read_text())["supervisor"], signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
