import json

import pytest

from synth.errors import ConfigError, KeyMissing
from synth.spec import JobSpec, load_spec, parse_job, substitute

GEN = {"kind": "structured", "prompt": "p"}


def test_env_substitution_with_defaults():
    env = {"N": "12", "OUT": "s3://b/x"}
    doc = {"count": "${N}", "uri": "${OUT}/y", "d": "${MISSING:-fallback}", "empty": "${MISSING:-}"}
    assert substitute(doc, env) == {"count": 12, "uri": "s3://b/x/y", "d": "fallback", "empty": ""}


def test_unset_variable_names_its_location():
    with pytest.raises(ConfigError) as e:
        parse_job({"name": "t", "count": 1, "generator": GEN, "output": {"uri": "${NOPE_NOT_SET}"}}, env={})
    assert (
        str(e.value)
        == "output.uri: environment variable NOPE_NOT_SET is not set; set it or write ${NOPE_NOT_SET:-default}"
    )


def test_missing_key_variable_one_line_per_key():
    doc = {
        "name": "t",
        "count": 1,
        "generator": GEN,
        "providers": [{"model": "openai:gpt-4o-mini", "keys": [{"env": "K_ONE"}, {"env": "OPENAI_KEY_2"}]}],
    }
    with pytest.raises(KeyMissing) as e:
        parse_job(doc, env={"K_ONE": "x"})
    assert str(e.value) == "providers[0].keys[1]: environment variable OPENAI_KEY_2 is not set"


def test_bad_fields_each_get_a_located_line():
    doc = {
        "name": "t",
        "count": 0,
        "colour": "red",
        "generator": GEN,
        "providers": [{"model": "foo:bar"}, {"model": "openai:x", "rpm": -1}],
    }
    with pytest.raises(ConfigError) as e:
        parse_job(doc, env={})
    lines = str(e.value).splitlines()
    assert any(line.startswith("count: ") for line in lines)
    assert any(line.startswith("colour: unknown field") for line in lines)
    assert any(line.startswith("providers[0].model: unknown provider prefix 'foo'") for line in lines)
    assert any(line.startswith("providers[1].rpm: ") for line in lines)


def test_default_provider_is_sim_and_routes_resolve():
    job = parse_job({"name": "t", "count": 1, "generator": GEN}, env={})
    assert [p.model for p in job.providers] == ["sim:default"]
    assert job.route_targets("default") == ["default"]
    job2 = parse_job(
        {
            "name": "t",
            "count": 1,
            "generator": GEN,
            "providers": [{"name": "a", "model": "sim:a"}, {"name": "b", "model": "sim:b"}],
            "routes": {"smart": ["a", "b"]},
        },
        env={},
    )
    assert job2.route_targets("smart") == ["a", "b"]
    assert job2.route_targets("default") == ["a"]


def test_unknown_route_target_refused():
    with pytest.raises(ConfigError, match="route 'x' names unknown provider 'nope'"):
        parse_job({"name": "t", "count": 1, "generator": GEN, "routes": {"x": ["nope"]}}, env={})


