"""Session-wide real parts: environment, a local Ray, a local S3-compatible server."""

from __future__ import annotations

import os
import socket

import pytest

ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "AWS_EC2_METADATA_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
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
