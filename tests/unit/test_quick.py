"""The job `synth generate` builds: schemas in the short field form become JSON Schema, each kind's
generator block is its starter's changed only where an option says, models become providers and a
route, a single-file output keeps its dataset beside it; every bad option is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth.api import load_job
from synth.errors import ConfigError
from synth.quick import build, read_schema, starter

SHORT = {
    "temperature": {"type": "number", "min": -20, "max": 40},
    "city": {"type": "string", "enum": ["Oslo", "Lima"]},
    "when": "datetime",
    "tags": {"type": "array", "items": "str", "max": 3},
    "home": {"type": "object", "fields": {"zip": {"type": "string", "min": 5, "max": 5}}},
}


def test_short_form_becomes_json_schema():
    s = read_schema(SHORT)
    assert s["type"] == "object" and s["required"] == list(SHORT) and s["additionalProperties"] is False
    p = s["properties"]
    assert p["temperature"] == {"type": "number", "minimum": -20, "maximum": 40}
    assert p["city"] == {"type": "string", "enum": ["Oslo", "Lima"]}
    assert p["when"] == {"type": "string", "format": "date-time"}
    assert p["tags"] == {"type": "array", "items": {"type": "string"}, "maxItems": 3}
    assert p["home"]["properties"]["zip"] == {"type": "string", "minLength": 5, "maxLength": 5}
    assert p["home"]["required"] == ["zip"]


def test_json_schema_is_kept_as_written(tmp_path):
    doc = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    f = tmp_path / "s.json"
    f.write_text('{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}')
    assert read_schema(f) == doc == read_schema(doc)


def test_structured_block_with_a_schema_and_a_file_output(tmp_path):
    q = build("structured", count=500, schema=SHORT, output=str(tmp_path / "users.csv"))
    g = q.doc["generator"]
    assert g["schema"]["properties"]["city"]["enum"] == ["Oslo", "Lima"]
    assert g["layout"] == "columns" and "vars" not in g and "system" not in g and g["keep_prompt"] is False
    assert q.file == str(tmp_path / "users.csv")
    assert q.doc["output"]["uri"] == str(tmp_path / "users.csv.parts") and "format" not in q.doc["output"]
    assert q.doc["output"]["shard_size"] == 50
    assert q.doc["providers"] == [{"name": "default", "model": "sim:default"}]  # the offline sim
    q.spec()  # a valid job


def test_prompt_keeps_only_the_starter_variables_it_uses():
    g = build("structured", prompt="A {category} for {audience}").doc["generator"]
    assert sorted(g["vars"]) == ["audience", "category"]
    assert g["schema"] == starter("structured")["generator"]["schema"]


def test_timeseries_events_and_conversation_options():
    ts = build("timeseries", count=20, schema={"t": {"type": "number", "min": 0, "max": 9}}).doc
    assert ts["generator"]["fields"] == [{"name": "t", "type": "float", "min": 0, "max": 9}]
    assert ts["output"]["shard_size"] % starter("timeseries")["output"]["shard_size"] == 0
    ev = build("events", prompt="a banking app", schema={"tier": {"enum": ["a", "b"]}}).doc["generator"]
    assert ev["scenario"] == "a banking app" and "catalog" not in ev
    assert ev["user_fields"] == {"tier": {"kind": "choice", "values": ["a", "b"]}}
    conv = build("conversation", prompt="bicycle repair").doc["generator"]
    assert conv["instructions"]["seeds"] == ["bicycle repair"]
    for doc in (ts, build("events", prompt="x y z").doc, build("conversation").doc):
        load_job(doc)  # every block is a valid job of its kind


def test_a_plugin_kind_takes_schema_and_prompt_as_its_options():
    kind = "synth.generators.structured:StructuredGenerator"  # an import path, as a plugin's kind may be
    q = build(kind, count=5, schema={"a": "int"}, prompt="Say a number")
    assert q.doc["generator"] == {"kind": kind, "schema": read_schema({"a": "int"}), "prompt": "Say a number"}
    assert q.doc["name"] == "synth.generators.structured-StructuredGenerator"
    q.spec()


def test_models_fallbacks_route_and_budget():
    q = build("structured", model="sim:a", fallback="sim:b, sim:c", route="cost", budget=0.5, format="jsonl")
    assert [p["model"] for p in q.doc["providers"]] == ["sim:a", "sim:b", "sim:c"]
    assert q.doc["routes"] == {"default": {"strategy": "cost", "providers": ["sim:a", "sim:b", "sim:c"]}}
    assert q.doc["budget"] == {"max_usd": 0.5} and q.doc["output"]["format"] == "jsonl"
    spec = q.spec()
    assert spec.route_targets("default") == ["sim:a", "sim:b", "sim:c"]
    # the same options name the same default output; other options another
    assert build("structured").doc["output"]["uri"] == build("structured").doc["output"]["uri"]
    assert build("structured").doc["output"]["uri"] != build("structured", count=7).doc["output"]["uri"]


def test_a_file_not_written_from_its_parts_is_not_replaced(tmp_path):
    from synth.quick import check_file_target

    (tmp_path / "users.csv").write_text("mine\n")
    q = build("structured", output=str(tmp_path / "users.csv"))
    with pytest.raises(ConfigError, match="users.csv exists and was not made by synth generate; pass --overwrite"):
        check_file_target(q, overwrite=False)
    check_file_target(q, overwrite=True)
    (tmp_path / "users.csv.parts").mkdir()  # a dataset of an earlier run: the file is its product
    check_file_target(q, overwrite=False)


def test_saved_job_is_the_job_built(tmp_path):
    q = build("structured", count=30, schema=SHORT, output=str(tmp_path / "x.json"))
    path = q.save(tmp_path / "job.yaml", "synth generate structured ...")
    text = path.read_text()
    assert text.startswith("# A job made by synth generate") and f"synth run {path}" in text
    assert load_job(path).model_dump() == q.spec().model_dump()


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"kind": "tabular"}, "KIND 'tabular'"),
        ({"kind": "structured", "model": "gpt-4o"}, "--model 'gpt-4o'"),
        ({"kind": "structured", "model": "foo:bar"}, "--model 'foo:bar'"),
        ({"kind": "structured", "fallback": "sim:a,nope"}, "--fallback 'nope'"),
        ({"kind": "structured", "fallback": "sim:default"}, "--fallback: sim:default is given twice"),
        ({"kind": "structured", "route": "fastest"}, "--route 'fastest'"),
        ({"kind": "structured", "format": "xml"}, "--format 'xml'"),
        ({"kind": "structured", "format": "csv", "output": "a.jsonl"}, "--format csv does not match"),
        ({"kind": "structured", "count": 0}, "--count 0"),
        ({"kind": "structured", "budget": -1.0}, "--budget -1.0"),
        ({"kind": "conversation", "schema": SHORT}, "--schema: a conversation has no record schema"),
        ({"kind": "timeseries", "schema": {"c": {"enum": ["x"]}}}, "field 'c'"),
        ({"kind": "structured", "schema": {"a": {"type": "strin"}}}, "not a valid JSON Schema at properties/a"),
        ({"kind": "structured", "schema": {"a": 3}}, "field 'a'"),
        ({"kind": "structured", "schema": "missing.yaml"}, "--schema 'missing.yaml' does not exist"),
    ],
)
def test_bad_options_are_one_line(kwargs, names):
    with pytest.raises(ConfigError) as e:
        build(**kwargs)
    assert len(str(e.value).splitlines()) == 1 and names in str(e.value)


def test_bad_schema_files(tmp_path):
    (tmp_path / "a.yaml").write_text("a: [1, 2\n")
    (tmp_path / "b.yaml").write_text("- just\n- a list\n")
    for name, says in (("a.yaml", "not valid YAML or JSON at line 2"), ("b.yaml", "must be a mapping")):
        with pytest.raises(ConfigError, match=says):
            read_schema(Path(tmp_path / name))
