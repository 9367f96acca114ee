"""What metrics cost per request: the provider stack over the offline sim client (no network, so the
stack's own CPU is all there is to measure), with no meter, with the local tally that the Ray
meter is, and with that tally pushed to Ray's metrics each second; and the cost of one Ray metric
call, which is what pushing per request would cost instead.

    python -m benchmarks.metrics_overhead [requests]

Prints microseconds of CPU per request for each. Needs no cluster; the Ray rows start a local Ray.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

for _k, _v in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

from synth.providers.dispatch import Dispatcher  # noqa: E402
from synth.providers.metrics import NO_METER, Tally  # noqa: E402
from synth.records import ChatMessage, Request  # noqa: E402
from synth.spec import JobSpec  # noqa: E402

JOB = JobSpec.model_validate(
    {
        "name": "bench",
        "count": 1,
        "generator": {"kind": "structured"},
        "providers": [{"name": "a", "model": "sim:a", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}],
    }
)


async def drive(meter: object, n: int, flush: object = None) -> float:
    """CPU seconds per request for ``n`` requests in batches of 500."""
    d = Dispatcher.from_spec(JOB, meter=meter)  # type: ignore[arg-type]
    reqs = [Request(id=f"r{i}", model="a", messages=[ChatMessage(role="user", content=f"hi {i}")]) for i in range(n)]
    await d.complete_many(reqs[:500])  # warm up
    t0 = time.process_time()
    last = time.monotonic()
    for i in range(0, n, 500):
        await d.complete_many(reqs[i : i + 500])
        if flush is not None and time.monotonic() - last >= 1.0:
            flush()  # type: ignore[operator]
            last = time.monotonic()
    if flush is not None:
        flush()  # type: ignore[operator]
    return (time.process_time() - t0) / n


def ray_call_us(n: int = 20_000) -> tuple[float, float]:
    """Microseconds per ``Counter.inc`` and ``Histogram.observe`` in a process connected to Ray."""
    from ray.util.metrics import Counter, Histogram

    c = Counter("bench_counter", tag_keys=("a", "b", "c"))
    h = Histogram("bench_hist", boundaries=[0.01, 0.1, 1.0], tag_keys=("a", "b", "c"))
    tags = {"a": "x", "b": "y", "c": "z"}
    t0 = time.perf_counter()
    for _ in range(n):
        c.inc(1, tags=tags)
    t1 = time.perf_counter()
    for _ in range(n):
        h.observe(0.05, tags=tags)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def tally_us(n: int = 100_000) -> float:
    """Microseconds for what one answered request tells the tally (a call, its spend, the request)."""
    t = Tally()
    t0 = time.perf_counter()
    for _ in range(n):
        t.answered("a", "sim:a", "alpha", 0.02)
        t.spent("a", "sim:a", "alpha", 10, 20, 0.001)
        t.served("a", "sim:a", "alpha", 0.03)
    return (time.perf_counter() - t0) / n * 1e6


def main(n: int) -> None:
    import ray

    from synth.engine.metrics import RayMeter

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        rows = {}
        for _ in range(3):  # the best of three interleaved rounds of each: the machine is shared
            for name, make in (
                ("no meter", lambda: (NO_METER, None)),
                ("local tally", lambda: (Tally(), None)),
                ("Ray meter, flushed each second", lambda: (lambda m: (m, m.flush))(RayMeter("bench"))),
            ):
                meter, flush = make()
                us = asyncio.run(drive(meter, n, flush)) * 1e6
                rows[name] = min(us, rows.get(name, us))
        inc, obs = ray_call_us()
    finally:
        ray.shutdown()
    base = rows["no meter"]
    print(f"{'':34} {'us CPU/request':>15} {'vs no meter':>12}")
    for name, us in rows.items():
        print(f"{name:34} {us:15.1f} {us - base:+12.1f}")
    print(f"the tally's calls for one answered request: {tally_us():.1f} us")
    print(f"one Ray Counter.inc: {inc:.1f} us; one Histogram.observe: {obs:.1f} us")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
