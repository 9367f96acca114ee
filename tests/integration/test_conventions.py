"""Provider conventions (OPENAI_BASE_URL, OPENAI_API_KEY, GEMINI_API_KEY / GOOGLE_API_KEY,
OPENROUTER_API_KEY) and the preflight of every provider's endpoint, through ``python -m synth run``
against the HTTP simulator, and the resolution itself through ``parse_job``'s ``env``."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from synth.errors import ConfigError
from synth.simulator.stats import key_label
from synth.spec import parse_job
from tests.conftest import free_port
from tests.support.runs import GENERATOR, ROOT, env, synth_cmd

SECRET = "sk-conventions-secret-7781"
CONVENTION_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENROUTER_API_KEY")
GEN = GENERATOR


def write_job(tmp_path: Path, count: int = 30) -> tuple[Path, Path]:
    out = tmp_path / "out"
    doc = {
        "name": "conv",
        "count": count,
        "generator": GEN,
        "providers": [{"model": "openai:gpt-4o-mini"}],
        "output": {"uri": str(out), "shard_size": 10},
    }
    f = tmp_path / "job.yaml"
    f.write_text(json.dumps(doc))  # JSON is YAML
    return f, out


def run_cli(job: Path, tmp_path: Path, **given: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -m synth run job --quiet`` (its own embedded Ray: the key variable is in the driver's
    environment only) with only the convention variables given here."""
    base = {k: v for k, v in env().items() if k not in CONVENTION_VARS}
    base["SYNTH_CACHE_DIR"] = str(tmp_path / "cache")  # a fresh cache: every answer comes from the server
    t0 = time.monotonic()
    r = subprocess.run(synth_cmd(job), capture_output=True, text=True, cwd=ROOT, env={**base, **given}, timeout=240)
    return r, time.monotonic() - t0


def holds_secret(root: Path) -> list[str]:
    """Files under ``root`` holding SECRET, in their bytes or in their decoded Parquet values."""
    found = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        text = p.read_bytes()
        if p.suffix == ".parquet":
            text += json.dumps(pq.read_table(p).to_pylist(), default=str).encode()
        if SECRET.encode() in text:
            found.append(str(p))
    return found


# ---------------------------------------------------------------- through the command line


def test_openai_honours_base_url_and_key_variables(simulator, tmp_path):
    job, out = write_job(tmp_path)
    label = key_label(SECRET)
    before = simulator.stats()["by_key"].get(label, {}).get("ok", 0)
    r, _ = run_cli(job, tmp_path, OPENAI_BASE_URL=simulator.openai_url, OPENAI_API_KEY=SECRET)
    assert r.returncode == 0, r.stderr[-2000:]
    table = pq.ParquetDataset(out / "data").read()
    assert table.num_rows == 30 and len(set(table["id"].to_pylist())) == 30
    assert set(table["key_alias"].to_pylist()) == {"OPENAI_API_KEY"}  # the variable's name, not its value
    served = simulator.stats()["by_key"].get(label, {}).get("ok", 0) - before
    assert served >= 30  # the requests went to OPENAI_BASE_URL, with OPENAI_API_KEY
    assert holds_secret(out) == [] and holds_secret(tmp_path / "cache") == []
    assert SECRET not in r.stdout + r.stderr


@pytest.mark.parametrize("where", ["unknown host", "refused"])
def test_unreachable_openai_base_url_fails_fast_in_one_line(where, tmp_path):
    job, out = write_job(tmp_path)
    url = "http://no-such-host.invalid/v1" if where == "unknown host" else f"http://127.0.0.1:{free_port()}/v1"
    ray_tmp = tmp_path / "ray"  # where its embedded Ray would keep its session, were it started
    ray_tmp.mkdir()
    r, wall = run_cli(job, tmp_path, OPENAI_BASE_URL=url, OPENAI_API_KEY=SECRET, RAY_TMPDIR=str(ray_tmp))
    print(f"{where}: exit {r.returncode} after {wall:.2f} s")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: providers[0].base_url (provider 'openai:gpt-4o-mini'): ")
    assert url in lines[0] and where.split()[-1] in lines[0] and "OPENAI_BASE_URL" in lines[0]
    assert list(ray_tmp.iterdir()) == []  # refused by the preflight, before Ray starts
    assert not out.exists()
    assert SECRET not in r.stdout + r.stderr


# ---------------------------------------------------------------- the preflight in-process


def job_with(*providers: dict[str, Any]) -> Any:
    return parse_job({"name": "t", "count": 1, "generator": GEN, "providers": list(providers)}, env={})


