"""``synth bench --quick`` as users type it: the report, the JSON file and the plots exist and
parse. Speed is never asserted here (benchmarks/ measures it); only that every number is there."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(900)
def test_quick_bench_writes_a_table_json_and_plots(tmp_path):
    out = tmp_path / "results"
    r = subprocess.run(
        [sys.executable, "-m", "synth", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        timeout=880,
    )
    assert r.returncode == 0, r.stderr[-3000:]

    doc = json.loads((out / "bench.json").read_text())
    head = doc["header"]
    assert head["quick"] is True and head["versions"]["synth"] and head["load_before"] and "bench" in head["command"]
    sections = {s["number"]: s for s in doc["sections"]}
    assert set(sections) == {1, 2, 3, 4, 5, 8}  # 6 (scale-out) and 7 (memory) are skipped when quick
    for s in sections.values():
        assert s["rows"] and all(len(row) == len(s["headers"]) for row in s["rows"]), s["title"]
    # ratios, not bare times: the ceiling section reports achieved / ceiling for every point
    for p in sections[1]["data"]["points"]:
        assert 0 < p["steady"] and 0 < p["end_to_end"] and 0 <= p["share_429"] <= 1
    runs = sections[3]["data"]["points"][0]["runs"]
    assert runs["baseline"]["records_per_s"] > 0 and runs["synth (auto)"]["records_per_s"] > 0
    # the simulator's first-request timestamp reached the report: a time after the process started
    ttfr = sections[4]["data"]["points"]["default"][0]["ttfr_s"]
    assert math.isfinite(ttfr) and ttfr > 0

    md = (out / "bench.md").read_text()
    assert md.startswith("# synth bench") and "## Targets" in md and "load average" in md
    for n, s in sections.items():
        assert f"## {n}. {s['title']}" in md
    pngs = sorted(out.glob("*.png"))
    assert {"efficiency_vs_keys.png", "records_per_s_vs_size.png"} <= {p.name for p in pngs}
    for p in pngs:
        assert p.read_bytes()[:8] == PNG and f"]({p.name})" in md


def test_bench_needs_a_checkout(tmp_path):
    """Installed without the source tree (as from a wheel: the package alone, no benchmarks/ beside
    it), the command says so in one line and exits non-zero."""
    shutil.copytree(ROOT / "synth", tmp_path / "site" / "synth", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    r = subprocess.run(
        [sys.executable, "-m", "synth", "bench", "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: benchmarks/bench.py not found: synth bench runs from a source checkout of synth (cd into it)"
    ]
