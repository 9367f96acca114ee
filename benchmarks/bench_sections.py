"""Sections 1 to 4 of ``synth bench``: ceiling efficiency by number of keys, latency and Little's law,
overhead against the one-process asyncio baseline, and time to the first request.

Each section is a function of (options) returning a :class:`Section`: rows for the table, the
targets it checks, and its raw numbers for the JSON file. Rates come from the simulator's counters,
CPU from psutil over the run's process tree (see common.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from common import OUT, RunOutcome, Simulator, check, ok_of, synth_run, write_job
from throughput import KEYS, baseline_run, job_doc, window_numbers

# up to 16 keys for the ceiling section; the first four are throughput.py's
MANY_KEYS = {f"SIM_KEY_{i}": f"sk-bench-{i}" for i in range(1, 17)}


@dataclass
class Section:
    number: int
    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)  # {what, value, target, met}
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def target(self, what: str, value: float, target: str, met: bool, fmt: str = "{:.3f}") -> None:
        self.targets.append({"what": what, "value": fmt.format(value), "target": target, "met": met})


def executor_of(run: RunOutcome) -> str:
    """Which executor a run used, from what ran: a raylet in its process tree means Ray."""
    return "ray" if any("raylet" in k for k in run.cpu_by_process) else "local"


def rate_run(
    sim: Simulator, name: str, count: int, keys: list[dict[str, Any]], args: list[str] | None = None, **job: Any
) -> tuple[RunOutcome, dict[str, Any]]:
    """One ``synth run`` against ``sim`` with its tree and the simulator's counters sampled."""
    doc = job_doc(name, count, sim.url, keys, **job)
    job_file = write_job(doc, OUT / "bench" / f"{name}.yaml")
    sim.reset()
    run = synth_run(
        job_file, OUT / "bench" / f"{name}-data", args=args or [], env=MANY_KEYS, probe=sim.stats, interval=0.25
    )
    check(run, name)
    return run, sim.stats()


# ---------------------------------------------------------------- 1. ceiling efficiency by keys


