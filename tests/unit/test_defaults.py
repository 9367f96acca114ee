"""Defaults files: where they are found, their precedence, how they merge under a job, the output
root, errors naming the file, and what `show` prints (secrets redacted, sources listed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synth.api import load_job
from synth.defaults import apply_defaults, find, load_defaults, redact, show
from synth.errors import ConfigError, KeyMissing
from synth.spec import load_spec

GEN = {"kind": "structured", "prompt": "p", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
USER = {
    "providers": [
        {"name": "main", "model": "openai:gpt-4o-mini", "keys": [{"env": "DEF_KEY", "rpm": 500}]},
        {"name": "spare", "model": "sim:spare"},
    ],
    "routes": {"default": ["main", "spare"], "cheap": ["spare"]},
    "budget": {"max_usd": 10, "max_tokens": 1000},
    "output": {"root": "s3://bucket/synth", "shard_size": 50, "storage": {"region": "eu-west-1"}},
    "cache": {"ttl_s": 60},
}
ENV = {"DEF_KEY": "sk-default-secret-key-0042"}


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose user file is under tmp_path (XDG_CONFIG_HOME), and a working folder."""
    (tmp_path / "work").mkdir()
    return {**ENV, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def job(**extra: object) -> dict[str, object]:
    return {"name": "j", "count": 5, "generator": GEN, **extra}


def test_precedence_job_over_project_over_user(tmp_path, home):
    write(tmp_path / "xdg/synth/config.yaml", USER)
    write(tmp_path / "work/synth.yaml", {"budget": {"max_usd": 3}, "engine": {"workers": 2}})
    d = load_defaults(tmp_path / "work", home)
    assert [(s.role, Path(s.path).name) for s in d.sources] == [("user", "config.yaml"), ("project", "synth.yaml")]
    spec = load_job(job(budget={"max_tokens": 7}), defaults=d, env_file=None, check_keys=False)
    # mappings merge at every depth: each field from the highest file that sets it
    assert (spec.budget.max_usd, spec.budget.max_tokens) == (3, 7)
    assert spec.engine.workers == 2 and spec.cache.ttl_s == 60
    assert spec.output.shard_size == 50 and spec.output.storage.region == "eu-west-1"


def test_job_naming_no_providers_gets_the_defaults_providers_and_routes(tmp_path, home):
    write(tmp_path / "xdg/synth/config.yaml", USER)
    d = load_defaults(tmp_path / "work", home)
    spec = load_job(job(routes={"fast": ["main"]}), defaults=d, check_keys=False)
    assert [p.route for p in spec.providers] == ["main", "spare"]
    assert spec.providers[0].keys[0].env == "DEF_KEY" and spec.providers[0].keys[0].rpm == 500
    # routes merge route by route
    assert spec.routes == {"default": ["main", "spare"], "cheap": ["spare"], "fast": ["main"]}
    # with a key variable that is not set, the check names the key as for a job's own provider
    with pytest.raises(KeyMissing, match=r"^providers\[0\]\.keys\[0\]: environment variable DEF_KEY is not set$"):
        from synth.spec import parse_job

        parse_job(apply_defaults(job(), d), env={})


def test_a_list_in_the_job_replaces_the_defaults_list(tmp_path, home):
    write(tmp_path / "xdg/synth/config.yaml", {**USER, "output": {"partition_by": ["generator", "shard"]}})
    d = load_defaults(tmp_path / "work", home)
    own = [{"name": "mine", "model": "sim:mine"}]
    spec = load_job(job(providers=own, output={"partition_by": ["shard"]}), defaults=d, check_keys=False)
    assert [p.route for p in spec.providers] == ["mine"]
    assert spec.routes == {}  # the defaults' routes named the providers the job replaced
    assert spec.output.partition_by == ["shard"]
    # providers: [] names none: the defaults' stand
    spec = load_job(job(providers=[]), defaults=d, check_keys=False)
    assert [p.route for p in spec.providers] == ["main", "spare"]


def test_output_root_places_relative_outputs_under_it(tmp_path, home):
    write(tmp_path / "xdg/synth/config.yaml", {"output": {"root": "s3://bucket/synth/"}})
    d = load_defaults(tmp_path / "work", home)
    at = {
        None: "s3://bucket/synth/j",
        "./out/${job}": "s3://bucket/synth/out/j",
        "runs/a": "s3://bucket/synth/runs/a",
        "/data/x": "/data/x",
        "gs://other/x": "gs://other/x",
    }
    for uri, want in at.items():
        doc = job(output={"uri": uri}) if uri else job()
        assert load_job(doc, defaults=d).output.uri == want, uri
    # the command line's --output is taken as written
    assert load_job(job(), defaults=d, overrides={"output.uri": "./here"}).output.uri == "./here"
    with pytest.raises(ConfigError, match=r"^output\.uri: '\.\./x' climbs out of output\.root"):
        load_job(job(output={"uri": "../x"}), defaults=d)
    # output.root belongs in a defaults file: a job's own is an unknown field
    with pytest.raises(ConfigError, match=r"^output\.root: unknown field"):
        load_job(job(output={"root": "/r"}), defaults=False)


def test_synth_config_names_the_user_file_and_none_turns_defaults_off(tmp_path, home):
    write(tmp_path / "xdg/synth/config.yaml", {"budget": {"max_usd": 1}})
    other = write(tmp_path / "team.yaml", {"budget": {"max_usd": 9}})
    write(tmp_path / "work/synth.yaml", {"seed": 3})
    sources, _ = find(tmp_path / "work", {**home, "SYNTH_CONFIG": str(other)})
    assert [(s.role, s.path) for s in sources] == [
        ("SYNTH_CONFIG", str(other)),
        ("project", str(tmp_path / "work/synth.yaml")),
    ]
    d = load_defaults(tmp_path / "work", {**home, "SYNTH_CONFIG": str(other)})
    spec = load_job(job(), defaults=d)
    assert (spec.budget.max_usd, spec.seed) == (9, 3)
    assert find(tmp_path / "work", {**home, "SYNTH_CONFIG": "none"}) == ([], [])
    with pytest.raises(ConfigError, match=r"^SYNTH_CONFIG: '.*missing\.yaml' is not a file; .*SYNTH_CONFIG=none"):
        find(tmp_path / "work", {**home, "SYNTH_CONFIG": str(tmp_path / "missing.yaml")})
    # no XDG_CONFIG_HOME: ~/.config/synth/config.yaml
    sources, looked = find(tmp_path / "nowhere", {"HOME": str(tmp_path / "h")})
    assert sources == [] and looked[0] == str(tmp_path / "h/.config/synth/config.yaml")


def test_env_substitution_applies_to_defaults(tmp_path, home):
    write(tmp_path / "xdg/synth/config.yaml", {"output": {"root": "${ROOT}/synth", "shard_size": "${SHARD:-40}"}})
    d = load_defaults(tmp_path / "work", {**home, "ROOT": "s3://b"})
    spec = load_job(job(), defaults=d)
    assert (spec.output.uri, spec.output.shard_size) == ("s3://b/synth/j", 40)
    with pytest.raises(ConfigError) as e:
        load_defaults(tmp_path / "work", home)
    assert str(e.value) == (
        f"{tmp_path / 'xdg/synth/config.yaml'}: output.root: environment variable ROOT is not set; "
        "set it or write ${ROOT:-default}"
    )


@pytest.mark.parametrize(
    "text,problem",
    [
        ("providers: [\n  {model: sim:x\n", r"not valid YAML at line \d+, column \d+; fix the defaults file"),
        ("- a\n- b\n", r"a defaults file is a mapping of job fields .*not a list"),
        ("provders: []\n", r"provders: unknown field; check the spelling"),
        ("providers: [{model: 'sim:x', rpm: -1}]\n", r"providers\[0\]\.rpm: Input should be greater than 0"),
        ("output: {root: 'nope://x'}\n", r"output\.root: protocol 'nope' of 'nope://x' is not known"),
        ("name: shared\n", r"name: a job's name is its own; remove it from the defaults file"),
    ],
)
def test_a_malformed_defaults_file_is_one_line_naming_it(tmp_path, home, text, problem):
    path = write(tmp_path / "work/synth.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_defaults(tmp_path / "work", home)
    lines = str(e.value).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: ")
    assert __import__("re").search(problem, lines[0]), lines[0]


def test_load_spec_merges_the_files_it_finds(tmp_path, monkeypatch, home):
    write(tmp_path / "xdg/synth/config.yaml", USER)
    path = write(tmp_path / "work/job.yaml", job())
    monkeypatch.chdir(tmp_path / "work")
    for k, v in home.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SYNTH_CONFIG", raising=False)
    assert [p.route for p in load_spec(path).providers] == ["main", "spare"]
    assert [p.route for p in load_spec(path, defaults=False).providers] == ["default"]
    monkeypatch.setenv("SYNTH_CONFIG", "none")
    assert [p.route for p in load_spec(path).providers] == ["default"]


def test_redact_keeps_variable_names_and_hides_values():
    env = {"DEF_KEY": "sk-default-secret-key-0042", "MY_TOKEN": "plain-but-secret-value", "SHORT": "x"}
    doc = {
        "providers": [
            {
                "model": "openai:gpt-4o-mini",
                "keys": [{"env": "DEF_KEY"}],
                "params": {"api_key": "anything", "note": "uses sk-default-secret-key-0042 and plain-but-secret-value"},
            }
        ],
        "output": {"storage": {"key_env": "MY_TOKEN"}, "uri": "s3://b/x"},
        "opaque": "Xy7Qk2Lm9Np4Rs8Tv1Wz5Ab3Cd6Ef0",
        "prompt": "a plain sentence with Bearer abc.def in it",
    }
    out = redact(doc, env)
    text = yaml.safe_dump(out)
    for secret in ("sk-default", "plain-but-secret", "anything", "Xy7Qk2", "abc.def"):
        assert secret not in text
    assert out["providers"][0]["keys"] == [{"env": "DEF_KEY"}]
    assert out["output"] == {"storage": {"key_env": "MY_TOKEN"}, "uri": "s3://b/x"}
    assert out["providers"][0]["model"] == "openai:gpt-4o-mini"


def test_show_lists_sources_and_redacts(tmp_path, monkeypatch, home):
    secret = "sk-literal-in-defaults-7788"
    main = {**USER["providers"][0], "params": {"user": secret}}
    write(tmp_path / "xdg/synth/config.yaml", {**USER, "providers": [main, USER["providers"][1]]})
    write(tmp_path / "work/synth.yaml", {"seed": 4})
    path = write(tmp_path / "work/job.yaml", job())
    for k, v in home.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SYNTH_CONFIG", raising=False)
    text, problems = show(path, cwd=tmp_path / "work")
    assert problems == []
    head = [line for line in text.splitlines() if line.startswith("#")]
    assert head[1:] == [
        f"#   job: {path}",
        f"#   project: {tmp_path / 'work/synth.yaml'}",
        f"#   user: {tmp_path / 'xdg/synth/config.yaml'}",
    ]
    doc = yaml.safe_load(text)
    assert doc["seed"] == 4 and doc["output"]["uri"] == "s3://bucket/synth/j"
    assert doc["providers"][0]["keys"][0]["env"] == "DEF_KEY"
    assert secret not in text and ENV["DEF_KEY"] not in text
    full, _ = show(path, cwd=tmp_path / "work", full=True)
    assert yaml.safe_load(full)["engine"]["batch_size"] == 256 and secret not in full
