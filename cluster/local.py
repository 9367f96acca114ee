"""A multi-node Ray cluster on this one machine: a head and N worker nodes, all on 127.0.0.1, each
with its own ports, stopped by PID (never `ray stop`, which ends every Ray process on the machine).

    python cluster/local.py start --workers 2       # prints the address and the dashboard URL
    synth run jobs/examples/structured.yaml --address 127.0.0.1:6379
    synth submit jobs/examples/structured.yaml --address http://127.0.0.1:8265
    synth jobs list
    python cluster/local.py status
    python cluster/local.py stop

`start` leaves a small supervisor process behind that owns the nodes (Ray's `ray.cluster_utils`
nodes: `ray start --address` refuses to join a head bound to 127.0.0.1); `stop` sends it SIGTERM
by its PID, it ends its nodes, and `stop` waits until every process it started is gone. If the
supervisor is killed, Ray's reaper ends the nodes. The nodes' environment is this shell's (export
the key variables first, or pass --env-file FILE with NAME=value lines), so gateway actors on every
node find the keys the job file names. PIDs, ports and logs are kept in --state-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

STATE_DIR = Path(tempfile.gettempdir()) / "synth-local-ray"
# as on a real cluster (cluster/README.md): keep idle pooled workers rather than start new ones
SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 600_000}
# binds every Ray service to 127.0.0.1, no usage reporting, and a Jobs API without tokens (local only)
NODE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
# the services every node runs on a port of its own
NODE_PORTS = (
    "node_manager_port",
    "object_manager_port",
    "dashboard_agent_listen_port",
    "metrics_agent_port",
    "metrics_export_port",
    "runtime_env_agent_port",
)


class ClusterError(Exception):
    """One line for the user."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended; only its parent has not collected it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _group(pgid: int) -> list[int]:
    """Live processes of a process group: a node's `ray start` and everything it started."""
    out = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid and _alive(int(entry.name)):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out if Path("/proc").is_dir() else ([pgid] if _alive(pgid) else [])


def _env(env_file: Path | None) -> dict[str, str]:
    env = {**NODE_ENV, **os.environ}
    env.pop("RAY_ADDRESS", None)  # each node is told its address; a stale one must not be joined
    # a job's `python` is the one on the PATH of whoever started Ray: this interpreter's
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if env_file:
        if not env_file.is_file():
            raise ClusterError(f"--env-file {env_file}: no such file")
        from dotenv import dotenv_values  # synth's own .env reader: quotes, `export`, comments

        for name, value in dotenv_values(env_file).items():
            if not name.isidentifier() or value is None:
                raise ClusterError(f"--env-file {env_file}: expected NAME=value lines, not {name!r}")
            env[name] = value
    return env


def _node_pids(node: Any) -> list[int]:
    return [info.process.pid for infos in node.all_processes.values() for info in infos if info.process is not None]


def serve(opts: dict[str, Any], state_dir: Path) -> None:
    """The supervisor: start the nodes, record them, and end them on SIGTERM (or SIGINT)."""
    import ray
    from ray.cluster_utils import Cluster

    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ports() -> dict[str, Any]:  # a fresh set per node
        return {k: free_port() for k in NODE_PORTS}

    common: dict[str, Any] = {
        "node_ip_address": "127.0.0.1",
        "num_cpus": opts["cpus"],
        "object_store_memory": opts["object_store_mb"] << 20,
    }
    head = {
        **common,
        **ports(),
        "gcs_server_port": opts["port"],
        "include_dashboard": opts["dashboard"],
        "_system_config": SYSTEM_CONFIG,
    }
    if opts["dashboard"]:
        head |= {"dashboard_host": "127.0.0.1", "dashboard_port": opts["dashboard_port"]}
    cluster = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=True)
    try:
        nodes: list[tuple[str, Any]] = [("head", cluster.head_node)]
        for i in range(1, opts["workers"] + 1):
            nodes.append((f"worker-{i}", cluster.add_node(**common, **ports())))
        cluster.wait_for_nodes(timeout=opts["timeout"])
        state = {
            "address": cluster.address,
            "dashboard": f"http://127.0.0.1:{opts['dashboard_port']}" if opts["dashboard"] else None,
            "supervisor": os.getpid(),
            "nodes": [{"name": n, "node_id": node.node_id, "pids": _node_pids(node)} for n, node in nodes],
        }
        tmp = state_dir / "cluster.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_dir / "cluster.json")  # whole or absent: `start` waits for it
        while not stopping:
            signal.pause()  # until SIGTERM
    finally:
        cluster.shutdown()
        ray.shutdown()


