"""A run shows synth's own output only: Ray's logs and warnings go to ``<output>/_logs/``, and to
the terminal too with ``-v``. The runs are subprocesses of ``python -m synth run`` (with their own
embedded Ray, or joining one with ``--address``), their stdout and stderr captured as a terminal
would show them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import synth
from tests.conftest import ENV
from tests.support.runs import ROOT, job_doc, synth_run, write_job

KEYS = [v for k, v in ENV.items() if "KEY" in k and "AWS" not in k]

RAY_CORE = "core_worker.cc"  # the C++ core's line, written straight to fd 2
RAY_DATA_WARNING = "UserWarning: The minimum number of concurrent actors"
# Ray's Python log lines ("<date> <time>\tWARNING file.py:12 -- ...") and worker lines ("(raylet) ...")
RAY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR)\b|\((raylet|pid=)", re.M)


def logs(out: Path) -> list[Path]:
    return sorted((out / "_logs").glob("run-*.log"))


def quiet_job(tmp_path: Path, **extra) -> tuple[Path, Path]:
    # one shard for two workers: Ray Data warns that the pool is larger than its input
    out = tmp_path / "out"
    return write_job(tmp_path / "job.yaml", job_doc("quiet", out, 50, shard=50, **extra)), out


def test_ray_output_goes_to_the_log_and_with_verbose_to_the_terminal_too(ray_address, tmp_path):
    job, out = quiet_job(tmp_path)
    r = synth_run(job, "--executor", "ray", quiet=False)  # its own embedded Ray
    assert r.returncode == 0, r.stderr[-2000:]
    terminal = r.stdout + r.stderr
    assert "synth run: quiet" in r.stderr and "1 written" in r.stderr
    for noise in (RAY_CORE, "UserWarning", "warnings.warn", "(raylet)"):
        assert noise not in terminal, terminal
    assert not RAY_LINE.search(terminal), terminal
    [first] = logs(out)
    assert re.fullmatch(r"run-\d{8}T\d{6}Z\.log", first.name)
    text = first.read_text()
    assert RAY_CORE in text and RAY_DATA_WARNING in text
    assert not any(k in text for k in KEYS)  # the key variables are in Ray's environment, never in its log

    # the log folder is no obstacle to resuming: nothing is left to do, so nothing starts Ray
    again = synth_run(job, "--executor", "ray", quiet=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 written, 1 already committed" in again.stderr
    assert logs(out) == [first]

    # --overwrite replaces the folder, logs included; -v shows Ray's output on the terminal too, and
    # so it does for a run joining a Ray already running
    loud = synth_run(job, "--overwrite", "-v", quiet=False, address=ray_address)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert RAY_CORE in loud.stderr and RAY_DATA_WARNING in loud.stderr
    assert "synth run: quiet" in loud.stderr
    [second] = logs(out)
    assert second != first or second.read_text() != text
    assert RAY_DATA_WARNING in second.read_text()  # Ray's Python warnings and logs are kept in the file too
    assert not any(k in second.read_text() for k in KEYS)


def test_an_error_line_still_reaches_the_terminal(tmp_path):
    job, _ = quiet_job(tmp_path)
    write_job(job, {**json.loads(job.read_text()), "output": {"uri": str(tmp_path / "out"), "shard_size": 0}})
    r = synth_run(job, quiet=False)
    assert r.returncode == 2
    assert re.search(r"^error: .*shard_size", r.stderr, re.M), r.stderr


SCRIPT = r"""
import logging, os, sys, warnings
from synth.engine.quiet import terminal_only_ours

try:
    with terminal_only_ours(sys.argv[1]):
        os.write(2, b"NOISE-FD2\n")
        os.write(1, b"NOISE-FD1\n")
        logging.getLogger("ray").warning("NOISE-RAY-LOGGER")
        logging.getLogger("ray.data.some.part").warning("NOISE-RAY-DATA-LOGGER")
        warnings.warn("NOISE-WARNING")
        print("OURS-STDOUT")
        print("OURS-STDERR", file=sys.stderr)
        logging.getLogger("synth.engine").warning("OURS-SYNTH-LOGGER")
        raise KeyboardInterrupt
except KeyboardInterrupt:
    pass
os.write(2, b"AFTER-FD2\n")
print("AFTER-STDERR", file=sys.stderr)
logging.getLogger("ray").warning("AFTER-RAY-LOGGER")
warnings.warn("AFTER-WARNING")
"""


def test_terminal_only_ours_routes_by_source_and_restores_after_an_interrupt(tmp_path):
    """The context on its own, on real file descriptors (a subprocess: pytest captures its own)."""
    log = tmp_path / "run.log"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    for noise in ("NOISE-FD2", "NOISE-FD1", "NOISE-RAY-LOGGER", "NOISE-RAY-DATA-LOGGER", "NOISE-WARNING"):
        assert noise in text and noise not in r.stdout + r.stderr, noise
    assert "OURS-STDOUT" in r.stdout and "OURS-STDERR" in r.stderr and "OURS-SYNTH-LOGGER" in r.stderr
    # after the interrupt everything writes where it did before
    for after in ("AFTER-FD2", "AFTER-STDERR", "AFTER-RAY-LOGGER", "AFTER-WARNING"):
        assert after in r.stderr and after not in text, after
    assert "OURS" not in text


@pytest.mark.usefixtures("ray_local")
def test_remote_output_gets_the_log_uploaded(s3_bucket, tmp_path, monkeypatch):
    endpoint, bucket = s3_bucket
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the local copy is written
    uri = f"s3://{bucket}/ds"
    doc = job_doc("quiet", uri, 50, shard=50)
    doc["output"]["storage"] = {"endpoint_url": endpoint}
    res = synth.run(doc)
    assert res.complete
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    [name] = fs.ls(f"{bucket}/ds/_logs", detail=False)
    assert re.fullmatch(r"run-\d{8}T\d{6}Z\.log", name.rsplit("/", 1)[1])
    text = fs.cat(name).decode()
    assert text.startswith("# ") and RAY_DATA_WARNING in text
    assert not list(tmp_path.glob("synth-run-*.log"))  # uploaded, then the local copy removed
