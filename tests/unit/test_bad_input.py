"""Bad input, generated: every broken job file, schema, template variable, route, output URI and
CLI argument is refused before anything is written, as one ``field: problem; fix`` line per
problem (a ConfigError, exit 2), never a traceback or a bare exception class name.

In-process checks go through the public path of ``synth run`` up to its first write:
``synth.api.load_job`` then ``Storage(job.output).preflight()``. CLI checks run
``python -m synth`` in a subprocess."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from synth.api import load_job
from synth.engine.storage import Storage
from synth.errors import SynthError

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "synth-hypothesis")  # not a folder in the repository
ROOT = Path(__file__).resolve().parents[2]
OUT = "/tmp/synth-bad-input-never-written"  # no case may create it

BASE: dict[str, Any] = {
    "name": "fuzz",
    "count": 10,
    "seed": 1,
    "generator": {
        "kind": "structured",
        "schema": {"type": "object", "properties": {"title": {"type": "string"}, "n": {"type": "integer"}}},
        "prompt": "Write about {topic} for {n} people.",
        "vars": {"topic": ["tea", "coffee"], "n": {"kind": "range", "low": 1, "high": 5, "step": 1}},
        "temperature": 0.5,
        "max_attempts": 3,
    },
    "providers": [{"name": "default", "model": "sim:default"}],
    "budget": {"max_usd": 5},
    "output": {"uri": f"{OUT}/${{job}}", "shard_size": 5},
    "cache": {"enabled": False},
    "engine": {"workers": 1},
}

# a problem line: "<location>: <message>"; the location is a field path or a file name
LINE = re.compile(r"^[A-Za-z_][\w.\[\]-]*: \S")
CLASS_NAMES = re.compile(
    r"\b(OSError|ValueError|TypeError|KeyError|PermissionError|FileNotFoundError|"
    r"NotADirectoryError|UnicodeDecodeError|AttributeError|Traceback)\b"
)
FUZZED = {"inputs": 0}

names = st.text("abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)


def refused(source: Any, field: str) -> str:
    """Load ``source`` and preflight its output; it must be refused naming ``field``, one line a problem."""
    FUZZED["inputs"] += 1
    with pytest.raises(SynthError) as info:
        job = load_job(source, check_keys=False)
        Storage(job.output).preflight()
    err = info.value
    text = str(err)
    assert err.exit_code == 2, (type(err).__name__, text)
    assert text.strip() and "\n\n" not in text, text
    for line in text.splitlines():
        assert LINE.match(line), f"not a 'field: problem' line: {line!r}"
        assert not CLASS_NAMES.search(line), line
    assert field in text, f"{field!r} not named in: {text}"
    assert not os.path.exists(OUT)
    return text


@pytest.fixture(scope="module", autouse=True)
def report_count() -> Any:
    yield
    print(f"\nbad inputs checked in-process: {FUZZED['inputs']}")


def valid() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def test_the_base_job_is_valid() -> None:
    job = load_job(valid(), check_keys=False)
    Storage(job.output).preflight()
    assert job.generator.model == "default" and not os.path.exists(OUT)


# ------------------------------------------------------------ structure: drop, retype, misspell

# (path, a strategy of values of the wrong type or out of range, the field named)
WRONG: list[tuple[tuple[str, ...], Any]] = [
    (
        ("count",),
        st.one_of(
            names,
            st.just(0),
            st.integers(max_value=-1),
            st.lists(st.integers(), max_size=2),
            st.floats(0.1, 9.9).filter(lambda f: not f.is_integer()),
        ),
    ),  # 2.0 is an integer
    (("name",), st.one_of(st.integers(), st.just("bad name!"), st.just(""), st.lists(names, max_size=1))),
    (("seed",), st.one_of(names, st.floats(0.1, 0.9))),
    (("generator",), st.one_of(names, st.integers(), st.lists(names, max_size=2))),
    (("generator", "kind"), st.one_of(st.integers(), names.map(lambda s: s + "x"))),
    (("generator", "temperature"), st.one_of(names, st.floats(2.01, 1e6), st.floats(-1e6, -0.01))),
    (("generator", "max_attempts"), st.one_of(names, st.integers(max_value=0), st.integers(min_value=51))),
    (("generator", "vars"), st.one_of(names, st.lists(names, min_size=1, max_size=2))),
    (("generator", "schema"), st.one_of(st.integers(), st.lists(st.integers(), max_size=2))),
    (("providers",), st.one_of(names, st.integers(), st.dictionaries(names, names, min_size=1, max_size=2))),
    (("budget", "max_usd"), st.one_of(names, st.floats(-1e6, 0))),
    (("output", "shard_size"), st.one_of(names, st.integers(max_value=0))),
    (("output", "format"), names.filter(lambda f: f not in ("parquet", "jsonl"))),
    (("engine", "workers"), st.one_of(names, st.integers(max_value=0))),
    (("cache", "enabled"), st.lists(names, min_size=1, max_size=2)),
]


def put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


@settings(max_examples=150, deadline=None, database=None)
@given(st.data())
def test_wrong_types_and_values_name_the_field(data: st.DataObject) -> None:
    path, values = data.draw(st.sampled_from(WRONG))
    doc = valid()
    put(doc, path, data.draw(values))
    refused(doc, ".".join(path) if path != ("generator", "kind") else "generator.kind")


REQUIRED = [("name",), ("count",), ("generator",), ("generator", "kind"), ("generator", "schema")]


@pytest.mark.parametrize("path", REQUIRED, ids=".".join)
def test_a_missing_required_field_is_named(path: tuple[str, ...]) -> None:
    doc = valid()
    node = doc
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    refused(doc, ".".join(path))


def _field_names() -> set[str]:
    from synth.generators.structured import StructuredOptions
    from synth.generators.templates import RangeVar
    from synth.spec import BudgetSpec, CacheSpec, EngineSpec, JobSpec, OutputSpec, ProviderSpec

    models = (JobSpec, ProviderSpec, BudgetSpec, OutputSpec, CacheSpec, EngineSpec, StructuredOptions, RangeVar)
    # and the tags pydantic gives a union's members, which are not field names in an error's location
    return {n for m in models for f, info in m.model_fields.items() for n in (f, info.alias) if n} | {
        "str",
        "int",
        "bool",
        "float",
        "model",
        "kind",
    }


FIELD_NAMES = _field_names()


def blocks(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every mapping of the job whose keys are fields (variable names are not)."""
    return [
        ("", doc),
        ("generator", doc["generator"]),
        ("generator.vars.n", doc["generator"]["vars"]["n"]),
        ("providers[0]", doc["providers"][0]),
        ("budget", doc["budget"]),
        ("output", doc["output"]),
        ("cache", doc["cache"]),
        ("engine", doc["engine"]),
    ]


