"""How close the provider layer runs to the rate-limit ceiling, and what it costs in CPU.

One client process (this one) against the LLM API simulator in its own subprocess:

(a) ceiling efficiency: 4 keys under per-key limits, kept saturated for ``--seconds``; achieved
    answers/s over the steady window (after a 2 s warm-up) divided by the configured ceiling (the
    sum over keys of min(RPM, TPM / tokens per request)), and the share of requests the simulator
    answered 429. Targets: >= 0.98 and <= 0.5 %. Run once bound by RPM, once by TPM.
(b) overhead: client CPU seconds per 1,000 requests against an unlimited, zero-latency simulator,
    for the whole stack (Dispatcher + wire provider; target <= 0.5 s), the Dispatcher with the
    official openai SDK provider, and the wire provider alone (no dispatcher), in the same run:
    the median of three interleaved rounds.

    python benchmarks/providers.py                 # 60 s per ceiling run
    python benchmarks/providers.py --seconds 15    # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from synth.providers.base import ApiKey
from synth.providers.clients.wire import WireProvider
from synth.providers.dispatch import Dispatcher
from synth.providers.limits import prompt_tokens
from synth.records import ChatMessage, Completion, Request
from synth.spec import JobSpec

KEYS = {f"BENCH_KEY_{i}": f"sk-bench-{i}" for i in range(4)}
MAX_TOKENS = 60
WARMUP_S = 2.0


class Simulator:
    """``python -m synth.simulator serve`` in a subprocess, stopped by its PID."""

    def __init__(self, **options: Any) -> None:
        args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synth.simulator", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line: list[str] = []
        out = self.proc.stdout
        assert out is not None
        reader = threading.Thread(target=lambda: line.append(out.readline()), daemon=True)
        reader.start()
        reader.join(30)
        if not line or not line[0].startswith("http"):
            self.stop()
            raise SystemExit("the simulator did not start")
        self.url = line[0].strip()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def job(url: str, **provider: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "bench",
            "count": 1,
            "generator": {"kind": "structured"},
            "prices": {"compat:bench": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
            "providers": [
                {
                    "name": "main",
                    "model": "compat:bench",
                    "base_url": url + "/v1",
                    "keys": [{"env": k, "alias": f"key{i}"} for i, k in enumerate(KEYS)],
                    **provider,
                }
            ],
        }
    )


def request(i: int) -> Request:
    return Request(
        id=f"b{i}",
        messages=[ChatMessage(role="user", content=f"describe item {i:09d} in one line")],
        max_tokens=MAX_TOKENS,
        seed=i,
    )


# ---------------------------------------------------------------- (a) ceiling


async def saturate(d: Dispatcher, seconds: float, loops: int = 8, batch: int = 64) -> list[float]:
    """Keep ``loops`` batches in flight (as gateway calls from workers would) for ``seconds``;
    returns the completion time of every answer."""
    t0 = time.monotonic()
    done: list[float] = []
    counter = iter(range(10**9))

    async def one(r: Request) -> None:
        await d.complete(r)  # what complete_many does per request, timed one by one; errors end the run
        done.append(time.monotonic() - t0)

    async def loop() -> None:
        while time.monotonic() - t0 < seconds:
            await asyncio.gather(*(one(request(next(counter))) for _ in range(batch)))

    await asyncio.gather(*(loop() for _ in range(loops)))
    return done


def ceiling_run(
    name: str, seconds: float, sim_opts: dict[str, Any], limits: dict[str, Any], ceiling: float
) -> dict[str, Any]:
    sim = Simulator(latency_ms=200, jitter=0.3, **sim_opts)
    try:

        async def go() -> list[float]:
            d = Dispatcher.from_spec(job(sim.url, **limits), env=KEYS)
            try:
                return await saturate(d, seconds)
            finally:
                await d.aclose()

        done = asyncio.run(go())
        served = sim.stats()
    finally:
        sim.stop()
    window = [t for t in done if WARMUP_S <= t <= seconds]
    rate = len(window) / (seconds - WARMUP_S)
    if "tpm" in limits:  # the simulator may answer in fewer tokens than max_tokens: use what it served
        per_request = served["total_tokens"] / max(1, served["ok"])
        ceiling = 4 * min(limits["rpm"], limits["tpm"] / per_request) / 60
    share_429 = served["rate_limited"] / max(1, served["requests"])
    return {
        "run": name,
        "ceiling_rps": ceiling,
        "achieved_rps": rate,
        "efficiency": rate / ceiling,
        "share_429": share_429,
        "requests": served["requests"],
    }


# ---------------------------------------------------------------- (b) overhead


async def cpu_per_1000(call: Any, n: int, batch: int = 256) -> float:
    await call([request(i) for i in range(200)])  # warm up: connections, imports, caches
    reqs = [request(i) for i in range(n)]
    c0 = time.process_time()
    for i in range(0, n, batch):
        out = await call(reqs[i : i + batch])
        if not all(isinstance(c, Completion) for c in out):
            raise SystemExit(f"requests failed: {[c for c in out if not isinstance(c, Completion)][:3]}")
    return (time.process_time() - c0) / n * 1000


def overhead_runs(n: int, rounds: int = 3) -> dict[str, float]:
    """Median over ``rounds`` interleaved rounds: other work on a shared machine moves single figures.
    The process's garbage collector is set as a gateway actor sets it (synth/engine/gateway.py)."""
    import gc

    gc.freeze()
    gc.set_threshold(20_000, 50, 1_000)
    sim = Simulator()  # no limits, no latency
    got: dict[str, list[float]] = {}
    try:

        async def go() -> None:
            wire = Dispatcher.from_spec(job(sim.url, client="wire"), env=KEYS)
            sdk = Dispatcher.from_spec(job(sim.url, client="sdk"), env=KEYS)
            w = WireProvider("compat", "bench", base_url=sim.url + "/v1")
            key = ApiKey("key0", KEYS["BENCH_KEY_0"])

            async def raw(batch: list[Request]) -> list[Any]:
                return await asyncio.gather(*(w.complete(r, key, timeout=60) for r in batch))

            runs = (
                ("dispatcher + wire", wire.complete_many, n),
                ("dispatcher + openai SDK", sdk.complete_many, n // 4),
                ("wire provider alone", raw, n),
            )
            try:
                for _ in range(rounds):
                    for label, call, count in runs:
                        got.setdefault(label, []).append(await cpu_per_1000(call, count))
            finally:
                await wire.aclose()
                await sdk.aclose()
                await w.aclose()

        asyncio.run(go())
    finally:
        sim.stop()
    return {label: statistics.median(v) for label, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each ceiling run")
    ap.add_argument("--rpm", type=float, default=1500.0, help="per-key RPM of the RPM-bound run")
    ap.add_argument("--requests", type=int, default=4000, help="requests per overhead measurement (x3 rounds)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.seconds <= WARMUP_S + 1:
        raise SystemExit(f"--seconds must be above {WARMUP_S + 1:g}")

    tokens = prompt_and_max()
    tpm = args.rpm * tokens * 0.6  # TPM binds at 60 % of the RPM limit
    runs = [
        ceiling_run("RPM-bound", args.seconds, {"rpm": args.rpm}, {"rpm": args.rpm}, 4 * args.rpm / 60),
        ceiling_run(
            "TPM-bound",
            args.seconds,
            {"rpm": args.rpm, "tpm": tpm},
            {"rpm": args.rpm, "tpm": tpm},
            4 * min(args.rpm, tpm / tokens) / 60,
        ),
    ]
    cpu = overhead_runs(args.requests)

    print(f"\nsynth provider layer, one process, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'measure':<52}{'value':>10}  {'target':<10}{'ok'}")
    for r in runs:
        print(
            f"{'ceiling efficiency, ' + r['run'] + ', 4 keys':<52}{r['efficiency']:>10.3f}  {'>= 0.98':<10}"
            f"{'yes' if r['efficiency'] >= 0.98 else 'NO'}"
        )
        print(f"{'  achieved / ceiling requests/s':<52}{r['achieved_rps']:>10.2f}  {r['ceiling_rps']:<10.2f}")
        ok = "yes" if r["share_429"] <= 0.005 else "NO"
        print(f"{'  429 share':<52}{r['share_429']:>10.2%}  {'<= 0.5%':<10}{ok}")
    for label, v in cpu.items():
        target = "<= 0.5" if label == "dispatcher + wire" else "reference"
        ok = ("yes" if v <= 0.5 else "NO") if label == "dispatcher + wire" else ""
        print(f"{'CPU s / 1,000 requests, ' + label:<52}{v:>10.3f}  {target:<10}{ok}")
    print(
        f"\ncommand: python benchmarks/providers.py --seconds {args.seconds:g} --rpm {args.rpm:g} "
        f"--requests {args.requests}"
    )
    if args.json:
        print(json.dumps({"ceiling": runs, "cpu_s_per_1000": cpu}))


def prompt_and_max() -> int:
    """Tokens one benchmark request reserves: prompt + max_tokens (all requests are the same size)."""
    return prompt_tokens(request(0).messages) + MAX_TOKENS


if __name__ == "__main__":
    main()