def test_preflight_checks_default_endpoints_and_skips_sim(simulator):
    from synth.api import preflight

    preflight(
        job_with(
            {"name": "s", "model": "sim:default"},
            {"name": "o", "model": "openai:gpt-4o-mini", "base_url": simulator.openai_url},
        )
    )
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:  # no internet here: the public hosts do not resolve
        preflight(
            job_with(
                {"name": "s", "model": "sim:default"},
                {"name": "o", "model": "openai:gpt-4o-mini"},
                {"name": "g", "model": "gemini:gemini-2.5-flash"},
                {"name": "r", "model": "openrouter:meta-llama/llama-3.1-8b-instruct"},
            )
        )
    assert time.monotonic() - t0 < 5
    from synth.providers.clients.gemini import DEFAULT_BASE_URL
    from synth.providers.clients.wire import DEFAULT_BASE_URLS

    lines = str(err.value).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        "providers[1] (provider 'o')",
        "providers[2] (provider 'g')",
        "providers[3] (provider 'r')",
    ]
    for line, url in zip(lines, (DEFAULT_BASE_URLS["openai"], DEFAULT_BASE_URL, DEFAULT_BASE_URLS["openrouter"])):
        assert f"cannot connect to {url}: " in line and "set base_url" in line


@pytest.fixture
def hanging_resolver(monkeypatch):
    """A resolver that never answers for ``*.hang.invalid`` (until the test ends), as one does when
    its name server is unreachable."""
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):
        if str(host).endswith(".hang.invalid"):
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    release.set()


def test_a_hanging_resolver_is_bounded_and_providers_are_checked_together(hanging_resolver):
    from synth.api import preflight
    from synth.providers.factory import check_reachable

    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"no answer within 0\.5s"):
        asyncio.run(check_reachable("http://one.hang.invalid/v1", timeout=0.5))
    assert time.monotonic() - t0 < 2  # asyncio.run returned too: nothing waits for the stuck lookup

    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        preflight(
            job_with(
                *({"name": f"p{i}", "model": "compat:m", "base_url": f"http://h{i}.hang.invalid/v1"} for i in range(3))
            ),
            timeout=1.0,
        )
    assert time.monotonic() - t0 < 2.5  # three 1 s checks at once, not one after another
    lines = str(err.value).splitlines()
    assert len(lines) == 3 and all(f"providers[{i}].base_url (provider 'p{i}')" in lines[i] for i in range(3))


# ---------------------------------------------------------------- resolution at load time


def provider(env: dict[str, str], **p: Any) -> Any:
    return parse_job({"name": "t", "count": 1, "generator": GEN, "providers": [p]}, env=env).providers[0]


def test_gemini_key_variables():
    p = provider({"GEMINI_API_KEY": "g1", "GOOGLE_API_KEY": "g2"}, model="gemini:gemini-2.5-flash")
    assert [k.env for k in p.keys] == ["GEMINI_API_KEY"] and p.base_url is None
    p = provider({"GOOGLE_API_KEY": "g2", "GEMINI_API_KEY": ""}, model="gemini:gemini-2.5-flash")
    assert [k.env for k in p.keys] == ["GOOGLE_API_KEY"]
    assert provider({}, model="gemini:gemini-2.5-flash").keys == []


def test_openrouter_key_variable_and_its_own_base_url():
    env = {"OPENROUTER_API_KEY": "r1", "OPENAI_API_KEY": "o1", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    p = provider(env, model="openrouter:meta-llama/llama-3.1-8b-instruct")
    assert [k.env for k in p.keys] == ["OPENROUTER_API_KEY"] and p.base_url is None


def test_openai_variables_and_other_kinds_untouched():
    env = {"OPENAI_API_KEY": "o1", "OPENAI_BASE_URL": " http://127.0.0.1:9/v1 "}
    p = provider(env, model="openai:gpt-4o-mini")
    assert [k.env for k in p.keys] == ["OPENAI_API_KEY"] and p.base_url == "http://127.0.0.1:9/v1"
    for model in ("compat:m", "sim:default"):
        q = provider(env, model=model, base_url="http://127.0.0.1:8/v1")
        assert q.keys == [] and q.base_url == "http://127.0.0.1:8/v1"
    assert provider({"OPENAI_BASE_URL": ""}, model="openai:gpt-4o-mini").base_url is None


def test_what_the_job_says_wins():
    env = {"OPENAI_API_KEY": "o1", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "GEMINI_API_KEY": "g1", "MINE": "m"}
    p = provider(env, model="openai:gpt-4o-mini", keys=[{"env": "MINE"}], base_url="http://127.0.0.1:7/v1")
    assert [k.env for k in p.keys] == ["MINE"] and p.base_url == "http://127.0.0.1:7/v1"
    g = provider(env, model="gemini:gemini-2.5-flash", keys=[{"env": "MINE", "alias": "mine"}])
    assert [k.name for k in g.keys] == ["mine"]


def test_the_spec_holds_variable_names_only():
    env = {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    job = parse_job(
        {"name": "t", "count": 1, "generator": GEN, "providers": [{"model": "openai:gpt-4o-mini"}]}, env=env
    )
    dumped = json.dumps(job.redacted())
    assert "OPENAI_API_KEY" in dumped and SECRET not in dumped and SECRET not in repr(job)
    again = parse_job(job.redacted(), env=env)  # resolving twice (overrides re-parse) changes nothing
    assert again.redacted() == job.redacted()
