"""Every shipped example runs through the engine on the sim provider; one through the HTTP
simulator with the official openai SDK."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as pads
import pytest

import synth

pytestmark = pytest.mark.usefixtures("ray_local")
ROOT = Path(__file__).resolve().parents[2]
SMALL = {"structured": 60, "conversation": 12, "timeseries": 6, "events": 4, "rag": None}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_runs_on_sim(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name their data files relative to the repository root
    res = synth.run(ROOT / "jobs" / "examples" / f"{name}.yaml", count=SMALL[name], output=str(tmp_path / "out"))
    assert res.complete and res.records > 0
    assert res.records + res.dead_letters == res.planned_units
    table = pads.dataset(str(tmp_path / "out" / "data"), partitioning="hive").to_table()
    assert table.num_rows == res.rows
    assert len(set(table["id"].to_pylist())) == res.records
    if res.prompt_tokens:
        assert res.stats["cost_estimate"]["usd"] > 0  # what the sim run would cost for real


def test_structured_example_through_the_openai_sdk(simulator, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    job = synth.load_job(
        ROOT / "jobs" / "examples" / "structured.yaml", overrides={"count": 40, "output.uri": str(tmp_path / "o")}
    )
    doc = job.model_dump(mode="json")
    doc["providers"] = [
        {
            "name": "default",
            "model": "compat:gpt-4o-mini",
            "base_url": simulator.openai_url,
            "client": "sdk",
            "keys": [{"env": "HTTP_KEY_A", "alias": "alpha", "rpm": 6000}],
        }
    ]
    res = synth.run(doc)
    assert res.complete and res.records + res.dead_letters == 40 and res.records > 30
    t = pads.dataset(str(tmp_path / "o" / "data")).to_table()
    assert set(t["key_alias"].to_pylist()) == {"alpha"} and set(t["provider"].to_pylist()) == {"default"}


def test_budget_stops_spending(simulator, tmp_path):
    # about $0.015 per answer (7 prompt and 8 output tokens at $1,000 per million), $1.47 for all 100;
    # each call out holds $0.071 (64 output tokens). Spending alone crosses the budget, and with two
    # calls out at a time a few shards are committed before it does, whatever the timing.
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
    doc = {
        "name": "budget",
        "count": 100,
        "generator": {
            "kind": "structured",
            "prompt": "Item {n}",
            "vars": {"n": {"kind": "range", "low": 1, "high": 10**6}},
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        },
        "providers": [
            {
                "name": "default",
                "model": "compat:m",
                "base_url": simulator.openai_url,
                "price": price,
                "keys": [{"env": "HTTP_KEY_A", "rpm": 6000}],
                "params": {"max_tokens": 64},
            }
        ],
        "budget": {"max_usd": 0.5},
        "output": {"uri": str(tmp_path / "o"), "shard_size": 10},
        "engine": {"workers": 1, "shards_per_worker": 1, "concurrency": 2},
    }
    res = synth.run(doc)
    assert res.aborted and res.aborted.startswith("budget")
    assert not res.complete
    assert 0 < res.cost_usd <= 0.5
    # what the provider was paid, calls of unfinished shards included, stays within the budget too
    assert res.cost_usd <= res.stats["requests"]["cost_usd"] <= 0.5
    # a later run with more budget finishes the job without redoing committed shards
    doc["budget"] = {"max_usd": 1000.0}
    again = synth.run(doc)
    assert again.complete and again.shards_skipped == res.stats["shards"]["committed"]
    assert again.records + again.dead_letters == 100
