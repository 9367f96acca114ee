"""A run on the local executor serves its metrics for Prometheus while it lasts: the series a Ray
run exports, labelled by job, provider, model and key alias, never a key; then the endpoint ends."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import synth
from tests.conftest import free_port
from tests.support.runs import KEY_A, http_provider, job_doc


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def samples(text: str, name: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_a_local_run_serves_its_metrics_while_it_lasts(simulator, tmp_path):
    simulator.restore()
    port = free_port()
    # 20 answers a second for 200 units: about ten seconds in which to read the endpoint
    provider = http_provider(simulator.url, limits={"rpm": 1200}, price={"input_per_mtok": 150, "output_per_mtok": 600})
    doc = job_doc("metered", tmp_path / "out", 200, shard=50, providers=[provider])
    doc["engine"] = {"executor": "local", "metrics_port": port}
    result: dict[str, Any] = {}
    run = threading.Thread(target=lambda: result.update(r=synth.run(doc)), daemon=True)
    run.start()
    text, deadline = "", time.monotonic() + 120
    while time.monotonic() < deadline and run.is_alive():
        try:
            text = scrape(port)
        except OSError:
            text = ""  # not listening yet
        ok = [s for s in samples(text, "ray_synth_requests_total") if s.labels.get("outcome") == "ok"]
        if sum(s.value for s in ok) >= 20:
            break
        time.sleep(0.2)  # polling an observable condition (the endpoint's count), bounded
    else:
        pytest.fail(f"no metrics while the run lasted: {text[-1000:]}")
    ok = [s for s in samples(text, "ray_synth_requests_total") if s.labels.get("outcome") == "ok"]
    assert {(s.labels["job"], s.labels["provider"], s.labels["key_alias"]) for s in ok} == {
        ("metered", "default", "alpha")
    }
    assert ok[0].labels["model"] and sum(s.value for s in samples(text, "ray_synth_prompt_tokens_total")) > 0
    assert sum(s.value for s in samples(text, "ray_synth_cost_usd_total")) > 0
    latency = samples(text, "ray_synth_call_latency_seconds_count")
    assert latency and sum(s.value for s in latency) >= 20
    assert KEY_A not in text

    run.join(120)
    assert not run.is_alive() and result["r"].complete and result["r"].records == 200
    with pytest.raises(OSError):  # the endpoint ended with the run
        scrape(port)


def test_a_metrics_port_that_is_taken_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        doc = job_doc("metered", tmp_path / "out", 20, shard=10)
        doc["engine"] = {"executor": "local", "metrics_port": port}
        with pytest.raises(
            synth.ConfigError, match=rf"^engine.metrics_port: cannot serve metrics on 127.0.0.1:{port} "
        ):
            synth.run(doc)
    assert not list((tmp_path / "out").glob("data/**/*.parquet"))
