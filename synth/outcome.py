"""How a run ends for its user: the exit code it earned, the line that says why, and the summary
table (records, dead letters and their top reasons, money spent and saved, keys lost)."""

from __future__ import annotations

from typing import Any

# exit codes of `synth run`, one per way a run can end
EXIT = {"ok": 0, "incomplete": 1, "config": 2, "storage": 3, "budget": 4, "no_keys": 5, "dead_letters": 6, "stopped": 7}


def outcome(res: Any) -> tuple[int, str]:
    """The exit code a run earned and, when it is not 0, the one line that says why."""
    stats = res.stats
    first = stats.get("all_failed")
    if res.aborted:
        kind = (
            "budget"
            if res.aborted.startswith("budget")
            else "stopped"
            if res.aborted.startswith("stopped")
            else "no_keys"
        )
        reason = res.aborted.split(": ", 1)[1] if ": " in res.aborted else res.aborted
        why = f"stopped early ({kind.replace('_', ' ')}): {reason}; everything made is committed, fix it and run again to finish"
        return EXIT[kind], f"{first}; {why}" if first else why
    if not res.complete:
        left = res.shards_total - stats.get("shards", {}).get("committed", 0)
        return EXIT["incomplete"], f"{left} shards are not committed; run again to resume"
    limit = stats.get("max_dead_letter_rate", 0.01)
    if res.planned_units and res.dead_letters / res.planned_units > limit:
        share = res.dead_letters / res.planned_units
        why = (
            f"{res.dead_letters:,} of {res.planned_units:,} units are dead letters ({share:.1%}, above "
            f"output.max_dead_letter_rate {limit:g}); fix the cause, then run again with --retry-failed"
        )
        return EXIT["dead_letters"], f"{first}; {why}" if first else why
    return EXIT["ok"], ""


def summary_rows(res: Any) -> list[tuple[str, str]]:
    stats = res.stats
    req = stats.get("requests") or {}
    est = stats.get("cost_estimate")
    ans = stats.get("answers") or {}
    keys = stats.get("keys") or {}
    rows = [
        ("output", res.output),
        ("records", f"{res.records:,} ({res.rows:,} rows)"),
        ("dead letters", f"{res.dead_letters:,}"),
        *[(f"  {r['kind']}", f"{r['count']:,}: {r['example'][:160]}") for r in stats.get("failure_reasons") or []],
        ("shards", f"{res.shards_written} written, {res.shards_skipped} already committed, {res.shards_total} total"),
        ("tokens", f"{res.prompt_tokens:,} prompt + {res.completion_tokens:,} completion"),
        (
            "cost",
            f"${res.cost_usd:.4f}" + (f" (offline sim; about ${est['usd']:.4f} on {est['model']})" if est else ""),
        ),
        ("429s", f"{req.get('rate_limited', 0):,.0f}"),
    ]
    if req.get("requests"):  # what the providers were paid this run, calls of unfinished shards included
        rows.append(("spent this run", f"${req.get('cost_usd', 0):.4f} on {req.get('requests', 0):,.0f} calls"))
    if ans.get("journal_hits") or ans.get("cache_hits"):
        rows.append(
            (
                "not bought again",
                f"{ans['journal_hits']:,} answers replayed from the job's journal, "
                f"{ans['cache_hits']:,} from the cache (${ans['saved_usd']:.4f} saved)",
            )
        )
    if keys.get("disabled") or keys.get("cooled_over_60s"):
        rows.append(
            (
                "keys",
                f"disabled: {', '.join(keys.get('disabled') or []) or 'none'}; cooled over 60 s: "
                f"{', '.join(keys.get('cooled_over_60s') or []) or 'none'}",
            )
        )
    if stats.get("gateways_replaced") or stats.get("rounds", 1) > 1:  # infrastructure failed and the run carried on
        g, n = stats.get("gateways_replaced", 0), stats.get("rounds", 1)
        rows.append(
            (
                "recovered",
                f"{g} gateway{'' if g == 1 else 's'} replaced, {n} pass{'' if n == 1 else 'es'} over the shards",
            )
        )
    rows += [("wall time", f"{res.wall_s:.1f} s"), ("complete", "yes" if res.complete else "no")]
    return rows


def print_summary(res: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"synth run: {res.job}", show_header=False)
    for k, v in summary_rows(res):
        t.add_row(k, v)
    Console(stderr=True).print(t)


__all__ = ["EXIT", "outcome", "print_summary", "summary_rows"]
