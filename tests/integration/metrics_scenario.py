"""A job through gateway actors to the HTTP simulator, in a local Ray of its own that serves Prometheus
metrics on 127.0.0.1; one key is held to a low limit by the simulator, so it meets 429s, and some
answers come back broken, so some units become dead letters. Run as a
script by test_metrics.py (its Ray options cannot be those of the session's Ray); prints the
job's counters and the ``synth_`` series scraped from the metrics endpoint as one JSON line.

    python -m tests.integration.metrics_scenario OUT_DIR
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from typing import Any

import ray
from prometheus_client.parser import text_string_to_metric_families

from synth.api import load_job
from synth.engine.run import run_job
from tests.support.runs import http_provider, job_doc
from tests.support.simulator import SimulatorProcess

KEY_A = os.environ["HTTP_KEY_A"]  # set by the test's conftest, as on a cluster's nodes
KEY_B = os.environ["HTTP_KEY_B"]
COUNT = 80


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def series(text: str) -> list[dict[str, Any]]:
    """Every sample of a ``ray_synth_`` family, with the labels that are ours."""
    ours = ("job", "provider", "model", "key_alias", "outcome", "kind", "le")
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("ray_synth_"):
                out.append(
                    {"name": s.name, "labels": {k: s.labels[k] for k in ours if k in s.labels}, "value": s.value}
                )
    return out


def total(rows: list[dict[str, Any]], name: str, **labels: str) -> float:
    return sum(
        r["value"] for r in rows if r["name"] == name and all(r["labels"].get(k) == v for k, v in labels.items())
    )


def start_ray() -> int:
    """A local Ray whose metrics agent serves Prometheus text on 127.0.0.1; returns its port."""
    for attempt in range(2):  # Ray gives up on a node whose start-up is slow (a loaded machine): once more
        port = free_port()
        try:
            ray.init(
                address="local",
                num_cpus=2,
                object_store_memory=512 * 1024**2,
                include_dashboard=False,  # the metrics agent runs on every node without it
                log_to_driver=False,
                configure_logging=False,
                _metrics_export_port=port,
                # processes export their metrics each second (default 10): little is lost when a gateway ends
                _system_config={"metrics_report_interval_ms": 1000},
            )
            return port
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    raise AssertionError("unreachable")


def main(out: str) -> None:
    port = start_ray()
    # some structured answers come back broken; with no re-asks, those units become dead letters
    sim = SimulatorProcess(latency_ms=20, malformed_rate=0.15, seed=3).start()
    try:
        sim.set_keys({KEY_A: {"rpm": 60}})  # the job believes alpha allows 60,000 a minute
        doc = job_doc(
            "metered",
            out,
            COUNT,
            shard=40,
            providers=[
                http_provider(
                    sim.url,
                    keys=[
                        {"env": "HTTP_KEY_A", "alias": "alpha", "rpm": 60_000},
                        {"env": "HTTP_KEY_B", "alias": "bravo", "rpm": 60_000},
                    ],
                    price={"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                    max_reasks=0,
                )
            ],
        )
        t0 = time.monotonic()
        res = run_job(load_job(doc))
        ran = time.monotonic() - t0
        stats = res.stats["requests"]
        provider = res.stats["providers"]["default"]
        calls = provider["calls"]
        dead = res.dead_letters
        # the gateways are gone; what they exported stays on the endpoint: wait for the last of it
        rows: list[dict[str, Any]] = []
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                text = scrape(port)
            except OSError:
                text = ""  # the agent's exporter may still be starting
            rows = series(text)
            if total(rows, "ray_synth_requests_total") >= calls and total(rows, "ray_synth_dead_letters_total") >= dead:
                break
            time.sleep(0.5)  # polling the endpoint, bounded by the deadline
        summary = {
            "seconds": {"run": round(ran, 1), "scrape": round(time.monotonic() - t0 - ran, 1)},
            "complete": res.complete,
            "records": res.records,
            "dead_letters": res.dead_letters,
            "dead_by_kind": res.stats["dead_by_kind"],
            "provider": {k: provider[k] for k in ("calls", "errors", "successes")},
            "stats": {
                k: stats[k] for k in ("successes", "rate_limited", "retries", "prompt_tokens", "completion_tokens")
            },
            "cost_usd": stats["cost_usd"],
            "series": rows,
            "secrets_in_text": [n for n, v in (("HTTP_KEY_A", KEY_A), ("HTTP_KEY_B", KEY_B)) if v in text],
        }
    finally:
        sim.stop()
        ray.shutdown()
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