@settings(max_examples=150, deadline=None, database=None)
@given(st.data())
def test_misspelled_and_unknown_fields_anywhere_are_named(data: st.DataObject) -> None:
    doc = valid()
    where, block = data.draw(st.sampled_from(blocks(doc)))
    known = list(block)
    if data.draw(st.booleans()):  # misspell an existing field: a letter doubled, dropped or added
        old = data.draw(st.sampled_from([k for k in known if len(k) > 3 and k != "kind"]))
        i = data.draw(st.integers(1, len(old) - 1))
        new = data.draw(st.sampled_from([old[:i] + old[i] + old[i:], old[:i] + old[i + 1 :], old[:i] + "q" + old[i:]]))
        if new in known or new in FIELD_NAMES:
            return
        block[new] = block.pop(old)
    else:  # a field nobody defines
        new = data.draw(names.filter(lambda s: s not in FIELD_NAMES))
        block[new] = data.draw(st.one_of(names, st.integers(), st.booleans()))
    text = refused(doc, new)
    assert any(line.startswith(where) and new in line for line in text.splitlines()), text


# ------------------------------------------------------------ schemas, templates, paths

BAD_SCHEMAS = st.one_of(
    names.map(lambda t: {"type": t + "z"}),  # no such JSON type
    st.just({"type": "object", "properties": {"a": {"type": 5}}}),
    st.just({"type": "object", "required": "a"}),
    st.just({"type": "object", "properties": {"a": {"minLength": -1}}}),
    st.just({"type": "string"}),  # the root must be an object
    st.just({"type": "object", "properties": []}),
)


