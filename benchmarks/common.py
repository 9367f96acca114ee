"""What the engine benchmarks share: the simulator in a subprocess, a whole ``synth run`` in a
subprocess, a sampler of CPU and memory over a process tree, steady-state windows, a table and a plot.

Everything is measured from outside the processes it measures: CPU and memory with psutil over
the ``synth run`` process and all its descendants (the Ray services and workers), rates from the
simulator's own counters (``/_sim/stats``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
PYTHON = sys.executable

# every process of a run needs these (see the field notes); RAY_ADDRESS is dropped so that each
# run starts its own embedded Ray instead of joining whatever cluster the shell points at
RUN_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "AWS_EC2_METADATA_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RUN_ENV)
    env.update(extra or {})
    return env


def command_line() -> str:
    """The command that started this benchmark, for the header of its report."""
    return " ".join(
        shlex.quote(a) for a in [os.path.relpath(PYTHON, ROOT) if PYTHON.startswith(str(ROOT)) else PYTHON, *sys.argv]
    )


def header(title: str) -> None:
    cpus = psutil.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"# {title}\n# command: {command_line()}\n# machine: {cpus} CPUs, load average {load}, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM\n",
        flush=True,
    )


# ---------------------------------------------------------------- the simulator


class Simulator:
    """``python -m synth.simulator serve`` in its own process, stopped by its PID."""

    def __init__(self, **options: Any) -> None:
        args: list[str] = []
        for k, v in options.items():
            if v is not None:
                args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "synth.simulator", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=run_env(),
        )
        line: list[str] = []
        out = self.proc.stdout
        assert out is not None
        reader = threading.Thread(target=lambda: line.append(out.readline()), daemon=True)
        reader.start()
        reader.join(30)
        if not line or not line[0].startswith("http"):
            self.stop()
            raise SystemExit("the simulator did not start within 30 s")
        self.url = line[0].strip()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        req = urllib.request.Request(
            f"{self.url}/_sim/reset",
            data=b'{"config": false, "keys": false}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=10).read()

    def cpu_s(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- sampling a process tree


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    cpu_s: float  # user + system CPU seconds of every process seen so far (exited ones at their last value)
    rss: int  # bytes, summed over the live processes
    pss: int  # proportional set size: shared pages divided among the processes sharing them
    procs: int
    probe: dict[str, Any] = field(default_factory=dict)
    by_process: dict[str, float] = field(default_factory=dict)  # CPU seconds by kind of process


class TreeSampler:
    """Samples a process and all its descendants every ``interval`` seconds in a thread.

    CPU of a process that exits is kept at its last sampled value, so up to one interval of each
    short-lived process is missed. ``probe`` (e.g. the simulator's stats) is called on each tick."""

    def __init__(
        self,
        root: int,
        interval: float = 0.5,
        probe: Callable[[], dict[str, Any]] | None = None,
        exclude: Sequence[int] = (),
    ) -> None:
        self.root = root
        self.interval = interval
        self.probe = probe
        self.exclude = set(exclude)
        self.samples: list[Sample] = []
        self._procs: dict[int, psutil.Process] = {}
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> last CPU seconds
        self._label: dict[tuple[int, float], str] = {}  # what the process was last seen doing
        self._by: dict[str, float] = {}  # CPU seconds by what the process was doing when it spent them
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)
        self.start = time.monotonic()

    def __enter__(self) -> TreeSampler:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.tick()

    def _tree(self) -> list[psutil.Process]:
        try:
            root = self._procs.get(self.root) or psutil.Process(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        out = []
        for p in procs:
            if p.pid in self.exclude:
                continue
            known = self._procs.get(p.pid)
            if known is None or known.create_time() != p.create_time():
                self._procs[p.pid] = known = p
            out.append(known)
        return out

    def tick(self) -> Sample:
        rss = pss = n = 0
        # PSS reads every mapping of every process (/proc/PID/smaps): tens of ms per Ray worker.
        # Taken on every 8th tick only, so the sampler does not slow the run it measures.
        full = len(self.samples) % 8 == 0
        for p in self._tree():
            try:
                with p.oneshot():
                    c = p.cpu_times()
                    mem = p.memory_full_info() if full else p.memory_info()
                    key = (p.pid, p.create_time())
                    label = _label(p)
            except psutil.Error:
                continue
            cpu = c.user + c.system
            # a pooled Ray worker changes title with each task: charge the CPU to what it is doing
            # now, or to what it did last when it is idle again
            if label != "ray::IDLE" or key not in self._label:
                self._label[key] = label
            label = self._label[key]
            self._by[label] = self._by.get(label, 0.0) + cpu - self._cpu.get(key, 0.0)
            self._cpu[key] = cpu
            rss += mem.rss
            pss += getattr(mem, "pss", 0)
            n += 1
        probe: dict[str, Any] = {}
        if self.probe is not None:
            try:
                probe = self.probe()
            except Exception:  # noqa: BLE001 - a missed probe leaves a gap, not a failed run
                probe = {}
        s = Sample(time.monotonic() - self.start, sum(self._cpu.values()), rss, pss, n, probe, self.cpu_by_process())
        self.samples.append(s)
        return s

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds by kind of process (Ray actors by class, services by program name)."""
        return dict(sorted(self._by.items(), key=lambda kv: -kv[1]))

    @property
    def peak_rss(self) -> int:
        return max((s.rss for s in self.samples), default=0)

    @property
    def peak_pss(self) -> int:
        return max((s.pss for s in self.samples), default=0)

    @property
    def cpu_s(self) -> float:
        return self.samples[-1].cpu_s if self.samples else 0.0


def _label(p: psutil.Process) -> str:
    cmd = p.cmdline()
    if not cmd:
        return p.name()
    if cmd[0].startswith("ray::"):
        return cmd[0].split()[0].split(".")[0]  # ray::Actor.method -> ray::Actor
    prog = os.path.basename(cmd[0])
    if prog.startswith("python"):
        if "-m" in cmd[:-1]:
            return f"python -m {cmd[cmd.index('-m') + 1]}"
        script = next((a for a in cmd[1:] if not a.startswith("-")), "")
        return f"python {os.path.basename(script)}"
    return prog


def at(samples: Sequence[Sample], t: float, value: Callable[[Sample], float]) -> float:
    """``value`` linearly interpolated at time ``t`` between the samples around it."""
    prev = samples[0]
    for s in samples:
        if s.t >= t:
            if s.t == prev.t:
                return value(s)
            w = (t - prev.t) / (s.t - prev.t)
            return value(prev) + w * (value(s) - value(prev))
        prev = s
    return value(samples[-1])


def steady_window(
    samples: Sequence[Sample], total: int, warmup_s: float = 3.0, tail_s: float = 2.0
) -> tuple[float, float] | None:
    """(start, end) of the steady state: from ``warmup_s`` after the first answer until
    ``tail_s`` before the last one (``total`` answers), judged by the simulator's ``ok`` count."""
    oks = [s for s in samples if "ok" in s.probe]
    first = next((s.t for s in oks if s.probe["ok"] > 0), None)
    last = next((s.t for s in oks if s.probe["ok"] >= total), oks[-1].t if oks else None)
    if first is None or last is None:
        return None
    start, end = first + warmup_s, last - tail_s
    return (start, end) if end - start >= 1.0 else None


def ok_of(s: Sample) -> float:
    return float(s.probe.get("ok", 0))


# ---------------------------------------------------------------- a whole run


@dataclass
class RunOutcome:
    returncode: int
    wall_s: float
    samples: list[Sample]
    stderr: str
    stats: dict[str, Any]  # the run's stats.json
    peak_rss: int
    peak_pss: int
    cpu_s: float
    cpu_by_process: dict[str, float]


def write_job(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def synth_run(
    job_file: Path,
    output: Path,
    *,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    interval: float = 0.5,
    probe: Callable[[], dict[str, Any]] | None = None,
    timeout_s: float = 7200,
) -> RunOutcome:
    """``python -m synth run JOB -o OUTPUT --overwrite -q [ARGS]`` in a subprocess, its process tree sampled."""
    # no response cache: a benchmark measures buying answers (the job's journal is still written)
    cmd = [PYTHON, "-m", "synth", "run", str(job_file), "-o", str(output), "--overwrite", "-q", "--no-cache", *args]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=run_env(env), cwd=ROOT
    )
    err: list[str] = []
    drain = threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else ""), daemon=True)
    drain.start()
    sampler = TreeSampler(proc.pid, interval=interval, probe=probe)
    with sampler:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(30)
    wall = time.monotonic() - start
    drain.join(10)
    stats_file = output / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    return RunOutcome(
        proc.returncode,
        wall,
        sampler.samples,
        "".join(err),
        stats,
        sampler.peak_rss,
        sampler.peak_pss,
        sampler.cpu_s,
        sampler.cpu_by_process(),
    )


