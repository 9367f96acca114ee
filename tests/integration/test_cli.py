"""The command line as users type it (no Ray needed for these)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def synth(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synth", *args], capture_output=True, text=True, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, timeout=timeout)


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
    proc = subprocess.Popen([sys.executable, "-m", "synth", "sim", "serve", "--port", "0", "--rpm", "60"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        import urllib.request

        with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:
            assert json.loads(resp.read())["requests"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
