"""The outputs of ``synth bench``: a markdown report, a JSON file and PNG plots."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_sections import Section


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(head: dict[str, Any], sections: list[Section], plots: list[Path]) -> str:
    out = [
        "# synth bench",
        "",
        f"- command: `{head['command']}`",
        f"- machine: {head['cpus']} CPUs, {head['ram_gib']:.0f} GiB RAM; load average {head['load_before']} before, "
        f"{head['load_after']} after; {head['started']} to {head['ended']} UTC ({head['seconds']:.0f} s)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in head["versions"].items()),
        "",
        "## Targets",
        "",
        md_table(
            ["section", "measure", "value", "target", ""],
            [
                [s.number, t["what"], t["value"], t["target"], "met" if t["met"] else "**missed**"]
                for s in sections
                for t in s.targets
            ],
        ),
    ]
    for s in sections:
        out += ["", f"## {s.number}. {s.title}", "", md_table(s.headers, s.rows)]
        out += [""] + [f"- {n}" for n in s.notes] if s.notes else []
    if plots:
        out += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(out) + "\n"


def write_json(path: Path, head: dict[str, Any], sections: list[Section]) -> None:
    doc = {"header": head, "sections": [asdict(s) for s in sections]}
    path.write_text(json.dumps(doc, indent=2, default=str))


def plots(folder: Path, sections: list[Section]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {s.number: s for s in sections}
    made: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        made.append(folder / name)

    if 1 in by:
        pts = by[1].data["points"]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([p["keys"] for p in pts], [p["steady"] for p in pts], "o-", label="steady window")
        ax.plot([p["keys"] for p in pts], [p["end_to_end"] for p in pts], "s--", label="end to end (start-up included)")
        ax.axhline(0.97, color="black", linestyle=":", label="target 0.97")
        ax.set_xscale("log", base=2)
        ax.set_xticks([p["keys"] for p in pts], [str(p["keys"]) for p in pts])
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("keys (per-key RPM limit)")
        ax.set_ylabel("achieved / ceiling")
        ax.set_title("Ceiling efficiency vs keys")
        ax.legend(loc="lower left")
        save(fig, "efficiency_vs_keys.png")
    if 3 in by:
        pts = by[3].data["points"]
        sizes = [p["records"] for p in pts]
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, style in (
            ("baseline", "o-"),
            ("baseline, openai SDK", "o:"),
            ("synth (auto)", "s-"),
            ("synth --executor local", "^--"),
            ("synth --executor ray", "v--"),
        ):
            # (reports from before the SDK baseline lack it; --quick skips one executor)
            if all(name in p["runs"] and not p["runs"][name].get("skipped") for p in pts):
                ax.plot(sizes, [p["runs"][name]["records_per_s"] for p in pts], style, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("records (end to end, start-up included)")
        ax.set_ylabel("records/s")
        ax.set_ylim(bottom=0)
        ax.set_title("Records/s vs size: synth against one-process asyncio loops")
        ax.legend()
        save(fig, "records_per_s_vs_size.png")
    if 2 in by:
        pts = by[2].data["points"]
        fig, ax = plt.subplots(figsize=(7, 4))
        lat = [p["latency_s"] for p in pts]
        ax.plot(lat, [p["in_flight"] for p in pts], "o-", label="in flight at the simulator")
        ax.plot(lat, [p["little"] for p in pts], "k:", label="Little's law (rate x latency)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("latency s")
        ax.set_ylabel("requests in flight")
        ax.set_title("In flight vs latency at a fixed ceiling")
        ax.legend()
        save(fig, "inflight_vs_latency.png")
    if 6 in by:
        pts = by[6].data["points"]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([p["nodes"] for p in pts], [p["records_per_s"] for p in pts], "o-")
        ax.set_xticks([p["nodes"] for p in pts])
        ax.set_xlabel("local Ray nodes (same 2 cores)")
        ax.set_ylabel("records/s end to end")
        ax.set_ylim(bottom=0)
        ax.set_title("Scale-out on one 2-core machine")
        save(fig, "scale_out.png")
    return made