def check(outcome: RunOutcome, what: str) -> None:
    if outcome.returncode != 0 or not outcome.stats.get("complete"):
        tail = "\n".join(outcome.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"{what}: synth run failed (exit {outcome.returncode}):\n{tail}")


# ---------------------------------------------------------------- output


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def plot_rate(
    samples: Sequence[Sample], ceiling: float, window: tuple[float, float] | None, path: Path, title: str
) -> Path | None:
    """Achieved answers/s over time (from the simulator's counters) against the ceiling, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = [s for s in samples if "ok" in s.probe]
    if len(pts) < 3:
        return None
    ts, rates, r429 = [], [], []
    span = 2.0  # seconds each plotted rate averages over
    j = 0
    for s in pts:
        while pts[j].t < s.t - span:
            j += 1
        if s.t - pts[j].t > 0:
            ts.append(s.t)
            rates.append((ok_of(s) - ok_of(pts[j])) / (s.t - pts[j].t))
            r429.append((s.probe.get("rate_limited", 0) - pts[j].probe.get("rate_limited", 0)) / (s.t - pts[j].t))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(ts, rates, label="answers/s (2 s average)")
    ax.plot(ts, r429, label="429s/s", color="tab:red", linewidth=0.8)
    ax.axhline(ceiling, color="black", linestyle="--", label=f"ceiling {ceiling:g}/s")
    if window:
        ax.axvspan(*window, color="tab:green", alpha=0.08, label="steady window")
    ax.set_xlabel("seconds since `synth run` started")
    ax.set_ylabel("per second")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
