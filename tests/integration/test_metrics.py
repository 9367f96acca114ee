"""Metrics in Ray's metrics system: a job through gateways to the HTTP simulator, with one key held to
a low limit and some answers broken, shows its requests, tokens, dollars, 429s, dead letters and
latency histograms on the Prometheus endpoint of its Ray, labelled by provider, model and key
alias, and no key value anywhere there.

The job runs in a subprocess (tests/integration/metrics_scenario.py) with a Ray of its own: the
metrics export port is fixed when a Ray starts, so the session's Ray cannot serve it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_scenario(out: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run(
        [sys.executable, "-m", "tests.integration.metrics_scenario", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def total(rows: list[dict[str, Any]], name: str, **labels: str) -> float:
    return sum(
        r["value"] for r in rows if r["name"] == name and all(r["labels"].get(k) == v for k, v in labels.items())
    )


def test_requests_tokens_429s_and_latency_reach_prometheus_by_provider_model_and_key_alias(tmp_path):
    s = run_scenario(tmp_path / "out")
    assert s["complete"] and s["records"] + s["dead_letters"] == 80, s["stats"]
    stats, rows = s["stats"], s["series"]
    assert s["dead_letters"] > 0, s  # the simulator broke some answers and the job allowed no re-asks
    assert stats["rate_limited"] > 0, stats  # the simulator held alpha to 60 a minute
    mine = {"job": "metered", "provider": "default", "model": "compat:gpt-4o-mini"}
    names = {r["name"] for r in rows}
    assert {
        "ray_synth_requests_total",
        "ray_synth_rate_limited_total",
        "ray_synth_prompt_tokens_total",
        "ray_synth_completion_tokens_total",
        "ray_synth_cost_usd_total",
        "ray_synth_call_latency_seconds_bucket",
        "ray_synth_request_latency_seconds_count",
        "ray_synth_retries_total",
        "ray_synth_dead_letters_total",
    } <= names, sorted(names)
    # every provider call is there, by key alias and outcome
    assert total(rows, "ray_synth_requests_total", **mine) == s["provider"]["calls"], s["provider"]
    ok = {a: total(rows, "ray_synth_requests_total", **mine, key_alias=a, outcome="ok") for a in ("alpha", "bravo")}
    assert all(n > 0 for n in ok.values()), ok
    assert total(rows, "ray_synth_requests_total", **mine, outcome="malformed_output") > 0
    # 429s: on the key the simulator limited, as the gateways counted them
    assert total(rows, "ray_synth_rate_limited_total", **mine, key_alias="alpha") == stats["rate_limited"]
    assert total(rows, "ray_synth_requests_total", **mine, key_alias="alpha", outcome="rate_limited") > 0
    assert total(rows, "ray_synth_retries_total", **mine) == stats["retries"]
    # tokens and dollars
    assert total(rows, "ray_synth_prompt_tokens_total", **mine) == stats["prompt_tokens"] > 0
    assert total(rows, "ray_synth_completion_tokens_total", **mine) == stats["completion_tokens"] > 0
    assert abs(total(rows, "ray_synth_cost_usd_total", **mine) - s["cost_usd"]) < 1e-6
    # latency: a Prometheus histogram per key, one observation per answered call, the simulator's
    # 20 ms answers in the buckets above 10 ms
    for a in ("alpha", "bravo"):
        assert total(rows, "ray_synth_call_latency_seconds_count", **mine, key_alias=a) == ok[a]
        assert total(rows, "ray_synth_call_latency_seconds_bucket", **mine, key_alias=a, le="+Inf") == ok[a]
        assert total(rows, "ray_synth_call_latency_seconds_bucket", **mine, key_alias=a, le="0.01") < ok[a]
        assert total(rows, "ray_synth_call_latency_seconds_sum", **mine, key_alias=a) > 0.01 * ok[a]
    assert total(rows, "ray_synth_request_latency_seconds_count", **mine) == stats["successes"]
    # dead letters, counted by the driver as their shards commit, by error kind
    for kind, n in s["dead_by_kind"].items():
        assert total(rows, "ray_synth_dead_letters_total", job="metered", kind=kind) == n
    assert total(rows, "ray_synth_dead_letters_total") == s["dead_letters"]
    # key aliases only
    assert s["secrets_in_text"] == []
    assert {r["labels"].get("key_alias") for r in rows} <= {"alpha", "bravo", None}
