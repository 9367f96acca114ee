"""`synth init`: every starter passes `synth spec check` from any folder, one runs end to end on the
offline sim, an existing file is never replaced without --force, and the templates ship as package
data."""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from synth.starter import KINDS
from tests.support.runs import ROOT, env, error_lines


def synth(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synth", *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_starter_passes_spec_check(kind, tmp_path):
    made = synth("init", kind, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert f"next: synth run {kind}.yaml" in made.stdout
    job = tmp_path / f"{kind}.yaml"
    assert "# " in job.read_text() and "providers:" in job.read_text()  # commented, with the real-model block
    checked = synth("spec", "check", job.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok: ")


def test_rag_starter_written_into_another_folder_finds_its_documents(tmp_path):
    (tmp_path / "jobs").mkdir()
    made = synth("init", "rag", "jobs/qa.yaml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (tmp_path / "jobs" / "qa-docs").iterdir()) == [
        "bicycles.md",
        "composting.txt",
        "sourdough.md",
        "telescopes.md",
    ]
    assert synth("spec", "check", "jobs/qa.yaml", cwd=tmp_path).returncode == 0
    # from outside the working folder the documents are named by their absolute path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    made = synth("init", "rag", str(tmp_path / "jobs" / "other.yaml"), cwd=elsewhere)
    assert made.returncode == 0, made.stderr
    assert str(tmp_path / "jobs" / "other-docs") in (tmp_path / "jobs" / "other.yaml").read_text()
    assert synth("spec", "check", str(tmp_path / "jobs" / "other.yaml"), cwd=ROOT).returncode == 0


def test_existing_file_is_refused_without_force(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("mine\n")
    refused = synth("init", "events", "job.yaml", cwd=tmp_path)
    assert refused.returncode == 2
    assert len(error_lines(refused.stderr)) == 1 and "--force" in refused.stderr
    assert job.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]
    forced = synth("init", "events", "job.yaml", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "kind: events" in job.read_text()


def test_bad_kind_is_one_line(tmp_path):
    r = synth("init", "tabular", cwd=tmp_path)
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1 and "structured" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_shows_an_example(tmp_path):
    r = synth("init", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "Example: synth init" in " ".join(r.stdout.split())


def test_templates_ship_as_package_data():
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1]
    patterns = ast.literal_eval(re.search(r"^synth = (\[.*\])$", section, re.M).group(1))
    shipped = [
        p.relative_to(ROOT / "synth").as_posix() for p in (ROOT / "synth" / "starters").rglob("*") if p.is_file()
    ]
    assert shipped and [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []


def test_structured_starter_runs_end_to_end(tmp_path):
    assert synth("init", cwd=tmp_path).returncode == 0  # the default kind: structured
    out = tmp_path / "out"
    r = synth("run", "structured.yaml", "-n", "20", "-o", str(out), "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = pads.dataset(str(out / "data"), partitioning="hive").to_table()
    assert table.num_rows == 20 and len(set(table["id"].to_pylist())) == 20
    record = table["record"][0].as_py()
    assert {"name", "price", "tags", "in_stock", "description"} <= set(record)
