"""A provider plugin as a third party ships it: a package of its own (tests/data/plugin_pkg) declaring
``[project.entry-points."synth.providers"]``, installed with pip into a folder on PYTHONPATH, and a
``synth run`` (embedded Ray: its workers and gateways see the same PYTHONPATH) that makes records
through it end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.support.runs import ROOT, env, error_lines, stats_of, synth_run, write_job

PACKAGE = ROOT / "tests" / "data" / "plugin_pkg"
QUESTIONS = ["What is a stoat?", "Name three rivers.", "Why is the sky blue?"]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
        + [str(PACKAGE)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "synth_echo_provider-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def job(out: Path, model: str = "echo:mirror-1") -> dict:
    return {
        "name": "plugin",
        "count": 12,
        "generator": {"kind": "conversation", "instructions": QUESTIONS, "turns": {"min": 1, "max": 1}},
        "providers": [{"name": "echoes", "model": model, "params": {"prefix": "> "}}],
        "output": {"uri": str(out), "shard_size": 4},
    }


def test_a_job_runs_through_an_installed_provider_plugin(plugin_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = synth_run(write_job(tmp_path / "job.yaml", job(out)), environ=env(PYTHONPATH=str(plugin_path)))
    assert p.returncode == 0, p.stderr[-2000:]
    t = pads.dataset(str(out / "data"), partitioning="hive").to_table()
    assert t.num_rows == 12 == len(set(t["id"].to_pylist()))
    for row in t.to_pylist():  # the plugin's answers: the question reversed, after its configured prefix
        user, answer = row["messages"][-2]["content"], row["messages"][-1]["content"]
        assert user in QUESTIONS and answer == "> " + user[::-1]
    assert set(t["provider"].to_pylist()) == {"echoes"} and set(t["model"].to_pylist()) == {"mirror-1"}
    assert set(t["route"].to_pylist()) == {"default"}
    assert stats_of(out)["records"] == 12


def test_without_the_plugin_the_kind_is_refused_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = synth_run(write_job(tmp_path / "job.yaml", job(out)))
    assert p.returncode == 2
    assert error_lines(p.stderr) == [
        "error: providers[0].model: unknown provider prefix 'echo' in 'echo:mirror-1'; use one of: compat, "
        "gemini, openai, openrouter, sim, or 'package.module:Class:model'"
    ]
    assert not out.exists()