def ceiling_by_keys(quick: bool, rpm: float = 600, latency_ms: float = 300) -> Section:
    sec = Section(
        1,
        f"Ceiling efficiency by number of keys ({rpm:g} RPM per key, {latency_ms:g} ms latency)",
        [
            "keys",
            "ceiling/s",
            "records",
            "steady achieved/s",
            "steady / ceiling",
            "end to end / ceiling",
            "429 share",
            "executor",
        ],
    )
    seconds = 5.0 if quick else 16.0
    points = []
    with Simulator(rpm=rpm, ttft_ms=latency_ms, tpot_ms=0) as sim:
        for n in (2,) if quick else (1, 2, 4, 8, 16):
            ceiling = n * rpm / 60
            count = int(ceiling * (seconds + 5))
            keys = [{"env": k, "rpm": rpm} for k in list(MANY_KEYS)[:n]]
            run, final = rate_run(sim, f"ceiling-{n}", count, keys, shard_size=max(50, count // 8))
            win = window_numbers(run.samples, count) or {}
            steady = win.get("rate", 0.0) / ceiling
            e2e = final["ok"] / run.wall_s / ceiling
            share = final["rate_limited"] / max(final["requests"], 1)
            points.append(
                {
                    "keys": n,
                    "ceiling": ceiling,
                    "count": count,
                    "wall_s": run.wall_s,
                    "steady": steady,
                    "end_to_end": e2e,
                    "share_429": share,
                    "window": win,
                    "executor": executor_of(run),
                }
            )
            sec.rows.append(
                [
                    n,
                    f"{ceiling:g}",
                    f"{count:,}",
                    f"{win.get('rate', 0):.2f}",
                    f"{steady:.3f}",
                    f"{e2e:.3f}",
                    f"{100 * share:.2f} %",
                    executor_of(run),
                ]
            )
            sec.target(f"{n} keys: steady / ceiling", steady, ">= 0.97", steady >= 0.97)
            sec.target(f"{n} keys: 429 share", 100 * share, "<= 0.5 %", share <= 0.005, "{:.2f} %")
    sec.notes.append(
        "steady: from 3 s after the first answer to 2 s before the last (the simulator's counters); "
        "end to end: answers / wall time of `synth run` (process start to exit) / ceiling."
    )
    sec.data = {"rpm_per_key": rpm, "latency_ms": latency_ms, "points": points}
    return sec


# ---------------------------------------------------------------- 2. latency and Little's law


def latency(quick: bool, keys: int = 4, rpm: float = 1200, shard_size: int | None = None) -> Section:
    ceiling = keys * rpm / 60
    sec = Section(
        2,
        f"Latency at a fixed ceiling ({keys} keys x {rpm:g} RPM = {ceiling:g}/s)",
        [
            "latency",
            "records",
            "steady / ceiling",
            "end to end / ceiling",
            "in flight at the simulator",
            "Little's law (rate x latency)",
            "in flight / Little",
        ],
    )
    seconds = 5.0 if quick else 16.0
    points = []
    with Simulator(rpm=rpm, ttft_ms=50, tpot_ms=0) as sim:
        for lat in (0.05,) if quick else (0.05, 0.5, 5.0):
            sim_config(sim, {"ttft_ms": lat * 1000})
            count = int(ceiling * (seconds + 5 + lat))
            key_list = [{"env": k, "rpm": rpm} for k in list(MANY_KEYS)[:keys]]
            shards = shard_size or max(50, count // 8)
            run, final = rate_run(sim, f"latency-{lat:g}", count, key_list, shard_size=shards)
            win = window_numbers(run.samples, count) or {}
            steady = win.get("rate", 0.0) / ceiling
            little = win.get("rate", 0.0) * lat
            held = win.get("sim_in_flight") or 0.0
            points.append(
                {
                    "latency_s": lat,
                    "count": count,
                    "steady": steady,
                    "end_to_end": final["ok"] / run.wall_s / ceiling,
                    "in_flight": held,
                    "little": little,
                    "wall_s": run.wall_s,
                    "window": win,
                }
            )
            sec.rows.append(
                [
                    f"{lat * 1000:g} ms",
                    f"{count:,}",
                    f"{steady:.3f}",
                    f"{points[-1]['end_to_end']:.3f}",
                    f"{held:.1f}",
                    f"{little:.1f}",
                    f"{held / little:.2f}" if little else "-",
                ]
            )
            if lat >= 5:
                sec.target("5 s latency: steady / ceiling", steady, ">= 0.95", steady >= 0.95)
    sec.notes.append(
        "in flight: requests open at the simulator, mean over the steady window; Little's law: "
        "achieved rate x latency is what must be open to sustain that rate."
    )
    sec.notes.append(f"shards of {shard_size or 'count / 8'} units (--latency-shard-size).")
    sec.data = {"ceiling": ceiling, "points": points, "shard_size": shard_size}
    return sec


def sim_config(sim: Simulator, body: dict[str, Any]) -> None:
    import json
    import urllib.request

    req = urllib.request.Request(
        f"{sim.url}/_sim/config",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=10).read()


# ---------------------------------------------------------------- 3. overhead against the baseline


def synth_unlimited(sim: Simulator, name: str, count: int, in_flight: int, executor: str | None) -> dict[str, Any]:
    keys = [{"env": k, "max_concurrency": in_flight // len(KEYS)} for k in KEYS]
    cpu0 = sim.cpu_s()
    run, _ = rate_run(
        sim,
        name,
        count,
        keys,
        ["--executor", executor] if executor else [],
        shard_size=min(10_000, max(1000, count // 10)),
    )
    first = next((s.t for s in run.samples if ok_of(s) > 0), 0.0)
    return {
        "wall_s": run.wall_s,
        "records_per_s": count / run.wall_s,
        "cpu_s": run.cpu_s,
        "cpu_per_1k": 1000 * run.cpu_s / count,
        "first_answer_s": first,
        "executor": executor_of(run),
        "window": window_numbers(run.samples, count),
        "peak_rss": run.peak_rss,
        "cpu_by_process": run.cpu_by_process,
        "sim_cpu_per_1k": 1000 * (sim.cpu_s() - cpu0) / count,
    }


def overhead(quick: bool, sizes: list[int], in_flight: int = 512) -> Section:
    sec = Section(
        3,
        f"Overhead against a one-process asyncio + aiohttp loop (unlimited simulator, 100 ms, {in_flight} in flight)",
        ["records", "run", "records/s end to end", "x baseline", "CPU s / 1k records", "first answer s", "wall s"],
    )
    points = []
    with Simulator(ttft_ms=100, tpot_ms=0) as sim:
        for count in sizes:
            cpu0 = sim.cpu_s()
            base = baseline_run(sim, count, in_flight)
            base.update(
                records_per_s=count / base["wall_s"],
                cpu_per_1k=1000 * base["cpu_s"] / count,
                sim_cpu_per_1k=1000 * (sim.cpu_s() - cpu0) / count,
            )
            # the loop as most write it; about 8x slower than the others: --quick leaves it out
            sdk: dict[str, Any] = {"skipped": True}
            if not quick:
                sdk = baseline_run(sim, count, in_flight, "openai")
                sdk.update(records_per_s=count / sdk["wall_s"], cpu_per_1k=1000 * sdk["cpu_s"] / count)
            runs = {"baseline": base, "baseline, openai SDK": sdk}
            runs["synth (auto)"] = auto = synth_unlimited(sim, f"overhead-{count}-auto", count, in_flight, None)
            other = "ray" if auto["executor"] == "local" else "local"
            # --quick keeps to a minute: the other executor's run (a Ray start-up, at this size) waits
            runs[f"synth --executor {other}"] = (
                {"skipped": True}
                if quick
                else synth_unlimited(sim, f"overhead-{count}-{other}", count, in_flight, other)
            )
            runs[f"synth --executor {auto['executor']}"] = {**auto, "same_as": "synth (auto)"}
            names = (
                "baseline",
                "baseline, openai SDK",
                "synth (auto)",
                "synth --executor local",
                "synth --executor ray",
            )
            for name in names:
                r = runs[name]
                if r.get("skipped"):
                    sec.rows.append([f"{count:,}", name, "skipped (--quick)", "-", "-", "-", "-"])
                    continue
                label = (
                    name
                    + (f" = {auto['executor']}" if name == "synth (auto)" else "")
                    + (" (the auto run)" if r.get("same_as") else "")
                )
                sec.rows.append(
                    [
                        f"{count:,}",
                        label,
                        f"{r['records_per_s']:,.0f}",
                        f"{r['records_per_s'] / base['records_per_s']:.2f}x",
                        f"{r['cpu_per_1k']:.3f}",
                        f"{r.get('first_answer_s', 0):.1f}" if not name.startswith("baseline") else "-",
                        f"{r['wall_s']:.1f}",
                    ]
                )
            points.append({"records": count, "runs": runs})
            for label, ref in (("aiohttp loop", base), ("openai-SDK loop", sdk)):
                if ref.get("skipped"):
                    continue
                ratio = auto["records_per_s"] / ref["records_per_s"]
                want = 1.0 if count <= 10_000 else 2.0
                sec.target(
                    f"{count:,}: synth (auto) / {label}",
                    ratio,
                    f">= {want:.1f}" + (" on 2 cores" if want > 1 else ""),
                    ratio >= want,
                    "{:.2f}x",
                )
            if count > 10_000:
                sec.target(
                    f"{count:,}: synth (auto) CPU s / 1k records",
                    auto["cpu_per_1k"],
                    "<= 0.35",
                    auto["cpu_per_1k"] <= 0.35,
                )
    sec.notes.append(
        "end to end: records / wall time from process start to exit, start-up included; CPU over every "
        "process of the run (not the simulator); the baselines keep rows in a list and write one Parquet file: one over raw HTTP (aiohttp), one over the openai SDK (max_retries 6), each one asyncio process."
    )
    for p in points:
        for name, r in p["runs"].items():
            if not name.startswith("baseline") and not r.get("same_as") and not r.get("skipped"):
                top = ", ".join(
                    f"{k} {1000 * v / p['records']:.3f}" for k, v in list(r["cpu_by_process"].items())[:5] if v > 0
                )
                sec.notes.append(f"CPU s / 1k records by process, {p['records']:,} {name}: {top}")
    sec.data = {"in_flight": in_flight, "points": points}
    return sec


# ---------------------------------------------------------------- 4. time to first request


def first_request(quick: bool, count: int = 200) -> Section:
    sec = Section(
        4,
        f"Time to first request ({count}-record job, 100 ms latency)",
        ["executor", "process start -> first request at the simulator (s)", "wall s"],
    )
    repeat = 1 if quick else 2
    points: dict[str, list[dict[str, float]]] = {}
    with Simulator(ttft_ms=100, tpot_ms=0) as sim:
        keys = [{"env": k} for k in KEYS]
        for executor in (None,) if quick else (None, "ray"):
            name = "default" if executor is None else executor
            for _ in range(repeat if executor is None else 1):
                doc = job_doc(f"first-{name}", count, sim.url, keys, shard_size=100)
                job_file = write_job(doc, OUT / "bench" / f"first-{name}.yaml")
                sim.reset()
                t0 = time.time()
                run = synth_run(
                    job_file,
                    OUT / "bench" / f"first-{name}-data",
                    env=MANY_KEYS,
                    args=["--executor", executor] if executor else [],
                )
                check(run, f"first request ({name})")
                first = sim.stats().get("first_request_at")
                points.setdefault(name, []).append(
                    {
                        "ttfr_s": (first - t0) if first else float("nan"),
                        "wall_s": run.wall_s,
                        "executor": executor_of(run),
                    }
                )
        for name, runs in points.items():
            best = min(r["ttfr_s"] for r in runs)
            sec.rows.append(
                [
                    f"{name} ({runs[0]['executor']})",
                    " / ".join(f"{r['ttfr_s']:.2f}" for r in runs),
                    " / ".join(f"{r['wall_s']:.1f}" for r in runs),
                ]
            )
            if name == "default":
                sec.target("default executor: time to first request", best, "<= 2 s", best <= 2.0, "{:.2f} s")
    sec.notes.append(
        "from just before the `synth run` process is started to the simulator's timestamp of the "
        "first request it received (/_sim/stats first_request_at); every run shown."
    )
    sec.data = {"count": count, "points": points}
    return sec
