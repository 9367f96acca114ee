"""Run the LLM API simulator as a subprocess for tests, and drive its admin API.

    sim = SimulatorProcess(rpm=600, latency_ms=20).start()
    client = AsyncOpenAI(base_url=sim.openai_url, api_key="sk-test", max_retries=0)
    sim.configure(error_rate=0.5)      # POST /_sim/config
    sim.set_keys({"sk-slow": {"rpm": 6}})
    sim.stats()["by_status"]           # GET /_sim/stats
    sim.reset()                        # zero stats and buckets (config=True: back to start options)
    sim.stop()

A session fixture starts one process and resets it between tests::

    @pytest.fixture(scope="session")
    def sim_process():
        sim = SimulatorProcess().start()
        yield sim
        sim.stop()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

START_TIMEOUT_S = 30.0


def admin(url: str, path: str, payload: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
    """Call ``/_sim/<path>`` on a simulator at ``url``: GET without ``payload``, POST with it."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(
        f"{url}/_sim/{path.lstrip('/')}",
        data=data,
        method="GET" if data is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"simulator admin {path} failed: {e.code} {e.read().decode(errors='replace')}") from None


def _cli_args(options: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, (list, tuple, set)):
            value = ",".join(map(str, value))
        args += [flag, str(value)]
    return args


class SimulatorProcess:
    """A ``python -m synth.simulator serve`` subprocess, stopped by its PID.

    ``SimulatorProcess(rpm=60).start()`` or ``SimulatorProcess().start(rpm=60)``: options are
    ``synth sim serve`` options as keywords (``revoked=["k1", "k2"]`` becomes ``--revoked k1,k2``)."""

    def __init__(self, **cli_options: Any) -> None:
        self.options = cli_options
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._stderr: list[str] = []

    @property
    def openai_url(self) -> str:
        """The ``base_url`` for ``openai.AsyncOpenAI``."""
        return self.url + "/v1"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, **cli_options: Any) -> SimulatorProcess:
        """Start the process and read its URL (the first line of its stdout); returns ``self``."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"simulator already running at {self.url}")
        options = {"port": 0, **self.options, **cli_options}
        cmd = [sys.executable, "-m", "synth.simulator", "serve", *_cli_args(options)]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""), daemon=True
        )
        reader.start()
        reader.join(START_TIMEOUT_S)
        url = line[0].strip() if line else ""
        if not url.startswith("http"):
            proc.kill()
            proc.wait()
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"simulator did not start ({' '.join(cmd[1:])}): {err.strip()[-2000:]}")
        self.proc, self.url, self._stderr = proc, url, []
        # drain stderr so a chatty server never blocks on a full pipe
        threading.Thread(target=self._read_stderr, args=(proc,), daemon=True).start()
        return self

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        if proc.stderr:
            for line in proc.stderr:
                self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def stats(self, window: float = 10.0) -> dict[str, Any]:
        return admin(self.url, f"stats?window={window}")  # type: ignore[no-any-return]

    def config(self) -> dict[str, Any]:
        return admin(self.url, "config")  # type: ignore[no-any-return]

    def configure(self, **cfg: Any) -> dict[str, Any]:
        """Patch the global config (rpm, tpm, concurrency, latency_ms, error_rate, ...)."""
        return admin(self.url, "config", cfg)  # type: ignore[no-any-return]

    def set_keys(self, overrides: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
        """Per-key overrides: ``{"k": {"rpm": 6, "revoked": True}}``; ``None`` removes one."""
        return admin(self.url, "keys", overrides)  # type: ignore[no-any-return]

    def reset(self, *, config: bool = False, keys: bool = False) -> None:
        """Zero stats and buckets; ``config=True`` restores the start options, ``keys=True`` drops
        per-key overrides."""
        admin(self.url, "reset", {"config": config, "keys": keys})

    def restore(self) -> None:
        """Everything back to how it started: stats, buckets, config and key overrides."""
        self.reset(config=True, keys=True)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> SimulatorProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimulatorProcess(url={self.url!r}, pid={self.pid})"
