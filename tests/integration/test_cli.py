"""The command line as users type it (no Ray needed for these)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def synth(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synth", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        timeout=timeout,
    )


def test_spec_schema_is_json_schema_of_the_job_file():
    r = synth("spec", "schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert {"name", "count", "generator", "providers", "output"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_spec_check_accepts_every_example():
    for f in sorted((ROOT / "jobs" / "examples").glob("*.yaml")):
        r = synth("spec", "check", str(f))
        assert r.returncode == 0, (f, r.stderr)
        assert r.stdout.startswith("ok: ")


def test_index_twice_changes_nothing(tmp_path):
    args = ("index", "jobs/examples/data/kb", "--collection", "kb", "--path", str(tmp_path / "q"))
    first = json.loads(synth(*args).stdout)
    second = json.loads(synth(*args).stdout)
    assert first["new_points"] == first["points"] > 0
    assert second["new_points"] == 0 and second["unchanged_points"] == first["points"] == second["points"]


def test_sim_serve_prints_its_url_first():
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth", "sim", "serve", "--port", "0", "--rpm", "60"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        import urllib.request

        with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:
            assert json.loads(resp.read())["requests"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_summary_shows_what_this_run_paid(capsys):
    """The dataset's cost counts committed records; what the providers were paid this run (calls of
    unfinished shards too) is its own row, shown when gateways made calls."""
    from types import SimpleNamespace

    from synth.outcome import print_summary as _summary

    base = dict(
        job="j",
        output="/o",
        records=20,
        rows=20,
        dead_letters=0,
        shards_written=2,
        shards_skipped=0,
        shards_total=10,
        prompt_tokens=140,
        completion_tokens=170,
        cost_usd=0.31,
        wall_s=1.0,
        complete=False,
    )
    _summary(SimpleNamespace(**base, stats={"requests": {"requests": 27, "cost_usd": 0.4399, "rate_limited": 0}}))
    paid = capsys.readouterr().err
    assert "$0.3100" in paid and "spent this run" in paid and "$0.4399 on 27 calls" in paid
    _summary(SimpleNamespace(**base, stats={"requests": {}}))  # offline sim: no calls out
    assert "spent this run" not in capsys.readouterr().err


def test_summary_says_when_the_run_recovered(capsys):
    """A replaced gateway or a second pass over the shards is shown; a plain run shows neither."""
    from types import SimpleNamespace

    from synth.outcome import print_summary as _summary

    base = dict(
        job="j",
        output="/o",
        records=20,
        rows=20,
        dead_letters=0,
        shards_written=2,
        shards_skipped=0,
        shards_total=2,
        prompt_tokens=140,
        completion_tokens=170,
        cost_usd=0.31,
        wall_s=1.0,
        complete=True,
    )
    _summary(SimpleNamespace(**base, stats={"requests": {}, "gateways_replaced": 1, "rounds": 1}))
    assert "1 gateway replaced, 1 pass over the shards" in capsys.readouterr().err
    _summary(SimpleNamespace(**base, stats={"requests": {}, "gateways_replaced": 0, "rounds": 2}))
    assert "0 gateways replaced, 2 passes over the shards" in capsys.readouterr().err
    _summary(SimpleNamespace(**base, stats={"requests": {}, "gateways_replaced": 0, "rounds": 1}))
    assert "recovered" not in capsys.readouterr().err
