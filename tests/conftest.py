"""Session-wide real parts: environment, a local Ray, a local S3-compatible server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "AWS_EC2_METADATA_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
    # a developer's own defaults files (~/.config/synth/config.yaml, ./synth.yaml) stay out of tests
    "SYNTH_CONFIG": "none",
    # credentials of the local S3 server (moto accepts any); set before Ray starts so workers see them
    "AWS_ACCESS_KEY_ID": "synth-test-access",
    "AWS_SECRET_ACCESS_KEY": "synth-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # API keys of engine tests: set before Ray starts, as on a cluster's nodes
    "HTTP_KEY_A": "sk-http-secret-alpha-0001",
    "HTTP_KEY_B": "sk-http-secret-bravo-0002",
    "GEM_KEY": "gm-http-secret-charlie-03",
}
for k, v in ENV.items():
    os.environ.setdefault(k, v)
os.environ.pop("RAY_ADDRESS", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray per test session (starting one costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            object_store_memory=512 * 1024**2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


def _stop_group(proc: subprocess.Popen) -> None:
    """End a process started in a session of its own, and what it started, by its PID."""
    # a Ray head may take half a minute to end on SIGTERM; what is left after a few seconds is killed
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """A Ray head of its own (`ray start --head --block`, stopped by its PID) that `synth run
    --address` subprocesses join: scenarios that are not about the embedded Ray pay for one Ray
    start-up per session instead of one per run. Its environment holds the key variables, as a
    cluster's nodes do."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["SYNTH_CACHE_DIR"] = str(tmp_path_factory.mktemp("head-cache"))  # runs fix their own in the job
    env["PYTHONUNBUFFERED"] = "1"  # its "started" line reaches the log at once
    # `ray start` leaves its address for later bare ray.init() calls: remove ours so nothing else joins it
    current = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")
    for attempt in range(2):  # Ray gives up on a node whose start-up is slow (a loaded machine): once more
        names = ("port", "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port")
        ports = {k: free_port() for k in (*names, "runtime-env-agent-port", "metrics-export-port")}
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            "--num-cpus=2",
            f"--object-store-memory={512 * 1024**2}",
            # as an embedded run's Ray: keep idle workers rather than start new ones for each write task
            "--system-config=" + json.dumps({"idle_worker_killing_time_threshold_ms": 600_000}),
            *(f"--{k}={v}" for k, v in ports.items()),
        ]
        log_path = tmp_path_factory.mktemp("ray-head") / "ray-head.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        address = f"127.0.0.1:{ports['port']}"
        deadline = time.monotonic() + 240
        while "Ray runtime started" not in log_path.read_text():  # what `ray start` says once it is up
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling an observable condition, bounded by the deadline
        else:
            break
        _stop_group(proc)
        if attempt:
            raise RuntimeError(f"the Ray head did not start: {log_path.read_text()[-2000:]}")
    try:
        if current.exists() and current.read_text().strip() == address:
            current.unlink()
        yield address
    finally:
        _stop_group(proc)
        if current.exists() and current.read_text().strip() == address:
            current.unlink()


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) on 127.0.0.1, reached through s3fs like real S3."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket for one test; returns (endpoint, bucket)."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    name = f"b-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return s3_server, name


@pytest.fixture(scope="session")
def simulator():
    """The project's LLM API simulator in its own process, shared by the session."""
    from tests.support.simulator import SimulatorProcess

    sim = SimulatorProcess()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path_factory, monkeypatch):
    """The response cache is on by default: each test gets its own, so no test answers another's."""
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
