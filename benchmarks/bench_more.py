"""Sections 5 to 8 of ``synth bench``: the idle cost of a rate-limited run against a naive loop,
scale-out over local Ray nodes, memory by N, and throughput with faults next to a clean run.

Also runnable as ``python bench_more.py --naive-worker URL COUNT IN_FLIGHT KEY OUT`` (the naive
loop of section 5, in its own process so its CPU is its own)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_sections import MANY_KEYS, Section, executor_of, synth_unlimited
from common import OUT, PYTHON, ROOT, Simulator, TreeSampler, check, run_env, synth_run, write_job
from throughput import MAX_TOKENS, PROMPT, SCHEMA, job_doc

# ---------------------------------------------------------------- 5. rate-limited idle cost


async def _naive(url: str, count: int, in_flight: int, key: str, out: str) -> dict[str, Any]:
    """What one writes without knowing the limit: a semaphore, and on 429 sleep and try again."""
    import aiohttp
    import pyarrow as pa
    import pyarrow.parquet as pq

    sem = asyncio.Semaphore(in_flight)
    rows: list[dict[str, Any]] = []
    fmt = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA, "strict": True}}
    retries = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal retries
        body = {
            "model": "sim-model",
            "messages": [{"role": "user", "content": PROMPT.format(n=i)}],
            "max_tokens": MAX_TOKENS,
            "seed": i,
            "response_format": fmt,
        }
        async with sem:
            for attempt in range(1000):
                async with session.post(
                    f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
                ) as r:
                    data = json.loads(await r.read())
                    wait = float(r.headers.get("Retry-After", 0) or 0)
                if r.status == 200:
                    break
                retries += 1
                await asyncio.sleep(max(wait, min(2.0, 0.05 * 2**attempt)))
        rows.append({"id": i, "record": data["choices"][0]["message"]["content"]})

    timeout = aiohttp.ClientTimeout(total=None)  # no connect timeout on a loaded machine
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.gather(*(one(session, i) for i in range(count)))
    pq.write_table(pa.Table.from_pylist(rows), out)
    t = os.times()
    return {"cpu_s": t.user + t.system, "retries": retries}


def idle_cost(quick: bool, rpm: float = 3000, latency_ms: float = 300) -> Section:
    count = 200 if quick else 3000
    sec = Section(
        5,
        f"Rate-limited idle cost ({rpm:g} RPM, {latency_ms:g} ms latency, {count:,} records each, side by side)",
        ["client", "wall s", "records/s", "CPU s", "CPU ms / record", "429s"],
    )
    keys = list(MANY_KEYS.items())
    with Simulator(rpm=rpm, ttft_ms=latency_ms, tpot_ms=0) as sim:
        # the naive loop on its own key, started alongside the synth run on another
        out = OUT / "bench" / "naive.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        naive = subprocess.Popen(
            [PYTHON, __file__, "--naive-worker", sim.url, str(count), "64", keys[1][1], str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=run_env(),
        )
        result: dict[str, Any] = {}

        def watch() -> None:
            with TreeSampler(naive.pid, interval=0.5):
                stdout, stderr = naive.communicate()
            result.update(
                wall_s=time.monotonic() - t0,
                code=naive.returncode,
                err=stderr[-500:],
                **(json.loads(stdout.strip().splitlines()[-1]) if naive.returncode == 0 else {}),
            )

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        doc = job_doc("idle", count, sim.url, [{"env": keys[0][0], "rpm": rpm}], shard_size=500)
        run = synth_run(
            write_job(doc, OUT / "bench" / "idle.yaml"), OUT / "bench" / "idle-data", env=MANY_KEYS, interval=0.5
        )
        check(run, "rate-limited run")
        th.join()
        if result.get("code") != 0:
            raise SystemExit(f"naive loop failed: {result.get('err')}")
        by_key = sim.stats()["by_key"]
    # the naive loop's retries are its 429s; the rest of the simulator's 429s went to synth
    naive_429 = result["retries"]
    synth_429 = sum(v["rate_limited"] for v in by_key.values()) - naive_429
    syn_ms, naive_ms = run.cpu_s / count * 1000, result["cpu_s"] / count * 1000
    sec.rows.append(
        [
            "synth run (" + executor_of(run) + ")",
            f"{run.wall_s:.1f}",
            f"{count / run.wall_s:.1f}",
            f"{run.cpu_s:.2f}",
            f"{syn_ms:.2f}",
            synth_429,
        ]
    )
    sec.rows.append(
        [
            "naive asyncio loop",
            f"{result['wall_s']:.1f}",
            f"{count / result['wall_s']:.1f}",
            f"{result['cpu_s']:.2f}",
            f"{naive_ms:.2f}",
            naive_429,
        ]
    )
    sec.target("synth CPU / record over the naive loop's", syn_ms / naive_ms, "<= 1.0", syn_ms <= naive_ms, "{:.2f}x")
    sec.notes.append(
        "both against the same simulator at once, each on its own key; synth declares the key's RPM, "
        "the naive loop (64 in flight) sleeps on 429 (Retry-After, else backoff) and tries again. "
        "CPU: synth over its whole process tree (start-up included), the naive loop its own process."
    )
    sec.data = {
        "count": count,
        "synth": {
            "wall_s": run.wall_s,
            "cpu_s": run.cpu_s,
            "cpu_by_process": run.cpu_by_process,
            "rate_limited": synth_429,
        },
        "naive": result,
    }
    return sec


# ---------------------------------------------------------------- 6. scale-out over local Ray nodes


def _busy() -> float:
    """CPU seconds the whole machine has spent (every process, others' too) since boot."""
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.system + getattr(t, "nice", 0) + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


def start_cluster(nodes: int, state: Path) -> tuple[str, list[str]]:
    stop = [PYTHON, str(ROOT / "cluster" / "local.py"), "--state-dir", str(state), "stop"]
    p = subprocess.run(
        [
            PYTHON,
            str(ROOT / "cluster" / "local.py"),
            "--state-dir",
            str(state),
            "start",
            "--workers",
            str(nodes - 1),
            "--port",
            "0",
            "--no-dashboard",
            "--cpus",
            "1",
        ],
        capture_output=True,
        text=True,
        env=run_env(MANY_KEYS),
        timeout=180,
    )
    if p.returncode != 0:
        subprocess.run(stop, capture_output=True, env=run_env())
        raise SystemExit(f"local cluster of {nodes} did not start: {p.stderr.strip()[-500:]}")
    addr = next(w for w in p.stdout.split() if w.startswith("127.0.0.1:"))
    return addr, stop


def scale_out(quick: bool, count: int = 30_000) -> Section:
    sec = Section(
        6,
        f"Scale-out over local Ray nodes ({count:,} records, unlimited simulators at 100 ms, one per node)",
        [
            "nodes",
            "simulators",
            "records/s end to end",
            "x 1 node",
            "simulator CPU s / 1k",
            "machine cores busy (simulators)",
        ],
    )
    points = []
    for nodes in (1, 2, 4):
        sims = [Simulator(ttft_ms=100, tpot_ms=0) for _ in range(nodes)]
        state = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
        addr, stop = start_cluster(nodes, state)
        try:
            names = [f"sim{i}" for i in range(nodes)]
            keys = list(MANY_KEYS)
            doc = job_doc(f"scale-{nodes}", count, sims[0].url, [], shard_size=1000, concurrency=256 * nodes)
            doc["providers"] = [
                {
                    "name": n,
                    "model": "compat:sim-model",
                    "base_url": f"{s.url}/v1",
                    "keys": [
                        {"env": keys[2 * i], "max_concurrency": 128},
                        {"env": keys[2 * i + 1], "max_concurrency": 128},
                    ],
                }
                for i, (n, s) in enumerate(zip(names, sims))
            ]
            if nodes > 1:
                doc["routes"] = {"default": {"strategy": "weighted", "providers": names, "weights": [1] * nodes}}
            cpu0 = [s.cpu_s() for s in sims]
            busy0 = _busy()
            run = synth_run(
                write_job(doc, OUT / "bench" / f"scale-{nodes}.yaml"),
                OUT / "bench" / f"scale-{nodes}-data",
                args=["--address", addr],
                env=MANY_KEYS,
                interval=0.5,
            )
            check(run, f"scale-out over {nodes} nodes")
            sim_cpu = sum(s.cpu_s() - c for s, c in zip(sims, cpu0))
            busy = (_busy() - busy0) / run.wall_s
        finally:
            subprocess.run(stop, capture_output=True, env=run_env(), timeout=120)
            for s in sims:
                s.stop()
        # the nodes are not descendants of `synth run`: the run's own tree is the driver only
        rate = count / run.wall_s
        points.append(
            {
                "nodes": nodes,
                "wall_s": run.wall_s,
                "records_per_s": rate,
                "driver_cpu_s": run.cpu_s,
                "sim_cpu_s": sim_cpu,
                "machine_cores_busy": busy,
            }
        )
    for p in points:
        sec.rows.append(
            [
                p["nodes"],
                p["nodes"],
                f"{p['records_per_s']:,.0f}",
                f"{p['records_per_s'] / points[0]['records_per_s']:.2f}x",
                f"{1000 * p['sim_cpu_s'] / count:.3f}",
                f"{p['machine_cores_busy']:.2f} (simulators {p['sim_cpu_s'] / p['wall_s']:.2f})",
            ]
        )
    sec.notes.append(
        "the nodes run outside `synth run`'s process tree (cluster/local.py), so the machine's whole CPU "
        "is shown (every process on it, others' work too): near 2.0 the 2-core machine, not synth, sets "
        "the rate; every node's raylet, gateway and workers share the same two cores."
    )
    sec.data = {"count": count, "points": points}
    return sec


# ---------------------------------------------------------------- 7. memory


def memory(quick: bool, small: int, large: int) -> Section:
    import memory as mem

    sec = Section(
        7,
        f"Memory: {large:,} against {small:,} records (offline sim job)",
        ["records", "wall s", "records/s", "peak RSS MiB (sum)", "peak PSS MiB (sum)", "CPU s"],
    )
    job_file = write_job(mem.JOB, OUT / "bench" / "memory.yaml")
    runs = [mem.one(n, job_file)[1] for n in (small, large)]
    for r in runs:
        sec.rows.append(
            [
                f"{r['count']:,}",
                f"{r['wall_s']:.1f}",
                f"{r['records_per_s']:,.0f}",
                f"{r['peak_rss'] / 2**20:,.0f}",
                f"{r['peak_pss'] / 2**20:,.0f}",
                f"{r['cpu_s']:.0f}",
            ]
        )
    ratio = runs[1]["peak_rss"] / runs[0]["peak_rss"]
    sec.target("peak RSS ratio", ratio, "<= 1.2", ratio <= 1.2, "{:.2f}")
    sec.notes.append(
        f"PSS ratio {runs[1]['peak_pss'] / runs[0]['peak_pss']:.2f}; executors: both runs by the default rule."
    )
    sec.data = {"runs": runs, "ratio_rss": ratio}
    return sec


# ---------------------------------------------------------------- 8. faults


def faults(quick: bool, count: int) -> Section:
    sec = Section(
        8,
        f"Throughput with faults ({count:,} records, unlimited simulator at 100 ms, 512 in flight)",
        [
            "simulator",
            "records/s end to end",
            "x clean",
            "records",
            "dead letters",
            "answers paid / record",
            "5xx seen",
            "CPU s / 1k",
        ],
    )
    points = {}
    for name, opts in (
        ("clean", {}),
        ("5 % 5xx + 2 % malformed", {"error_rate": 0.05, "malformed_rate": 0.02, "seed": 7}),
    ):
        with Simulator(ttft_ms=100, tpot_ms=0, **opts) as sim:
            r = synth_unlimited(sim, f"faults-{len(points)}", count, 512, None)
            st = sim.stats()
        stats = json.loads((OUT / "bench" / f"faults-{len(points)}-data" / "stats.json").read_text())
        r.update(
            records=stats.get("records"), dead_letters=stats.get("dead_letters"), paid=st["ok"], errors=st["errors"]
        )
        points[name] = r
    clean = points["clean"]
    for name, r in points.items():
        sec.rows.append(
            [
                name,
                f"{r['records_per_s']:,.0f}",
                f"{r['records_per_s'] / clean['records_per_s']:.2f}x",
                f"{r['records']:,}",
                r["dead_letters"],
                f"{r['paid'] / count:.3f}",
                r["errors"],
                f"{r['cpu_per_1k']:.3f}",
            ]
        )
    sec.notes.append(
        "failed and malformed answers are retried or re-asked by the engine; answers paid counts the simulator's 200s."
    )
    sec.data = {"count": count, "points": points}
    return sec


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "--naive-worker":
    url, n, flight, key, out_file = sys.argv[2:]
    print(json.dumps(asyncio.run(_naive(url, int(n), int(flight), key, out_file))), flush=True)
