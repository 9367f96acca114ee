"""``synth bench``: the benchmark suite against the project's LLM API simulator, in one command.

Writes bench.md (a table per section and the targets), bench.json (every number) and PNG plots to
``--out`` (default benchmarks/results/). Sections, each reported as ratios against a ceiling or a
baseline measured in the same run:

  1 ceiling efficiency at 1, 2, 4, 8, 16 keys     5 rate-limited idle cost against a naive loop
  2 latency 50 ms, 500 ms, 5 s and Little's law   6 scale-out over 1, 2, 4 local Ray nodes
  3 overhead against a one-process asyncio loop   7 memory at 100,000 and 1,000,000 records
  4 time to the first request                     8 throughput with 5 % 5xx and 2 % malformed

    python benchmarks/bench.py                 # everything, about 15 minutes on 2 cores
    python benchmarks/bench.py --quick         # a small version of 1-5 and 8, under a minute or two
    python benchmarks/bench.py --only 1,3      # some sections
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402
from bench_more import faults, idle_cost, memory, scale_out  # noqa: E402
from bench_report import markdown, plots, write_json  # noqa: E402
from bench_sections import Section, ceiling_by_keys, first_request, latency, overhead  # noqa: E402
from common import ROOT, command_line  # noqa: E402
from faults import versions  # noqa: E402


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="synth bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small version of everything meaningful (skips 6 and 7)")
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for bench.md, bench.json, PNGs"
    )
    p.add_argument("--only", default="", help="sections to run, comma-separated numbers (default: all)")
    p.add_argument("--latency-shard-size", type=int, help="units per shard in section 2 (default: a run's count / 8)")
    p.add_argument("--overhead-sizes", default="10000,100000", help="records of the overhead runs (section 3)")
    p.add_argument("--scale-records", type=int, default=30_000, help="records of each scale-out run (section 6)")
    p.add_argument("--memory-small", type=int, default=100_000, help="records of the small memory run (section 7)")
    p.add_argument("--memory-large", type=int, default=1_000_000, help="records of the large memory run (section 7)")
    p.add_argument("--fault-records", type=int, default=10_000, help="records of each fault run (section 8)")
    a = p.parse_args(argv)
    only = {int(x) for x in a.only.split(",") if x.strip()}
    sizes = [int(x) for x in a.overhead_sizes.split(",") if x.strip()]
    q = a.quick
    plan: dict[int, Callable[[], Section]] = {
        1: lambda: ceiling_by_keys(q),
        2: lambda: latency(q, shard_size=a.latency_shard_size),
        3: lambda: overhead(q, [2_000] if q else sizes),
        4: lambda: first_request(q),
        5: lambda: idle_cost(q),
        6: lambda: scale_out(q, a.scale_records),
        7: lambda: memory(q, a.memory_small, a.memory_large),
        8: lambda: faults(q, 1_000 if q else a.fault_records),
    }
    if q:
        plan.pop(6), plan.pop(7)
    chosen = [n for n in plan if not only or n in only]
    a.out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    head: dict[str, Any] = {
        "command": command_line(),
        "cpus": psutil.cpu_count(),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "load_before": load(),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "versions": versions(),
        "quick": q,
    }
    print(f"# synth bench: sections {chosen}; load average {head['load_before']}", flush=True)
    t0 = time.monotonic()
    sections: list[Section] = []
    for n in chosen:
        t = time.monotonic()
        try:
            sections.append(plan[n]())
        except (Exception, SystemExit) as e:  # noqa: BLE001 - one failed section is reported, the rest still run
            msg = " ".join(str(e).split())[-400:] or type(e).__name__
            sections.append(Section(n, f"section {n} failed", ["error"], [[msg]], [], [], {"error": msg}))
        s = sections[-1]
        missed = [x["what"] for x in s.targets if not x["met"]]
        print(
            f"{n}. {s.title}: {time.monotonic() - t:.0f} s" + (f"; missed: {', '.join(missed)}" if missed else ""),
            flush=True,
        )
        # written after every section, so the finished sections of a long suite are kept if it stops
        head.update(
            load_after=load(),
            seconds=time.monotonic() - t0,
            ended=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        )
        made = plots(a.out, sections)
        (a.out / "bench.md").write_text(markdown(head, sections, made))
        write_json(a.out / "bench.json", head, sections)
    print(f"wrote {a.out / 'bench.md'}, {a.out / 'bench.json'} and {len(made)} plots", flush=True)


if __name__ == "__main__":
    main()