@settings(max_examples=60, deadline=None, database=None)
@given(BAD_SCHEMAS)
@example({"type": "objekt"})
def test_a_schema_that_is_not_json_schema_is_named(schema: dict[str, Any]) -> None:
    doc = valid()
    doc["generator"]["schema"] = schema
    refused(doc, "generator.schema")


JINJA_WORDS = {"none", "true", "false", "and", "not", "for", "else", "elif", "endif", "endfor", "with", "recursive"}


@settings(max_examples=30, deadline=None, database=None)  # jinja compiles each template: about 0.1 s an example
@given(names.filter(lambda s: s != "topic" and s not in JINJA_WORDS), st.booleans())
def test_a_prompt_naming_an_undefined_var_is_refused_at_load(var: str, jinja: bool) -> None:
    doc = valid()
    doc["generator"]["vars"].pop("n")
    doc["generator"]["prompt"] = (
        f"Write about {{{{ {var} }}}} and {{{{ topic }}}}." if jinja else f"About {{{var}}} and {{topic}}."
    )
    text = refused(doc, "generator.prompt")
    assert var in text


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=0, max_size=4), st.integers(1, 3), st.booleans())
def test_paths_climbing_out_with_dotdot_are_never_opened(head: list[str], ups: int, is_schema: bool) -> None:
    parts = head + [".."] * (len([p for p in head if p not in ("..", ".")]) + ups) + ["etc", "passwd.json"]
    rel = "/".join(parts)
    doc = valid()
    if is_schema:
        doc["generator"]["schema"] = rel
        refused(doc, "generator.schema")
    else:
        doc["generator"]["vars"]["topic"] = {"kind": "file", "uri": rel}
        refused(doc, "generator.vars.topic.uri")


def test_non_utf8_schema_and_variable_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.json"
    bad.write_bytes(
        json.dumps({"type": "object", "properties": {"caf\u00e9": {"type": "string"}}}, ensure_ascii=False).encode(
            "latin-1"
        )
    )
    doc = valid()
    doc["generator"]["schema"] = str(bad)
    assert "not UTF-8" in refused(doc, "generator.schema")
    words = tmp_path / "words.txt"
    words.write_bytes("caf\u00e9\nth\u00e9\n".encode("latin-1"))
    doc = valid()
    doc["generator"]["vars"]["topic"] = {"kind": "file", "uri": str(words)}
    assert "not UTF-8" in refused(doc, "generator.vars.topic.uri")


# ------------------------------------------------------------ providers and routes


ROUTE_CASES = st.one_of(
    # a typo of the route name
    names.filter(lambda s: s != "default").map(lambda r: ({}, r)),
    # no providers (so the offline sim:default): a real provider's model cannot be served
    st.sampled_from(["openai:gpt-4o-mini", "gemini:gemini-2.5-flash", "openrouter:x/y"]).map(
        lambda m: ({"providers": []}, m)
    ),
    # providers that exist but serve another model
    names.map(lambda n: ({"providers": [{"name": n, "model": "sim:fast"}]}, "openai:gpt-4o-mini")),
)


@settings(max_examples=80, deadline=None, database=None)
@given(ROUTE_CASES)
@example(({"providers": []}, "openai:gpt-4o-mini"))
@example(({}, "mian"))
def test_a_generator_model_no_provider_serves_is_refused(case: tuple[dict[str, Any], str]) -> None:
    patch, model = case
    doc = valid()
    doc.update(patch)
    doc["generator"]["model"] = model
    assert model in refused(doc, "generator.model")


