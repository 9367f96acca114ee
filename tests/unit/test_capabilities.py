"""Model capabilities as data: the built-in table, the job's overrides, and the check at load."""

from __future__ import annotations

import subprocess
import sys

import pytest

from synth.api import load_job
from synth.errors import ConfigError
from synth.providers.capabilities import Needs, capabilities_for, route_needs
from synth.providers.pricing import MODELS, TABLE, price_for
from synth.records import ChatMessage, Request
from synth.spec import ProviderSpec, parse_job

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
STRUCTURED = {"kind": "structured", "prompt": "p", "schema": SCHEMA}


def job(providers, generator=STRUCTURED, **extra):
    return parse_job({"name": "t", "count": 1, "generator": generator, "providers": providers, **extra}, env={})


def test_one_table_gives_prices_and_capabilities():
    assert TABLE["gpt-4o-mini"] == (MODELS["gpt-4o-mini"]["input"], MODELS["gpt-4o-mini"]["output"])
    c = capabilities_for(ProviderSpec(model="openai:gpt-4o-mini-2024-07-18"))  # dated: its family
    assert (c.context, c.structured, c.tools) == (128000, True, True)
    assert c.price == price_for("openai:gpt-4o-mini")
    old = capabilities_for(ProviderSpec(model="openrouter:openai/gpt-3.5-turbo"))
    assert old.structured is False and old.context == 16385
    unknown = capabilities_for(ProviderSpec(model="compat:my-local-llama", base_url="http://x:1/v1"))
    assert (unknown.context, unknown.structured, unknown.tools, unknown.price) == (None, None, None, None)
    assert unknown.meets(Needs(structured=True, tools=True, tokens=10**9))  # unknown is taken as able


def test_sim_stands_in_for_the_model_it_names_and_costs_nothing():
    c = capabilities_for(ProviderSpec(model="sim:gpt-3.5-turbo"))
    assert c.structured is False and c.price is not None and c.price.input_per_mtok == 0
    assert capabilities_for(ProviderSpec(model="sim:default")).meets(Needs(True, True, 10**6))


def test_job_overrides_win_over_the_table_provider_last():
    j = job(
        [
            {"name": "a", "model": "openai:gpt-3.5-turbo", "capabilities": {"context": 4096}},
            {"name": "b", "model": "openai:gpt-3.5-turbo-0125"},
        ],
        models={"gpt-3.5-turbo": {"structured": True, "quality": 0.1}},
        routes={"default": ["a", "b"]},
    )
    a, b = (capabilities_for(p, j) for p in j.providers)
    assert (a.structured, a.context, a.quality) == (True, 4096, 0.1)
    assert (b.structured, b.context) == (False, 16385)  # 'models:' names models exactly, as 'prices:' does
    assert capabilities_for(j.providers[0], None).structured is False  # the table alone


def test_needs_of_a_request():
    r = Request(id="x", messages=[ChatMessage(role="user", content="hello " * 40)], max_tokens=100, n=2)
    n = Needs.of(r)
    assert (n.structured, n.tools) == (False, False) and n.tokens > 200
    r2 = r.model_copy(update={"json_schema": SCHEMA, "tools": [{"type": "function"}]})
    assert Needs.of(r2).structured and Needs.of(r2).tools
    assert capabilities_for(ProviderSpec(model="openai:gpt-4-turbo")).lacks(Needs.of(r2)) == ["structured output"]


def test_route_needs_follow_the_generator_options():
    conv = {
        "kind": "conversation",
        "model": "resp",
        "correspondent": {"model": "users", "mode": "structured"},
        "tools": [{"name": "lookup", "model": "tooling"}],
    }
    providers = [{"name": n, "model": "sim:default"} for n in ("resp", "users", "tooling")]
    needs = route_needs(job(providers, generator=conv))
    assert needs == {
        "users": Needs(structured=True),
        "resp": Needs(tools=True),
        "tooling": Needs(structured=True),
    }
    assert route_needs(job([{"name": "default", "model": "sim:default"}])) == {"default": Needs(structured=True)}


def test_structured_job_on_models_without_structured_output_is_refused_at_load():
    with pytest.raises(ConfigError) as e:
        load_job(job([{"name": "old", "model": "openai:gpt-3.5-turbo"}]), check_keys=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("generator.model: route 'default' is asked for structured output, but old")
    assert "models:" in msg
    # one able provider on the route is enough: cost routing sends structured requests there
    ok = job(
        [{"name": "old", "model": "openai:gpt-3.5-turbo"}, {"name": "new", "model": "openai:gpt-4o-mini"}],
        routes={"default": {"strategy": "cost", "providers": ["old", "new"]}},
    )
    assert load_job(ok, check_keys=False).route_spec("default").strategy == "cost"
    # the job can say the table is wrong
    fixed = job([{"name": "old", "model": "openai:gpt-3.5-turbo", "capabilities": {"structured": True}}])
    load_job(fixed, check_keys=False)


def test_spec_check_exits_2_with_one_line(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: t\ncount: 1\ngenerator: {kind: structured, prompt: p, schema: {type: object, properties: {a: {type: string}}}}\n"
        "providers: [{name: a, model: 'sim:default', capabilities: {structured: false}}]\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "synth", "spec", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "structured output" in lines[0] and "a (sim:default)" in lines[0]