def _wait_dashboard(url: str, proc: subprocess.Popen, deadline: float) -> None:
    while True:  # the Jobs API answers once the dashboard and the head's agent are up
        try:
            with urllib.request.urlopen(f"{url}/api/jobs/", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ClusterError(f"the dashboard at {url} did not answer")
        time.sleep(0.5)  # polling the dashboard, bounded by the deadline


def start(
    workers: int,
    *,
    state_dir: Path = STATE_DIR,
    port: int = 6379,
    dashboard_port: int = 8265,
    dashboard: bool = True,
    cpus: int = 1,
    object_store_mb: int = 512,
    env_file: Path | None = None,
    timeout_s: float = 180.0,
) -> dict[str, Any]:
    """Start the head and ``workers`` worker nodes under a supervisor; returns what was recorded."""
    state_file = state_dir / "cluster.json"
    if state_file.exists():
        old = json.loads(state_file.read_text())
        if _alive(old["supervisor"]):
            raise ClusterError(f"a local cluster is already running ({old['address']}); stop it first: local.py stop")
        state_file.unlink()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    dashboard_port = dashboard_port or free_port()
    wanted = [(port, "--port"), *([(dashboard_port, "--dashboard-port")] if dashboard else [])]
    for p, what in wanted:
        if not _port_free(p):
            raise ClusterError(f"port {p} is taken; pass {what} 0 to pick a free one")
    opts = {
        "workers": workers,
        "port": port,
        "dashboard_port": dashboard_port,
        "dashboard": dashboard,
        "cpus": cpus,
        "object_store_mb": object_store_mb,
        "timeout": timeout_s,
    }
    log = state_dir / "supervisor.log"
    with open(log, "w") as out:
        # a session of its own: the supervisor, its nodes and what they start form one process group
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--state-dir", str(state_dir), "_serve", json.dumps(opts)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(env_file),
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    try:
        while not state_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = " ".join(log.read_text(errors="replace").split())[-400:]
                raise ClusterError(f"the cluster did not start (see {log}): {tail}")
            time.sleep(0.2)  # polling for the supervisor's record, bounded by the deadline
        state = json.loads(state_file.read_text())
        if dashboard:
            _wait_dashboard(state["dashboard"], proc, deadline)
    except BaseException:
        _stop_group(proc.pid, 20)
        state_file.unlink(missing_ok=True)
        raise
    return dict(state)


def _stop_group(pgid: int, wait_s: float) -> bool:
    """SIGTERM the supervisor, wait for its whole process group to end, SIGKILL what is left after
    ``wait_s``. True when every process is gone."""
    for sig, wait in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 10.0)):
        try:
            if sig == signal.SIGTERM:
                os.kill(pgid, sig)  # the supervisor ends its nodes itself
            else:
                os.killpg(pgid, sig)
        except ProcessLookupError:
            if sig == signal.SIGKILL:
                return not _group(pgid)
        end = time.monotonic() + wait
        while _group(pgid):
            if time.monotonic() > end:
                break
            time.sleep(0.1)  # polling the processes' exit, bounded
        else:
            return True
    return not _group(pgid)


