"""Defaults files through the command line as users type it: a job that names no providers runs
on the providers, key, limits, cache and output root of the user's and the project's defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import yaml

from tests.support.runs import GENERATOR, KEY_A, error_lines, files_holding, ids_of


def synth(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``synth ARGS`` in ``cwd``, with the user file under ``cwd/../xdg`` (never the real home's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SYNTH_CONFIG")}
    env["XDG_CONFIG_HOME"] = str(cwd.parent / "xdg")
    return subprocess.run(
        [sys.executable, "-m", "synth", *args],
        cwd=cwd,
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=600,
    )


def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A user file (providers, key by variable name, limits, routes, cache, output root), a project
    file (shard size, budget) and a job that names no providers. Returns (working folder, root)."""
    work, root = tmp_path / "work", tmp_path / "root"
    user = {
        "providers": [
            {"name": "bulk", "model": "sim:bulk", "keys": [{"env": "HTTP_KEY_A", "alias": "alpha", "rpm": 60000}]}
        ],
        "routes": {"default": ["bulk"]},
        "cache": {"path": str(tmp_path / "cache")},
        "output": {"root": str(root), "shard_size": 100},
        "budget": {"max_usd": 5},
    }
    (tmp_path / "xdg/synth").mkdir(parents=True)
    (tmp_path / "xdg/synth/config.yaml").write_text(yaml.safe_dump(user))
    work.mkdir()
    (work / "synth.yaml").write_text(yaml.safe_dump({"output": {"shard_size": 25}, "seed": 11}))
    (work / "job.yaml").write_text(yaml.safe_dump({"name": "from-defaults", "count": 50, "generator": GENERATOR}))
    return work, root


def test_defaults_supply_the_providers_of_a_job_that_names_none(tmp_path):
    work, root = setup(tmp_path)
    check = synth(work, "spec", "check", "job.yaml")
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == f"ok: from-defaults: 50 structured units -> {root}/from-defaults"

    r = synth(work, "run", "job.yaml", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    out = root / "from-defaults"
    ids = ids_of(out)
    assert len(ids) == len(set(ids)) == 50
    table = pads.dataset(str(out / "data"), partitioning="hive").to_table(columns=["provider", "key_alias", "shard"])
    assert set(table["provider"].to_pylist()) == {"bulk"} and set(table["key_alias"].to_pylist()) == {"alpha"}
    assert len(set(table["shard"].to_pylist())) == 2  # the project's shard size (25) over the user's (100)
    assert files_holding(out, KEY_A) == [] and files_holding(tmp_path / "cache", KEY_A) == []
    assert not (work / "out").exists()

    # the same job with defaults off: the offline sim:default into ./out, as with no defaults files
    off = synth(work, "spec", "check", "job.yaml", SYNTH_CONFIG="none")
    assert off.stdout.strip() == "ok: from-defaults: 50 structured units -> ./out/from-defaults"

    shown = synth(work, "config", "show", "job.yaml")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1:4] == [
        "#   job: job.yaml",
        f"#   project: {work / 'synth.yaml'}",
        f"#   user: {tmp_path / 'xdg/synth/config.yaml'}",
    ]
    doc = yaml.safe_load(shown.stdout)
    assert doc["providers"][0]["keys"][0]["env"] == "HTTP_KEY_A" and doc["output"]["shard_size"] == 25
    assert KEY_A not in shown.stdout + shown.stderr


def test_a_malformed_defaults_file_stops_every_command_in_one_line(tmp_path):
    work, root = setup(tmp_path)
    bad = work / "synth.yaml"
    bad.write_text("output: {shard_size: 25\nseed: 1\n")
    for args in (("run", "job.yaml", "--quiet"), ("spec", "check", "job.yaml"), ("config", "show")):
        r = synth(work, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert error_lines(r.stderr) == r.stderr.strip().splitlines()
        (line,) = error_lines(r.stderr)
        assert line.startswith(f"error: {bad}: not valid YAML at line "), line
    assert not root.exists() and not (work / "out").exists()

    r = synth(work, "spec", "check", "job.yaml", SYNTH_CONFIG=str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        f"error: SYNTH_CONFIG: '{tmp_path / 'nope.yaml'}' is not a file; point it at a "
        "defaults file, or set SYNTH_CONFIG=none for no defaults"
    ]
