"""A whole timeseries job on a local Ray: 100,000,000 points (25 series x 1,000,000 minutes x 4
fields, the full model of benchmarks/timeseries.py) into date-partitioned Parquet.

Reports wall time, points/s end to end, peak memory (RSS and PSS summed over this process and
every Ray process it starts, sampled every 0.5 s) and what was written::

    python benchmarks/timeseries_job.py                   # 100,000,000 points
    python benchmarks/timeseries_job.py --points 20000000 # smaller
    python benchmarks/timeseries_job.py --quick           # 8,000,000 points, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

for _k, _v in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
               "AWS_EC2_METADATA_DISABLED": "true", "HF_HUB_OFFLINE": "1"}.items():
    os.environ.setdefault(_k, _v)  # before Ray starts, so its processes inherit them
os.environ.pop("RAY_ADDRESS", None)  # an embedded Ray of its own

import synth  # noqa: E402
from common import OUT, TreeSampler, header, mib, table  # noqa: E402
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
    result: dict[str, Any] = {}

    def run(spec: Any) -> None:
        result["run"] = synth.run(spec, output=str(out), overwrite=True)

    with TreeSampler(os.getpid(), interval=0.5) as sampler:
        timing = bench_job(run, points=args.points, length=args.length)
    res = result["run"]
    if not res.complete:
        raise SystemExit(f"the job did not complete: {res.aborted or 'shards left uncommitted'}")
    files, size = folder_size(out)
    print(table([
        ["points", f"{timing['points']:,}", f"{res.rows:,} rows x 4 fields, {res.records} series"],
        ["wall time", f"{timing['seconds']:.1f} s", "synth.run, Ray start-up included"],
        ["points/s", f"{timing['points_per_s']:,.0f}", "end to end"],
        ["peak RSS", mib(sampler.peak_rss), "summed over the driver and every Ray process"],
        ["peak PSS", mib(sampler.peak_pss), "shared pages counted once"],
        ["CPU", f"{sampler.cpu_s:,.0f} s", "all processes"],
        ["written", f"{files:,} files, {size / 2**20:,.0f} MiB", "Parquet, zstd"],
    ], ["measure", "value", ""]))
    by = sampler.cpu_by_process()
    print("CPU s by process: " + ", ".join(f"{k} {v:.0f}" for k, v in by.items() if v >= 1))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "timeseries_job.json").write_text(json.dumps({
        **timing, "rows": res.rows, "series": res.records, "peak_rss": sampler.peak_rss, "peak_pss": sampler.peak_pss,
        "cpu_s": sampler.cpu_s, "cpu_by_process": by, "files": files, "bytes": size, "wall_s_run": res.wall_s,
    }, indent=2))


if __name__ == "__main__":
    main()