def stop(state_dir: Path = STATE_DIR, wait_s: float = 30.0) -> dict[str, Any]:
    """Stop the cluster `start` recorded, by its supervisor's PID; returns the record."""
    state_file = state_dir / "cluster.json"
    if not state_file.exists():
        raise ClusterError(f"no local cluster recorded in {state_dir}; nothing to stop")
    state = json.loads(state_file.read_text())
    if not _stop_group(state["supervisor"], wait_s):
        raise ClusterError(f"could not stop every process of group {state['supervisor']}; see {state_file}")
    left = [p for n in state["nodes"] for p in n["pids"] if _alive(p)]
    if left:
        raise ClusterError(f"processes {left} are still running; see {state_file}")
    state_file.unlink()
    # a head leaves its address for later bare ray.init() calls: remove ours
    current = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")
    if current.exists() and current.read_text().strip() == state["address"]:
        current.unlink()
    return dict(state)


def status(state_dir: Path = STATE_DIR) -> dict[str, Any] | None:
    state_file = state_dir / "cluster.json"
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    for n in state["nodes"]:
        n["alive"] = sum(_alive(p) for p in n["pids"])
    return dict(state)


def _describe(state: dict[str, Any]) -> str:
    return ", ".join(f"{n['name']} (pids {' '.join(map(str, n['pids']))})" for n in state["nodes"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cluster/local.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", type=Path, default=STATE_DIR, help=f"where PIDs and logs are kept ({STATE_DIR})")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{start,stop,status}")
    s = sub.add_parser("start", help="start a head and N worker nodes; prints the address")
    s.add_argument("--workers", "-w", type=int, default=2, help="worker nodes beside the head (default 2)")
    s.add_argument("--port", type=int, default=6379, help="the head's port (0: a free one)")
    s.add_argument("--dashboard-port", type=int, default=8265, help="the dashboard's port (0: a free one)")
    s.add_argument("--no-dashboard", action="store_true", help="no dashboard (and so no Jobs API)")
    s.add_argument("--cpus", type=int, default=1, help="CPUs each node offers (default 1)")
    s.add_argument("--object-store-mb", type=int, default=512, help="object store of each node, MiB")
    s.add_argument("--env-file", type=Path, help="NAME=value lines added to the nodes' environment (API keys)")
    s.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every node to be up")
    sub.add_parser("stop", help="stop the nodes by their supervisor's PID")
    sub.add_parser("status", help="the recorded nodes and how many of their processes are alive")
    serve_p = sub.add_parser("_serve")  # the supervisor `start` leaves behind
    serve_p.add_argument("opts")
    a = p.parse_args(argv)
    try:
        if a.cmd == "_serve":
            serve(json.loads(a.opts), a.state_dir)
        elif a.cmd == "start":
            state = start(
                a.workers,
                state_dir=a.state_dir,
                port=a.port,
                dashboard_port=a.dashboard_port,
                dashboard=not a.no_dashboard,
                cpus=a.cpus,
                object_store_mb=a.object_store_mb,
                env_file=a.env_file,
                timeout_s=a.timeout,
            )
            print(f"address: {state['address']}")
            if state["dashboard"]:
                print(f"dashboard: {state['dashboard']}")
            print(f"supervisor: pid {state['supervisor']}; nodes: {_describe(state)}")
            print(f"stop with: python {sys.argv[0] or 'cluster/local.py'} --state-dir {a.state_dir} stop")
        elif a.cmd == "stop":
            print(f"stopped: supervisor pid {stop(a.state_dir)['supervisor']} and its nodes")
        else:
            st = status(a.state_dir)
            if st is None:
                print("no local cluster recorded")
                return 1
            print(f"address: {st['address']}" + (f"  dashboard: {st['dashboard']}" if st["dashboard"] else ""))
            print(f"supervisor: pid {st['supervisor']} {'alive' if _alive(st['supervisor']) else 'gone'}")
            for n in st["nodes"]:
                print(f"{n['name']}: {n['alive']} of {len(n['pids'])} processes alive")
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