CONVERSATION: dict[str, Any] = {
    "name": "talk",
    "count": 4,
    "generator": {
        "kind": "conversation",
        "instructions": {"kind": "topics", "seeds": ["tea"], "depth": 1, "breadth": 2, "per_leaf": 2},
        "turns": {"min": 1, "max": 2},
        "correspondent": {"mode": "sentinel", "end_token": "[END]"},
        "tools": [{"name": "clock", "description": "the time", "parameters": {"type": "object", "properties": {}}}],
    },
    "output": {"uri": f"{OUT}/${{job}}"},
}
OPTION_ROUTES = [("correspondent", "model"), ("instructions", "model"), ("tools", 0, "model")]


def test_the_conversation_base_job_is_valid() -> None:
    assert load_job(copy.deepcopy(CONVERSATION), check_keys=False).generator.kind == "conversation"


@settings(max_examples=20, deadline=None, database=None)  # a conversation job loads in about 0.1 s
@given(st.sampled_from(OPTION_ROUTES), names.filter(lambda s: s != "default"))
def test_a_route_inside_the_generator_options_that_no_provider_serves_is_refused(
    path: tuple[Any, ...], route: str
) -> None:
    doc = copy.deepcopy(CONVERSATION)
    node = doc["generator"]
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = route
    where = "generator." + ".".join(str(p) for p in path).replace(".0.", "[0].")
    assert repr(route) in refused(doc, where)


@settings(max_examples=60, deadline=None, database=None)
@given(names, names)
def test_a_route_naming_an_unknown_provider_is_named(route: str, target: str) -> None:
    doc = valid()
    doc["routes"] = {route: ["default", target + "x"]}
    refused(doc, f"routes.{route}[1]")


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(names, min_size=1, max_size=3), st.integers(0, 5), st.integers(0, 5))
def test_duplicate_provider_names_are_named(distinct: list[str], a: int, b: int) -> None:
    provs = [{"name": n, "model": "sim:default"} for n in distinct]
    dup = dict(provs[a % len(provs)])
    provs.insert(min(b, len(provs)), dup)
    doc = valid()
    doc["providers"] = provs
    doc["generator"]["model"] = distinct[0]
    text = refused(doc, "providers[")
    assert ".name" in text and repr(dup["name"]) in text


BAD_BASE_URLS = st.one_of(
    st.tuples(names, st.integers(1, 65535)).map(lambda t: f"{t[0]}:{t[1]}/v1"),
    names.map(lambda h: f"{h}.example/v1"),
    names.map(lambda h: f"ftp://{h}/v1"),
    st.just("127.0.0.1:8000"),
    st.just("//host/v1"),
)


@settings(max_examples=60, deadline=None, database=None)
@given(BAD_BASE_URLS, st.sampled_from(["compat:m", "openai:gpt-4o-mini"]))
@example("localhost:8000/v1", "compat:m")
def test_a_base_url_without_a_scheme_is_named(url: str, model: str) -> None:
    doc = valid()
    doc["providers"] = [{"name": "default", "model": model, "base_url": url}]
    assert "http" in refused(doc, "providers[0].base_url")


# ------------------------------------------------------------ output


KNOWN = set(fsspec.available_protocols())


@settings(max_examples=60, deadline=None, database=None)
@given(names.filter(lambda p: p not in KNOWN), names)
@example("foo", "x")
def test_an_output_uri_with_an_unknown_protocol_is_named(proto: str, rest: str) -> None:
    doc = valid()
    doc["output"]["uri"] = f"{proto}://{rest}"
    assert proto in refused(doc, "output.uri")


@settings(max_examples=40, deadline=None, database=None)
@given(st.sampled_from(["/proc", "/sys", "/dev/null", "/etc/hostname"]), st.lists(names, min_size=1, max_size=3))
@example("/proc", ["x"])
@example("/dev/null", ["x"])
def test_an_output_path_that_cannot_be_a_writable_folder_is_exit_2(root: str, parts: list[str]) -> None:
    if not os.path.exists(root):
        return
    doc = valid()
    doc["output"]["uri"] = "/".join([root, *parts])
    refused(doc, "output.uri")


