"""Jobs through gateway actors to the HTTP simulator with the openai-compatible and gemini clients;
API keys never reach Parquet, the manifest, the stats file or the logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest

import synth

pytestmark = pytest.mark.usefixtures("ray_local")

KEYS = {
    "HTTP_KEY_A": "sk-http-secret-alpha-0001",
    "HTTP_KEY_B": "sk-http-secret-bravo-0002",
    "GEM_KEY": "gm-http-secret-charlie-03",
}


@pytest.fixture
def keys():
    # conftest sets them before Ray starts, as a cluster's nodes would have them
    assert all(os.environ.get(k) == v for k, v in KEYS.items())
    return KEYS


def job(sim_url: str, uri: str, **kw):
    doc = {
        "name": "http",
        "count": 160,
        "generator": {
            "kind": "structured",
            "prompt": "Item {n}",
            "vars": {"n": {"kind": "range", "low": 1, "high": 10**6}},
            "schema": {
                "type": "object",
                "properties": {"a": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["a", "n"],
            },
        },
        "providers": [
            {
                "name": "default",
                "model": "compat:sim-model",
                "base_url": f"{sim_url}/v1",
                "keys": [
                    {"env": "HTTP_KEY_A", "alias": "alpha", "rpm": 6000},
                    {"env": "HTTP_KEY_B", "alias": "bravo", "rpm": 6000},
                ],
                "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            },
            {"name": "gem", "model": "gemini:gemini-2.5-flash", "base_url": sim_url, "keys": [{"env": "GEM_KEY"}]},
        ],
        "output": {"uri": uri, "shard_size": 40},
    }
    doc.update(kw)
    return doc


def scan_for_keys(root: Path) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found += [f"{p}: {name}" for name, secret in KEYS.items() if secret.encode() in data]
    return found


def test_openai_compatible_through_gateways(simulator, keys, tmp_path):
    uri = tmp_path / "out"
    res = synth.run(job(simulator.url, str(uri)))
    assert res.complete and res.records == 160
    t = pads.dataset(f"{uri}/data").to_table()
    assert set(t["key_alias"].to_pylist()) == {"alpha", "bravo"}
    assert set(t["provider"].to_pylist()) == {"default"} and set(t["route"].to_pylist()) == {"default"}
    assert res.cost_usd > 0
    assert res.stats["requests"]["successes"] >= 160
    assert scan_for_keys(uri) == []


def test_gemini_route_through_gateways(simulator, keys, tmp_path):
    uri = tmp_path / "out"
    doc = job(simulator.url, str(uri), count=60)
    doc["generator"]["model"] = "gem"
    res = synth.run(doc)
    assert res.complete and res.records == 60
    t = pads.dataset(f"{uri}/data").to_table()
    assert set(t["provider"].to_pylist()) == {"gem"} and set(t["key_alias"].to_pylist()) == {"GEM_KEY"}
    assert set(t["route"].to_pylist()) == {"gem"}
    assert min(t["prompt_tokens"].to_pylist()) > 0
    assert scan_for_keys(uri) == []


def test_revoked_key_mid_job_the_others_finish(simulator, keys, tmp_path):
    simulator.set_keys({KEYS["HTTP_KEY_A"]: {"revoked": True}})
    try:
        uri = tmp_path / "out"
        res = synth.run(job(simulator.url, str(uri), count=120))
        assert res.complete and res.records == 120
        t = pads.dataset(f"{uri}/data").to_table()
        assert set(t["key_alias"].to_pylist()) == {"bravo"}
        assert scan_for_keys(uri) == []
    finally:
        simulator.set_keys({KEYS["HTTP_KEY_A"]: None})


def test_cli_output_never_shows_a_key(simulator, keys, tmp_path):
    import yaml

    simulator.set_keys({KEYS["HTTP_KEY_B"]: {"revoked": True}})
    try:
        f = tmp_path / "job.yaml"
        f.write_text(yaml.safe_dump(job(simulator.url, str(tmp_path / "out"), count=40)))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        r = subprocess.run(
            [sys.executable, "-m", "synth", "run", str(f)], capture_output=True, text=True, env=env, timeout=300
        )
        assert r.returncode == 0, r.stderr[-2000:]
        for secret in KEYS.values():
            assert secret not in r.stdout and secret not in r.stderr
        assert scan_for_keys(tmp_path) == []
    finally:
        simulator.set_keys({KEYS["HTTP_KEY_B"]: None})