def test_yaml_errors_and_missing_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_env_file_beside_the_job(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTH_TEST_COUNT", raising=False)
    (tmp_path / ".env").write_text("SYNTH_TEST_COUNT=5\n")
    f = tmp_path / "job.json"
    f.write_text(json.dumps({"name": "t", "count": "${SYNTH_TEST_COUNT}", "generator": GEN}))
    assert load_spec(f).count == 5


def test_json_schema_describes_every_field():
    schema = JobSpec.model_json_schema()
    assert "providers" in schema["properties"]
    for name, model in schema["$defs"].items():
        for field, prop in model.get("properties", {}).items():
            if name in ("GeneratorSpec",) or "$ref" in prop or "allOf" in prop:
                continue
            assert "description" in prop, f"{name}.{field} has no description"


# ---------------------------------------------------------------- routes, breakers, capabilities

TWO = [{"name": "a", "model": "sim:a"}, {"name": "b", "model": "sim:b"}]


def route_job(route, **extra):
    return parse_job(
        {
            "name": "t",
            "count": 1,
            "generator": {**GEN, "model": "r"},
            "providers": TWO,
            "routes": {"r": route},
            **extra,
        },
        env={},
    )


def test_route_list_is_fallback_and_mapping_names_a_strategy():
    listed = route_job(["b", "a"])
    assert listed.route_spec("r").strategy == "fallback" and listed.route_targets("r") == ["b", "a"]
    weighted = route_job({"strategy": "weighted", "providers": ["a", "b"], "weights": [3, 1]})
    assert weighted.route_spec("r").weights == [3.0, 1.0] and weighted.route_targets("r") == ["a", "b"]
    assert weighted.route_spec("a").providers == ["a"]  # a provider's name is a route over itself
    # the job's identity keeps the route as written (a list stays a list)
    from synth.engine.plan import shaping_spec

    assert shaping_spec(listed)["routes"] == {"r": ["b", "a"]}
    assert json.dumps(shaping_spec(weighted)["routes"])


@pytest.mark.parametrize(
    ("route", "line"),
    [
        ({"strategy": "weighted", "providers": ["a", "b"]}, "routes.r.weights: the weighted strategy needs one weight"),
        ({"strategy": "weighted", "providers": ["a", "b"], "weights": [1]}, "routes.r.weights: 1 weights for 2"),
        ({"strategy": "weighted", "providers": ["a", "b"], "weights": [0, 0]}, "routes.r.weights: weights must be"),
        ({"strategy": "cost", "providers": ["a", "b"], "weights": [1, 2]}, "routes.r.weights: only the weighted"),
        ({"strategy": "quality", "providers": ["a", "b"], "ranking": ["a", "c"]}, "routes.r.ranking: must name each"),
        ({"strategy": "cost", "providers": ["a"], "ranking": ["a"]}, "routes.r.ranking: only quality and hybrid"),
        ({"strategy": "hybrid", "providers": ["a"], "hybrid": {"speed": 1}}, "routes.r.hybrid."),
        ({"strategy": "fastest", "providers": ["a"]}, "routes.r.strategy: Input should be 'fallback'"),
        ({"strategy": "cost", "providers": ["a", "x"]}, "routes.r.providers[1]: route 'r' names unknown provider 'x'"),
        ({"strategy": "cost", "providers": []}, "routes.r.providers: "),
        ({"providers": ["a", "a"]}, "routes.r.providers: a provider is named twice"),
        ({"providers": ["a"], "weight": [1]}, "routes.r.weight: unknown field"),
        (["a", "x"], "routes.r[1]: route 'r' names unknown provider 'x'"),
    ],
)
def test_bad_route_is_one_located_line(route, line):
    with pytest.raises(ConfigError) as e:
        route_job(route)
    lines = str(e.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), lines


def test_breaker_settings_job_wide_with_provider_overrides():
    job = parse_job(
        {
            "name": "t",
            "count": 1,
            "generator": GEN,
            "providers": [{"name": "a", "model": "sim:a", "breaker": {"open_s": 1}}, {"name": "b", "model": "sim:b"}],
            "engine": {"breaker": {"error_rate": 0.8, "open_s": 30}},
        },
        env={},
    )
    a, b = (job.breaker_for(p) for p in job.providers)
    assert (a.error_rate, a.open_s) == (0.8, 1.0) and (b.error_rate, b.open_s) == (0.8, 30.0)
    with pytest.raises(ConfigError, match=r"^engine\.breaker\.error_rate: "):
        parse_job({"name": "t", "count": 1, "generator": GEN, "engine": {"breaker": {"error_rate": 0}}}, env={})


def test_capability_overrides_are_validated():
    job = route_job(["a"], models={"sim:a": {"structured": False, "context": 4096}})
    assert job.models["sim:a"].context == 4096
    with pytest.raises(ConfigError, match=r"^models\.sim:a\.quality: "):
        route_job(["a"], models={"sim:a": {"quality": 2}})
    with pytest.raises(ConfigError, match=r"^providers\[0\]\.capabilities\.tool: unknown field"):
        parse_job(
            {"name": "t", "count": 1, "generator": GEN, "providers": [{"model": "sim:a", "capabilities": {"tool": 1}}]},
            env={},
        )
