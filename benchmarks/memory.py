"""Memory stays flat whatever N is: peak memory of a 1,000,000-record job against the same job
with 100,000 records.

The job is an offline ``sim`` structured job with a two-field schema (cheap per record, so that a
million records take minutes on 2 cores), run as ``python -m synth run JOB.yaml --count N``
(the same job file for both) in a subprocess. Memory is the RSS summed over that process and
every Ray process it starts (and the PSS, which counts shared pages such as Ray's object store
once), sampled every 0.5 s from outside. Target: peak(1M) / peak(100k) <= 1.2::

    python benchmarks/memory.py                 # 100,000 vs 1,000,000 records
    python benchmarks/memory.py --quick         # 10,000 vs 100,000
    python benchmarks/memory.py --small 50000 --large 500000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RunOutcome, check, header, mib, synth_run, table, write_job  # noqa: E402

JOB = {
    "name": "bench-memory",
    "count": 100_000,
    "seed": 1,
    "generator": {
        "kind": "structured",
        "prompt": "Item {n}.",
        "schema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 8}},
            "required": ["a", "b"],
        },
        "vars": {"n": {"kind": "range", "low": 1, "high": 1_000_000_000}},
        "keep_prompt": False,
        "dedup": False,
    },
    "output": {"uri": "./out/${job}", "shard_size": 10_000},
}


def one(count: int, job_file: Path) -> tuple[RunOutcome, dict[str, Any]]:
    out = OUT / "memory" / f"data-{count}"
    run = synth_run(job_file, out, args=["--count", str(count)])
    check(run, f"{count:,}-record run")
    records = run.stats.get("records", 0)
    return run, {
        "count": count,
        "records": records,
        "wall_s": run.wall_s,
        "records_per_s": records / run.wall_s,
        "peak_rss": run.peak_rss,
        "peak_pss": run.peak_pss,
        "cpu_s": run.cpu_s,
        "cpu_by_process": run.cpu_by_process,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100_000, help="records of the small run")
    parser.add_argument("--large", type=int, default=1_000_000, help="records of the large run")
    parser.add_argument("--quick", action="store_true", help="10,000 vs 100,000 records")
    args = parser.parse_args()
    if args.quick:
        args.small, args.large = 10_000, 100_000
    header("peak memory of a whole synth run: large N against small N")
    job_file = write_job(JOB, OUT / "memory" / "job.yaml")
    rows, results = [], []
    for count in (args.small, args.large):
        _, r = one(count, job_file)
        results.append(r)
        rows.append(
            [
                f"{count:,}",
                f"{r['wall_s']:.1f}",
                f"{r['records_per_s']:,.0f}",
                mib(r["peak_rss"]),
                mib(r["peak_pss"]),
                f"{r['cpu_s']:.0f}",
            ]
        )
        print(f"{count:,} records: {r['wall_s']:.1f} s, peak RSS {mib(r['peak_rss'])}", flush=True)
    ratio = results[1]["peak_rss"] / results[0]["peak_rss"]
    ratio_pss = results[1]["peak_pss"] / results[0]["peak_pss"]
    print()
    print(table(rows, ["records", "wall s", "records/s", "peak RSS (sum)", "peak PSS (sum)", "CPU s"]))
    print(
        f"peak RSS ratio {args.large:,} / {args.small:,}: {ratio:.2f} (PSS {ratio_pss:.2f}); target <= 1.2: "
        f"{'ok' if ratio <= 1.2 else 'MISSED'}"
    )
    print(
        "CPU s by process, large run: "
        + ", ".join(f"{k} {v:.0f}" for k, v in results[1]["cpu_by_process"].items() if v >= 1)
    )
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {"runs": results, "ratio_rss": ratio, "ratio_pss": ratio_pss}
    (OUT / "memory.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
