"""`synth run JOB --dry-run`: a sample on the offline sim, projected to the whole job; nothing written."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import synth
from synth.dryreport import engine_in_flight, key_rps, throughput
from synth.dryrun import Meter, dry_run, project
from synth.spec import ProviderSpec
from tests.support.runs import ROOT, env

PROJECTED = re.compile(r"projected for ([\d,]+) units: ([\d,]+) calls, ([\d,]+) prompt \+ ([\d,]+) completion tokens")
COST = re.compile(r"^cost: \$([\d,.]+)", re.M)


def synth_cli(
    *args: str, cache: Path, address: str | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "synth", *args, *(["--address", address] if address else [])]
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=env(SYNTH_CACHE_DIR=str(cache)), timeout=timeout
    )


def number(text: str) -> float:
    return float(text.replace(",", ""))


def projected(stdout: str) -> tuple[float, float, float, float]:
    m, c = PROJECTED.search(stdout), COST.search(stdout)
    assert m and c, stdout
    return number(m.group(2)), number(m.group(3)), number(m.group(4)), number(c.group(1))


def structured_job(out: Path, count: int, provider: dict, **extra: object) -> dict:
    return {
        "name": "dry",
        "count": count,
        "seed": 5,
        "generator": {
            "kind": "structured",
            "prompt": "Describe a {thing} for a catalogue, in detail.",
            "vars": {"thing": {"kind": "choice", "values": ["lamp", "chair", "kettle", "backpack"]}},
            "schema": {
                "type": "object",
                "required": ["name", "description", "price"],
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "price": {"type": "number"},
                },
            },
        },
        "providers": [provider],
        "output": {"uri": str(out), "shard_size": 100},
        **extra,
    }


def test_dry_run_writes_nothing_and_prints_the_projection(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    # the sim priced as if it were a paid model, and a budget far below what 5,000 units cost
    job = structured_job(
        out,
        5000,
        {"name": "default", "model": "sim:gpt-4o-mini"},
        prices={"sim:gpt-4o-mini": {"input_per_mtok": 10.0, "output_per_mtok": 30.0}},
        budget={"max_usd": 0.01},
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    r = synth_cli("run", str(path), "--dry-run", "--sample", "10", cache=cache)
    assert r.returncode == 0, r.stderr
    assert not out.exists() and not cache.exists()
    calls, prompt, completion, usd = projected(r.stdout)
    assert calls >= 5000 and prompt > 0 and completion > 0
    # every unit makes one call of tens of tokens: at $10/$30 per million that is well above $0.01
    assert usd == pytest.approx((prompt * 10 + completion * 30) / 1e6, rel=1e-2)  # printed to 3 digits
    assert "10 of 5,000 units" in r.stdout
    assert re.search(r"^time: about [\d.,]+ (s|min|h)", r.stdout, re.M)
    assert "EXCEEDS" in r.stdout and "the sim is free" not in r.stdout  # this job priced its sim


def test_projection_is_within_a_quarter_of_a_real_run(simulator, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    price = {"input_per_mtok": 0.5, "output_per_mtok": 1.5}
    provider = {
        "name": "default",
        "model": "compat:gpt-4o-mini",
        "base_url": simulator.openai_url,
        "price": price,
        "keys": [{"env": "HTTP_KEY_A", "alias": "a", "rpm": 6000, "tpm": 3_000_000}],
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(structured_job(out, 300, provider, engine={"workers": 1})))

    dry = synth_cli("run", str(path), "--dry-run", "--sample", "20", cache=cache)
    assert dry.returncode == 0, dry.stderr
    assert not out.exists()
    calls, prompt, completion, usd = projected(dry.stdout)
    assert calls >= 300

    real = synth_cli("run", str(path), "--quiet", cache=cache, timeout=600)
    assert real.returncode == 0, real.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records"] + stats["dead_letters"] == 300
    assert usd == pytest.approx(stats["cost_usd"], rel=0.25)
    assert prompt == pytest.approx(stats["prompt_tokens"], rel=0.25)
    assert completion == pytest.approx(stats["completion_tokens"], rel=0.25)


def test_ceiling_and_littles_law_by_hand():
    p = ProviderSpec(
        model="openai:gpt-4o-mini",
        tpm=30_000,
        keys=[
            {"env": "K1", "rpm": 600, "tpm": 60_000},  # 10 requests/s, or 60,000 / 60 / 500 = 2 calls/s
            {"env": "K2", "rpm": 1_200},  # 20 requests/s, or 30,000 (the provider's) / 60 / 500 = 1 call/s
        ],
    )
    t = throughput(p, 500, latency_s=2.0, max_in_flight=100)
    assert t.ceiling_rps == pytest.approx(2 + 1)
    assert t.rate_rps == pytest.approx(3) and t.bound == "keys"
    assert t.in_flight == pytest.approx(3 * 2.0)  # Little's law: rate x latency
    # few calls may be out: 4 in flight at 2 s per call is 2 requests/s, below the keys' 3
    t = throughput(p, 500, latency_s=2.0, max_in_flight=4)
    assert t.rate_rps == pytest.approx(4 / 2.0) and t.bound == "latency" and t.in_flight == pytest.approx(4)
    # a key with no limits makes the ceiling unknown: the latency bound rules
    open_key = ProviderSpec(model="openai:gpt-4o-mini", keys=[{"env": "K1", "rpm": 60}, {"env": "K2"}])
    t = throughput(open_key, 500, latency_s=0.5, max_in_flight=64)
    assert t.ceiling_rps is None and t.rate_rps == pytest.approx(64 / 0.5)
    # max_concurrency on every key caps what is in flight
    capped = ProviderSpec(model="openai:gpt-4o-mini", max_concurrency=3, keys=[{"env": "K1"}, {"env": "K2"}])
    assert throughput(capped, 500, latency_s=1.5, max_in_flight=64).rate_rps == pytest.approx(6 / 1.5)
    assert key_rps(None, None, 7.0, 100) == 7.0 and key_rps(None, None, None, 100) is None
    job = synth.load_job(
        structured_job(
            Path("/tmp/unused"),
            1000,
            {"model": "sim:default"},
            engine={"workers": 3, "shards_per_worker": 2, "concurrency": 40},
        )
    )
    assert engine_in_flight(job, 3) == 3 * 2 * 40  # shard_size 100 > concurrency 40
    assert engine_in_flight(job, 3, calls_per_unit=2.5) == 3 * 2 * 40 * 2.5
    assert engine_in_flight(job.model_copy(update={"count": 50}), 3) == 50  # no more units than the job has


def test_projection_scales_units_and_setup():
    provider = {
        "name": "default",
        "model": "openai:gpt-4o-mini",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
    }
    job = synth.load_job(structured_job(Path("/tmp/unused"), 10, provider), check_keys=False)
    meter = Meter()
    meter.usage[(0, "default")] = [1, 100, 100]
    meter.usage[(1, "default")] = [1, 300, 300]
    meter.usage[(None, "default")] = [1, 10, 10]  # setup: once per worker
    made = {
        "units": 2,
        "records": 2,
        "dead_letters": 0,
        "dead_example": None,
        "aborted": None,
        "seconds": 0.5,
        "timed": 1,
    }
    r = project(job, meter, made, workers=2, latency_s=1.0)
    assert r.workers == 1  # 10 units in one shard: one worker gets work
    assert r.calls == 2 / 2 * 10 + 1
    assert r.prompt_tokens == 400 / 2 * 10 + 10 and r.completion_tokens == 400 / 2 * 10 + 10
    assert r.usd == pytest.approx((2010 * 1.0 + 2010 * 2.0) / 1e6)
    unit_usd = [(100 * 1.0 + 100 * 2.0) / 1e6, (300 * 1.0 + 300 * 2.0) / 1e6]
    half = 1.96 * math.sqrt(sum((u - sum(unit_usd) / 2) ** 2 for u in unit_usd)) / math.sqrt(2) * 10
    assert r.usd_low == pytest.approx(r.usd - half) and r.usd_high == pytest.approx(r.usd + half)
    assert r.compute_s == pytest.approx(0.5 * 10 / 1)
    assert r.over_budget is None and "budget: none set" in r.render()


def test_routes_resolve_as_in_the_real_job_and_unknown_prices_are_named(tmp_path):
    job = synth.load_job(
        {
            **structured_job(tmp_path / "out", 400, {"model": "openai:gpt-4o-mini"}),
            "providers": [
                {"model": "openai:gpt-4o-mini", "keys": [{"env": "NOT_SET_ANYWHERE", "rpm": 120}]},
                {"name": "mine", "model": "compat:house-model", "base_url": "http://127.0.0.1:9/v1"},
            ],
            "routes": {"default": ["mine", "openai:gpt-4o-mini"]},
        },
        check_keys=False,
    )
    r = dry_run(job, sample=4)
    assert [p.route for p in r.providers] == ["mine"] and r.unpriced == ["compat:house-model"]
    assert "no price known for compat:house-model" in r.render() and r.usd is None
    # the generator names a provider by its model string: priced from the table, limited by its key
    job.generator = job.generator.model_copy(update={"model": "openai:gpt-4o-mini"})
    r = dry_run(job, sample=4)
    (p,) = r.providers
    assert p.model == "openai:gpt-4o-mini" and p.price and p.price.input_per_mtok == 0.15 and not r.unpriced
    assert p.throughput.ceiling_rps == pytest.approx(2.0) and p.wall_s == pytest.approx(p.calls / 2.0)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["conversation", "events", "rag", "structured", "timeseries"])
def test_every_example_dry_runs(name, tmp_path, monkeypatch):
    """In this process, through the command's own code (the command line as a subprocess is proven
    above): each example's dry run on the sim, nothing written."""
    from typer.testing import CliRunner

    from synth.cli import app

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    args = ["run", f"jobs/examples/{name}.yaml", "--dry-run", "--sample", "2", "-o", str(tmp_path / "out")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert PROJECTED.search(r.stdout) and "0 dead letters" in r.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
