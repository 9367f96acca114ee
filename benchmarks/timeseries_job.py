"""A whole timeseries job on a local Ray: 100,000,000 points (25 series x 1,000,000 minutes x 4
fields, the full model of benchmarks/timeseries.py) into date-partitioned Parquet.

The job runs as ``python -m synth run JOB.yaml`` in a subprocess. Reports wall time, points/s end
to end, peak memory (RSS and PSS summed over that process and every Ray process it starts, sampled
every 0.5 s from outside), CPU by process and what was written::

    python benchmarks/timeseries_job.py                   # 100,000,000 points
    python benchmarks/timeseries_job.py --points 20000000 # smaller
    python benchmarks/timeseries_job.py --quick           # 8,000,000 points, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, RunOutcome, check, header, mib, synth_run, table, write_job  # noqa: E402
from timeseries import bench_job  # noqa: E402


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in (path / "data").rglob("*.parquet")]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000_000, help="points (rows x fields) of the job")
    parser.add_argument("--length", type=int, default=1_000_000, help="points per series and field")
    parser.add_argument("--quick", action="store_true", help="8,000,000 points")
    args = parser.parse_args()
    if args.quick:
        args.points = min(args.points, 8_000_000)
    header("a whole timeseries job on a local Ray, into date-partitioned Parquet")
    out = OUT / "timeseries-job"
    result: dict[str, RunOutcome] = {}

    def run(spec: Any) -> None:
        job_file = write_job(spec.model_dump(mode="json", exclude_defaults=True), OUT / "timeseries-job.yaml")
        result["run"] = synth_run(job_file, out)

    timing = bench_job(run, points=args.points, length=args.length)
    res = result["run"]
    check(res, "timeseries job")
    stats = res.stats
    files, size = folder_size(out)
    print(
        table(
            [
                ["points", f"{timing['points']:,}", f"{stats['rows']:,} rows x 4 fields, {stats['records']} series"],
                ["wall time", f"{timing['seconds']:.1f} s", "synth run, Ray start-up included"],
                ["points/s", f"{timing['points_per_s']:,.0f}", "end to end"],
                ["peak RSS", mib(res.peak_rss), "summed over the driver and every Ray process"],
                ["peak PSS", mib(res.peak_pss), "shared pages counted once"],
                ["CPU", f"{res.cpu_s:,.0f} s", "all processes"],
                ["written", f"{files:,} files, {size / 2**20:,.0f} MiB", "Parquet, zstd"],
            ],
            ["measure", "value", ""],
        )
    )
    print("CPU s by process: " + ", ".join(f"{k} {v:.0f}" for k, v in res.cpu_by_process.items() if v >= 1))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "timeseries_job.json").write_text(
        json.dumps(
            {
                **timing,
                "rows": stats["rows"],
                "series": stats["records"],
                "peak_rss": res.peak_rss,
                "peak_pss": res.peak_pss,
                "cpu_s": res.cpu_s,
                "cpu_by_process": res.cpu_by_process,
                "files": files,
                "bytes": size,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
