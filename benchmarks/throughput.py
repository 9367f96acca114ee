"""Whole ``synth run`` throughput against the LLM API simulator, each in its own process.

(a) ceiling: 4 keys x 1,200 RPM at a fixed 300 ms latency, one request per record (a structured
    job with a tiny schema). Achieved answers/s over the steady window (from the simulator's
    counters: from 3 s after the first answer to 2 s before the last, so Ray's start-up is left
    out) divided by the ceiling 4 x 1200 / 60 = 80/s; target >= 0.97. The share of requests the
    simulator answered 429 over the whole run; target <= 0.5 %. The window lasts ``--seconds``.
(b) overhead: against an unlimited simulator at 100 ms latency, records/s into Parquet and CPU
    seconds per 1,000 records summed over every process of the run (the ``synth run`` process and
    all its descendants: Ray services, workers, gateways; not the simulator), next to a
    single-process asyncio baseline calling the simulator directly (aiohttp, same requests, same
    number in flight, one Parquet file at the end), in the same invocation. Target: synth at
    least as fast as the baseline on 2 cores. Run at several numbers of requests in flight (both
    sides alike): 256 is bound by latency (neither can pass 256 / 100 ms = 2,560/s), 1,024 by CPU.

    python benchmarks/throughput.py                      # (a) 60 s steady window, (b) 40,000 records at 256, 512, 1,024
    python benchmarks/throughput.py --only b --in-flight 256
    python benchmarks/throughput.py --quick              # a short smoke run of both
    python benchmarks/throughput.py --only b --records 50000
    python benchmarks/throughput.py --only b --repeat 3         # three pairs in turn, median shown
    python benchmarks/throughput.py --only b --engine batch_wait_ms=25   # tune the engine section

Writes a plot of the achieved rate against the ceiling to benchmarks/out/throughput_ceiling.png
and the numbers to benchmarks/out/throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    OUT,
    PYTHON,
    RunOutcome,
    Simulator,
    TreeSampler,
    at,
    check,
    header,
    mib,
    ok_of,
    plot_rate,
    run_env,
    steady_window,
    synth_run,
    table,
    write_job,
)

KEYS = {f"SIM_KEY_{i}": f"sk-bench-{i}" for i in range(1, 5)}
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 8}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
PROMPT = "Item {n}."
MAX_TOKENS = 32
WARMUP_S, TAIL_S = 3.0, 2.0


ENGINE: dict[str, Any] = {}  # --engine overrides of the job's engine section


def job_doc(
    name: str, count: int, url: str, keys: list[dict[str, Any]], shard_size: int, concurrency: int = 512
) -> dict[str, Any]:
    """One request per record: a structured record with two fields, no re-draws for duplicates."""
    return {
        "name": name,
        "count": count,
        "seed": 1,
        "generator": {
            "kind": "structured",
            "prompt": PROMPT,
            "schema": SCHEMA,
            "vars": {"n": {"kind": "range", "low": 1, "high": 1_000_000_000}},
            "keep_prompt": False,
            "dedup": False,
            "max_tokens": MAX_TOKENS,
        },
        "providers": [{"name": "sim", "model": "compat:sim-model", "base_url": f"{url}/v1", "keys": keys}],
        "output": {"uri": "./out/${job}", "shard_size": shard_size},
        "engine": {"concurrency": concurrency, **ENGINE},
    }


def window_numbers(samples: list[Any], total: int) -> dict[str, float] | None:
    win = steady_window(samples, total, WARMUP_S, TAIL_S)
    if win is None:
        return None
    t0, t1 = win
    answers = at(samples, t1, ok_of) - at(samples, t0, ok_of)
    cpu = at(samples, t1, lambda s: s.cpu_s) - at(samples, t0, lambda s: s.cpu_s)
    first = min(samples, key=lambda s: abs(s.t - t0)).by_process
    last = min(samples, key=lambda s: abs(s.t - t1)).by_process
    by = {k: 1000 * (v - first.get(k, 0.0)) / max(answers, 1) for k, v in last.items()}
    held = [s.probe["in_flight"] for s in samples if t0 <= s.t <= t1 and "in_flight" in s.probe]
    return {
        "sim_in_flight": sum(held) / len(held) if held else None,
        "start_s": t0,
        "end_s": t1,
        "seconds": t1 - t0,
        "answers": answers,
        "rate": answers / (t1 - t0),
        "cpu_s": cpu,
        "cpu_per_1k": 1000 * cpu / max(answers, 1),
        "cpu_per_1k_by_process": dict(sorted(by.items(), key=lambda kv: -kv[1])),
    }


# ---------------------------------------------------------------- (a) the ceiling


def ceiling_run(seconds: float) -> dict[str, Any]:
    rpm, n_keys, latency_ms = 1200, 4, 300
    ceiling = n_keys * rpm / 60
    count = int(ceiling * (seconds + WARMUP_S + TAIL_S + 3))
    keys = [{"env": k, "rpm": rpm} for k in KEYS]
    with Simulator(rpm=rpm, ttft_ms=latency_ms, tpot_ms=0) as sim:
        doc = job_doc("bench-ceiling", count, sim.url, keys, shard_size=200)
        job_file = write_job(doc, OUT / "throughput" / "ceiling.yaml")
        run = synth_run(job_file, OUT / "throughput" / "ceiling-data", env=KEYS, probe=sim.stats)
        check(run, "ceiling run")
        final = sim.stats()
    win = window_numbers(run.samples, count)
    if win is None:
        raise SystemExit("ceiling run: no steady window (the run was too short)")
    share_429 = final["rate_limited"] / max(final["requests"], 1)
    plot = plot_rate(
        run.samples,
        ceiling,
        (win["start_s"], win["end_s"]),
        OUT / "throughput_ceiling.png",
        f"synth run: {n_keys} keys x {rpm} RPM, {latency_ms} ms latency",
    )
    return {
        "ceiling": ceiling,
        "count": count,
        "window": win,
        "ratio": win["rate"] / ceiling,
        "requests": final["requests"],
        "ok": final["ok"],
        "rate_limited": final["rate_limited"],
        "share_429": share_429,
        "wall_s": run.wall_s,
        "plot": str(plot) if plot else None,
        "records": run.stats.get("records"),
        "dead_letters": run.stats.get("dead_letters"),
    }


# ---------------------------------------------------------------- (b) overhead against a baseline


async def _baseline(url: str, count: int, in_flight: int, out: str) -> dict[str, float]:
    """The plain way: one asyncio process, aiohttp, a semaphore, rows in a list, one Parquet file."""
    import aiohttp
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(1)
    sem = asyncio.Semaphore(in_flight)
    rows: list[dict[str, Any] | None] = [None] * count
    keys = list(KEYS.values())
    endpoint = f"{url}/v1/chat/completions"
    fmt = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA, "strict": True}}

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        body = {
            "model": "sim-model",
            "messages": [{"role": "user", "content": PROMPT.format(n=rng.randint(1, 10**9))}],
            "max_tokens": MAX_TOKENS,
            "seed": i,
            "response_format": fmt,
        }
        headers = {"Authorization": f"Bearer {keys[i % len(keys)]}"}
        async with sem:
            for attempt in range(6):
                started = time.perf_counter()
                async with session.post(endpoint, json=body, headers=headers) as r:
                    data = json.loads(await r.read())
                if r.status == 200:
                    break
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                raise RuntimeError(f"request {i} failed: {r.status}")
        usage = data.get("usage") or {}
        rows[i] = {
            "id": f"baseline-{i:010d}",
            "record": json.loads(data["choices"][0]["message"]["content"]),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "latency_ms": (time.perf_counter() - started) * 1000,
        }

    # no connect timeout: on a loaded machine 512 connections opened at once can take over
    # aiohttp's default 30 s to be accepted
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.gather(*(one(session, i) for i in range(count)))
    pq.write_table(pa.Table.from_pylist(rows), out, compression="zstd")
    t = os.times()
    return {"cpu_s": t.user + t.system}


async def _sdk_baseline(url: str, count: int, in_flight: int, out: str) -> dict[str, float]:
    """The same loop as most people write it: the official openai SDK instead of raw HTTP."""
    import openai
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(1)
    sem = asyncio.Semaphore(in_flight)
    rows: list[dict[str, Any] | None] = [None] * count
    keys = list(KEYS.values())
    clients = [openai.AsyncOpenAI(api_key=k, base_url=f"{url}/v1", max_retries=6) for k in keys]
    fmt = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA, "strict": True}}

    async def one(i: int) -> None:
        async with sem:
            started = time.perf_counter()
            resp = await clients[i % len(clients)].chat.completions.create(
                model="sim-model",
                messages=[{"role": "user", "content": PROMPT.format(n=rng.randint(1, 10**9))}],
                max_tokens=MAX_TOKENS,
                seed=i,
                response_format=fmt,  # type: ignore[arg-type]
            )
        rows[i] = {
            "id": f"baseline-{i:010d}",
            "record": json.loads(resp.choices[0].message.content or "null"),
            "prompt_tokens": resp.usage.prompt_tokens if resp.usage else None,
            "completion_tokens": resp.usage.completion_tokens if resp.usage else None,
            "latency_ms": (time.perf_counter() - started) * 1000,
        }

    await asyncio.gather(*(one(i) for i in range(count)))
    pq.write_table(pa.Table.from_pylist(rows), out, compression="zstd")
    t = os.times()
    return {"cpu_s": t.user + t.system}


BASELINES = {"aiohttp": _baseline, "openai": _sdk_baseline}


def baseline_main(url: str, count: int, in_flight: int, out: str, client: str = "aiohttp") -> None:
    print(json.dumps(asyncio.run(BASELINES[client](url, count, in_flight, out))), flush=True)


def baseline_run(sim: Simulator, count: int, in_flight: int, client: str = "aiohttp") -> dict[str, Any]:
    """The one-process asyncio loop over raw HTTP (aiohttp), or over the openai SDK."""
    out = OUT / "throughput" / f"baseline-{client}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    sim.reset()
    start = time.monotonic()
    proc = subprocess.Popen(
        [PYTHON, __file__, "--baseline-worker", sim.url, str(count), str(in_flight), str(out), client],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=run_env(),
    )
    with TreeSampler(proc.pid, interval=0.25, probe=sim.stats) as sampler:
        stdout, stderr = proc.communicate()
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"baseline failed: {stderr.strip()[-2000:]}")
    own = json.loads(stdout.strip().splitlines()[-1])
    return {
        "wall_s": wall,
        "cpu_s": own["cpu_s"],
        "window": window_numbers(sampler.samples, count),
        "peak_rss": sampler.peak_rss,
    }


def synth_overhead_run(sim: Simulator, count: int, in_flight: int) -> dict[str, Any]:
    per_key = in_flight // len(KEYS)
    keys = [{"env": k, "max_concurrency": per_key} for k in KEYS]
    doc = job_doc("bench-overhead", count, sim.url, keys, shard_size=1000)
    job_file = write_job(doc, OUT / "throughput" / "overhead.yaml")
    sim.reset()
    run: RunOutcome = synth_run(
        job_file, OUT / "throughput" / "overhead-data", env=KEYS, probe=sim.stats, interval=0.25
    )
    check(run, "overhead run")
    first = next((s.t for s in run.samples if ok_of(s) > 0), 0.0)
    return {
        "wall_s": run.wall_s,
        "cpu_s": run.cpu_s,
        "window": window_numbers(run.samples, count),
        "peak_rss": run.peak_rss,
        "startup_s": first,
        "records": run.stats.get("records"),
        "cpu_by_process": run.cpu_by_process,
    }


def overhead(records: int, in_flight: int) -> dict[str, Any]:
    with Simulator(ttft_ms=100, tpot_ms=0) as sim:
        cpu0 = sim.cpu_s()
        base = baseline_run(sim, records, in_flight)
        cpu1 = sim.cpu_s()
        syn = synth_overhead_run(sim, records, in_flight)
        cpu2 = sim.cpu_s()
    base["sim_cpu_per_1k"] = 1000 * (cpu1 - cpu0) / records
    syn["sim_cpu_per_1k"] = 1000 * (cpu2 - cpu1) / records
    return {"records": records, "in_flight": in_flight, "baseline": base, "synth": syn}


def steady_ratio(b: dict[str, Any]) -> float:
    return float(
        (b["synth"]["window"] or {}).get("rate", 0.0) / max((b["baseline"]["window"] or {}).get("rate", 1e-9), 1e-9)
    )


# ---------------------------------------------------------------- report


def report(a: dict[str, Any] | None, b: dict[str, Any] | None) -> None:
    if a is not None:
        w = a["window"]
        print(
            f"(a) ceiling: 4 keys x 1,200 RPM, 300 ms latency, {a['count']:,} records; steady window "
            f"{w['start_s']:.1f}-{w['end_s']:.1f} s ({w['seconds']:.0f} s); run wall {a['wall_s']:.1f} s"
        )
        print(
            table(
                [
                    [
                        "achieved / ceiling",
                        f"{w['rate']:.2f}/s / {a['ceiling']:.0f}/s = {a['ratio']:.3f}",
                        ">= 0.97",
                        "ok" if a["ratio"] >= 0.97 else "MISSED",
                    ],
                    [
                        "429 share",
                        f"{a['rate_limited']:,} of {a['requests']:,} = {100 * a['share_429']:.2f} %",
                        "<= 0.5 %",
                        "ok" if a["share_429"] <= 0.005 else "MISSED",
                    ],
                    ["records / dead letters", f"{a['records']:,} / {a['dead_letters']:,}", "", ""],
                ],
                ["measure", "value", "target", ""],
            )
        )
        if a["plot"]:
            print(f"plot: {os.path.relpath(a['plot'])}")
        print()
    if b is not None:
        s, base = b["synth"], b["baseline"]
        sw, bw = s["window"] or {}, base["window"] or {}
        print(
            f"(b) overhead: unlimited simulator, 100 ms latency, {b['records']:,} records, "
            f"{b['in_flight']} requests in flight"
        )
        rows = []
        for name, r, w in (("synth run (all processes)", s, sw), ("asyncio + aiohttp baseline", base, bw)):
            rows.append(
                [
                    name,
                    f"{w.get('rate', 0):,.0f}",
                    f"{b['records'] / r['wall_s']:,.0f}",
                    f"{r['wall_s']:.1f}",
                    f"{w.get('cpu_per_1k', 0):.2f}",
                    f"{1000 * r['cpu_s'] / b['records']:.2f}",
                    f"{r['sim_cpu_per_1k']:.2f}",
                    mib(r["peak_rss"]),
                ]
            )
        print(
            table(
                rows,
                [
                    "",
                    "records/s steady",
                    "records/s end to end",
                    "wall s",
                    "CPU s/1k steady",
                    "CPU s/1k total",
                    "simulator CPU s/1k",
                    "peak RSS",
                ],
            )
        )
        ratio = sw.get("rate", 0) / max(bw.get("rate", 1e-9), 1e-9)
        e2e = base["wall_s"] / s["wall_s"]
        print(
            f"synth / baseline: {ratio:.2f}x steady, {e2e:.2f}x end to end (synth's includes "
            f"{s['startup_s']:.1f} s of Ray start-up before the first answer); target >= 1.0 on 2 cores"
        )
        if sw.get("sim_in_flight") and bw.get("sim_in_flight"):
            print(
                f"requests open at the simulator, mean over the steady window: synth {sw['sim_in_flight']:.0f}, "
                f"baseline {bw['sim_in_flight']:.0f}; time per request (in flight / rate): synth "
                f"{1000 * sw['sim_in_flight'] / sw['rate']:.1f} ms, baseline {1000 * bw['sim_in_flight'] / bw['rate']:.1f} ms"
            )
        by = sw.get("cpu_per_1k_by_process") or {}
        if by:
            print(
                "synth CPU s/1k records in the steady window, by process: "
                + ", ".join(f"{k} {v:.2f}" for k, v in by.items() if v >= 0.01)
            )


def summary(points: list[dict[str, Any]]) -> None:
    """One line per number in flight. Cores busy: the client's CPU over the steady window plus the
    simulator's per record, times the rate; near 2.0 the machine, not latency, sets the rate."""
    rows = []
    for b in points:
        s, base = b["synth"], b["baseline"]
        sw, bw = s["window"] or {}, base["window"] or {}
        cores = [
            (w.get("cpu_per_1k", 0) + r["sim_cpu_per_1k"]) * w.get("rate", 0) / 1000 for r, w in ((s, sw), (base, bw))
        ]
        rows.append(
            [
                f"{b['in_flight']:,}",
                f"{bw.get('rate', 0):,.0f}",
                f"{sw.get('rate', 0):,.0f}",
                f"{steady_ratio(b):.2f}x",
                f"{base['wall_s'] / s['wall_s']:.2f}x",
                f"{bw.get('cpu_per_1k', 0):.2f} / {sw.get('cpu_per_1k', 0):.2f}",
                f"{cores[1]:.1f} / {cores[0]:.1f}",
            ]
        )
    print(f"(b) summary, {points[0]['records']:,} records per run")
    print(
        table(
            rows,
            [
                "in flight",
                "baseline rec/s",
                "synth rec/s",
                "synth/baseline steady",
                "end to end",
                "CPU s/1k baseline / synth",
                "cores busy baseline / synth",
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="steady window of the ceiling run (a)")
    parser.add_argument("--records", type=int, default=40_000, help="records of each overhead run (b)")
    parser.add_argument(
        "--in-flight",
        default="256,512,1024",
        help="requests in flight in (b), both sides; several, comma-separated, run in turn",
    )
    parser.add_argument("--only", choices=["a", "b"], help="run one part only")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run (b) this many times, baseline and synth in turn; shows every ratio and the median run",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run: 15 s window, 3,000 records")
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set a field of the jobs' engine section, e.g. --engine batch_wait_ms=25",
    )
    parser.add_argument("--baseline-worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        url, count, in_flight, out, client = args.baseline_worker
        baseline_main(url, int(count), int(in_flight), out, client)
        return
    if args.quick:
        args.seconds, args.records = min(args.seconds, 15.0), min(args.records, 3_000)
        args.in_flight = str(args.in_flight).split(",")[0]
    for item in args.engine:
        field, _, value = item.partition("=")
        ENGINE[field.strip()] = json.loads(value)
    os.chdir(OUT.parent.parent)
    header("synth engine throughput against the LLM API simulator")
    if ENGINE:
        print(f"# engine section of the jobs: {ENGINE}\n")
    a = ceiling_run(args.seconds) if args.only in (None, "a") else None
    points: list[dict[str, Any]] = []
    if args.only in (None, "b"):
        for in_flight in (int(x) for x in str(args.in_flight).split(",") if x.strip()):
            runs = [overhead(args.records, in_flight) for _ in range(max(1, args.repeat))]
            b = sorted(runs, key=steady_ratio)[len(runs) // 2]  # the median run, shown in full
            b["steady_ratios"] = [steady_ratio(r) for r in runs]
            points.append(b)
    report(a, None)
    for b in points:
        report(None, b)
        rs = b["steady_ratios"]
        if len(rs) > 1:
            print(
                f"synth / baseline steady, {len(rs)} runs in turn: {', '.join(f'{r:.2f}x' for r in rs)}; "
                f"median {sorted(rs)[len(rs) // 2]:.2f}x (the run shown above)"
            )
        print()
    if len(points) > 1:
        summary(points)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "throughput.json").write_text(json.dumps({"ceiling": a, "overhead": points}, indent=2, default=str))


if __name__ == "__main__":
    main()