def test_an_output_override_is_checked_like_the_file() -> None:
    with pytest.raises(SynthError) as info:
        load_job(valid(), overrides={"output.uri": "foo://x"}, check_keys=False)
    assert str(info.value).startswith("output.uri: ") and info.value.exit_code == 2


# ------------------------------------------------------------ job files: syntax and encoding


def mangle(text: str, where: int, junk: str) -> str:
    at = text.find("\n", where % max(len(text), 1))
    at = len(text) if at < 0 else at
    return text[:at] + junk + text[at:]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, 10_000),
    st.sampled_from([": [unclosed", ": {a: b", "\n  - x\n y: : :", "\n\tbad: tab", ': "open', "\n- [", ": &a *b"]),
)
def test_yaml_syntax_errors_name_the_file_and_line(tmp_path: Path, where: int, junk: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(mangle(yaml.safe_dump(valid(), sort_keys=False), where, junk))
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        assert "not valid YAML" in refused(path, "job.yaml")
        return
    FUZZED["inputs"] += 1  # the junk parsed: the job is then invalid or valid, never a crash
    try:
        load_job(path, check_keys=False)
    except SynthError as e:
        assert e.exit_code == 2 and all(LINE.match(line) for line in str(e).splitlines()), str(e)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10_000), st.binary(min_size=1, max_size=3).filter(lambda b: not _utf8(b)))
def test_a_job_file_that_is_not_utf8_is_named(tmp_path: Path, where: int, junk: bytes) -> None:
    text = yaml.safe_dump(valid(), sort_keys=False, allow_unicode=True).encode()
    at = where % len(text)
    path = tmp_path / "job.yaml"
    path.write_bytes(text[:at] + junk + text[at:])
    assert "not UTF-8" in refused(path, "job.yaml")


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ------------------------------------------------------------ the command line


def job_file(tmp_path: Path, patch: Callable[[dict[str, Any]], None], name: str = "bad.yaml") -> Path:
    doc = valid()
    doc["output"]["uri"] = str(tmp_path / "out")
    patch(doc)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def no_providers_openai_model(d: dict[str, Any]) -> None:
    d["providers"] = []
    d["generator"]["model"] = "openai:gpt-4o-mini"


def route_typo(d: dict[str, Any]) -> None:
    d["generator"]["model"] = "mian"


def base_url_no_scheme(d: dict[str, Any]) -> None:
    d["providers"] = [{"name": "default", "model": "compat:m", "base_url": "localhost:8000/v1"}]


def unchanged(d: dict[str, Any]) -> None:
    pass


