"""Keys never leak: a conversation job over two providers (the OpenAI SDK with two keys, Gemini, whose
SDK may put its key in a URL) against a simulator that fails 10 % of calls with 5xx, with one key
revoked mid-run. Afterwards every byte under the output (data, dead letters, manifest, stats,
journal, logs), the response cache, the command's output and the Ray session's whole folder are
scanned for each key's value: none is found."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.runs import env, start_synth, stop, wait_for, write_job
from tests.support.simulator import SimulatorProcess

pytestmark = [pytest.mark.ray]

KEYS = {"HTTP_KEY_A": "alpha", "HTTP_KEY_B": "bravo", "GEM_KEY": "charlie"}


def _holding(root: Path, secrets: list[str]) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and not p.is_socket():
            try:
                data = p.read_bytes()
            except OSError:  # a socket or a file removed while scanning
                continue
            found += [f"{p}: {s[:6]}..." for s in secrets if s.encode() in data]
    return found


def test_no_key_reaches_any_byte_after_a_faulted_run(tmp_path):
    secrets = [os.environ[v] for v in KEYS]
    assert all(len(s) > 12 for s in secrets)
    sim = SimulatorProcess(error_rate=0.1, latency_ms=10, seed=7).start()
    # a short root of its own: Ray's socket paths must stay under 107 bytes
    ray_tmp = Path(tempfile.mkdtemp(prefix="sr", dir="/tmp"))
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    doc = {
        "name": "secrets",
        "count": 60,
        "seed": 3,
        "generator": {
            "kind": "conversation",
            "model": "oa",
            "instructions": {"kind": "list", "items": ["Plan a trip.", "Explain compound interest.", "Cook rice."]},
            "turns": {"min": 2, "max": 3},
            "correspondent": {"model": "gem"},
        },
        "providers": [
            {
                "name": "oa",
                "model": "compat:gpt-4o-mini",
                "client": "sdk",
                "base_url": sim.openai_url,
                "keys": [{"env": "HTTP_KEY_A", "alias": "alpha"}, {"env": "HTTP_KEY_B", "alias": "bravo"}],
            },
            {
                "name": "gem",
                "model": "gemini:gemini-2.5-flash",
                "base_url": sim.url + "/v1beta",
                "keys": [{"env": "GEM_KEY", "alias": "charlie"}],
            },
        ],
        "output": {"uri": str(out), "shard_size": 20},
        "cache": {"path": str(cache)},
    }
    job = write_job(tmp_path / "secrets.yaml", doc)
    # on an embedded Ray: its session folder, logs and job metadata are scanned too
    p = start_synth(job, "-v", "--executor", "ray", environ=env(RAY_TMPDIR=str(ray_tmp)))
    try:
        wait_for(lambda: any((out / "_manifest" / "commits").glob("*.json")), 300, "the first commit", p)
        sim.set_keys({os.environ["HTTP_KEY_B"]: {"revoked": True}})  # revoked mid-run
        stdout, err = p.communicate(timeout=600)
        code = p.returncode
        seen = sim.stats(window=3600)
    finally:
        stop(p)
        sim.stop()
    try:
        assert code in (0, 6), err[-3000:]  # complete; 5xx that outlast retries may leave a few dead letters
        statuses = {str(k) for k in seen.get("by_status", {})}
        assert {"401"} <= statuses and statuses & {"500", "503"}, seen.get("by_status")  # the faults happened
        assert (out / "stats.json").exists() and list((out / "data").rglob("*.parquet"))
        assert list(cache.rglob("*.jsonl")), "nothing was journaled: the scan would prove little"
        sessions = list(ray_tmp.rglob("session_*"))
        assert sessions, "the run's Ray kept no session folder under RAY_TMPDIR"
        control = out / "_logs" / "control.txt"  # the scan finds a key where one is
        control.parent.mkdir(exist_ok=True)
        control.write_bytes(b"x" + secrets[2].encode() + b"y")
        assert len(_holding(out, secrets)) == 1
        control.unlink()
        leaks = _holding(out, secrets) + _holding(cache, secrets) + _holding(ray_tmp, secrets)
        leaks += [f"command output: {s[:6]}..." for s in secrets if s in stdout + err]
        assert leaks == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