# case -> (job patch, command, extra arguments, the field the error must name)
CLI_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, tuple[str, ...], str]] = {
    "run-no-providers-openai-model": (no_providers_openai_model, "run", (), "generator.model"),
    "check-no-providers-openai-model": (no_providers_openai_model, "check", (), "generator.model"),
    "run-route-typo": (route_typo, "run", (), "generator.model"),
    "check-route-typo": (route_typo, "check", (), "'mian'"),
    "run-unknown-protocol": (unchanged, "run", ("-o", "foo://x"), "output.uri"),
    "run-proc": (unchanged, "run", ("-o", "/proc/x"), "output.uri"),
    "run-dev-null": (unchanged, "run", ("-o", "/dev/null/x"), "output.uri"),
    "run-base-url-no-scheme": (base_url_no_scheme, "run", (), "providers[0].base_url"),
    "check-base-url-no-scheme": (base_url_no_scheme, "check", (), "providers[0].base_url"),
    "run-count-not-a-number": (unchanged, "run", ("-n", "abc"), "'--count'"),
    "run-count-zero": (unchanged, "run", ("-n", "0"), "count: "),
    "run-unknown-option": (unchanged, "run", ("--bogus",), "--bogus"),
}
RAW_FILES = {  # job files that are broken as text
    "run-yaml-syntax": b"name: x\ncount: [1\n",
    "run-not-utf8": "name: caf\u00e9\ncount: 1\n".encode("latin-1"),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every CLI case, two at a time (one per core)."""
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SYNTH_DEBUG", None)

    def one(case: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        folder = tmp_path_factory.mktemp(case)
        if case in RAW_FILES:
            path, extra, command = folder / f"{case}.yaml", (), "run"
            path.write_bytes(RAW_FILES[case])
        else:
            patch, command, extra, _ = CLI_CASES[case]
            path = job_file(folder, patch)
        args = ["run", str(path), "-q", *extra] if command == "run" else ["spec", "check", str(path)]
        return subprocess.run(
            [sys.executable, "-m", "synth", *args], cwd=folder, env=env, text=True, capture_output=True, timeout=120
        ), folder

    cases = [*CLI_CASES, *RAW_FILES]
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(cases, pool.map(one, cases)))


@pytest.mark.parametrize("case", [*CLI_CASES, *RAW_FILES])
def test_the_cli_refuses_bad_input_in_one_line_exit_2_writing_nothing(
    cli_results: dict[str, tuple[subprocess.CompletedProcess[str], Path]], case: str
) -> None:
    res, folder = cli_results[case]
    field = CLI_CASES[case][3] if case in CLI_CASES else f"{case}.yaml"
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert lines and all(line.startswith("error: ") for line in lines), res.stderr
    assert "Traceback" not in res.stderr and not CLASS_NAMES.search(res.stderr), res.stderr
    assert field in res.stderr, res.stderr
    assert not (folder / "out").exists() and not res.stdout.strip()


# ------------------------------------------------------------ generated text is data, never a path or code


class EchoLLM:
    """Answers every structured request with one given record (the model's side of the wire)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    async def complete(self, request: Any) -> Any:
        from synth.records import Completion

        return Completion(request_id=request.id, text=json.dumps(self.record), parsed=self.record)

    async def embed(self, request: Any) -> Any:
        raise NotImplementedError


@functools.lru_cache(maxsize=1)
def structured_title_generator() -> Any:
    from synth.generators.registry import create_generator

    doc = valid()
    doc["generator"]["schema"] = {"type": "object", "properties": {"title": {"type": "string"}}}
    doc["generator"]["dedup"] = False  # every example answers anew
    job = load_job(doc, check_keys=False)
    return create_generator(job.generator, job)


def hostile(canary: Path) -> Any:
    """Text that would write ``canary`` if it were ever used as a path, a template or a command."""
    return st.sampled_from(
        [
            str(canary),
            f"../../{canary}",
            f"file://{canary}",
            f"$(touch {canary})",
            f"`touch {canary}`",
            f"{{__import__('os').system('touch {canary}')}}",
            f"{{{{ cycler.__init__.__globals__.os.system('touch {canary}') }}}}",
            f"__import__('pathlib').Path('{canary}').touch()",
            f"{{0.__class__}}{canary}",
        ]
    ).flatmap(lambda t: st.tuples(st.just(t), st.text(max_size=5)).map(lambda p: p[1] + t))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_generated_text_is_stored_as_data_never_opened_or_run(tmp_path: Path, data: st.DataObject) -> None:
    import asyncio

    from synth.generators.base import GenContext, Unit

    canary = tmp_path / "canary"
    text = data.draw(hostile(canary))
    gen = structured_title_generator()
    ctx = GenContext(job="fuzz", seed=0, llm=EchoLLM({"title": text}))

    async def one() -> Any:
        await gen.setup(ctx)
        return await gen.generate(Unit(0, "u0", 0, data.draw(st.integers(0, 2**31))), ctx)

    result = asyncio.run(one())
    assert result.rows[0]["record"]["title"] == text  # kept byte for byte
    assert not canary.exists()
