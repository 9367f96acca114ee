"""Running one shard: plain async code (no Ray) that turns a shard's units into a records table and a
dead-letter table. A worker actor wraps this; tests call it directly."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from synth.engine.plan import Shard
from synth.errors import BudgetExceeded, JobStopped, NoKeysLeft, SynthError
from synth.generators.base import GenContext, Generator, Unit, UnitResult
from synth.records import DEAD_SCHEMA, ENVELOPE, ENVELOPE_COLUMNS, Completion, DeadLetter, Request, envelope_row

# Errors that stop the job rather than become dead letters: the shard is not committed, so a later
# run (with more budget, or fixed keys) makes those units instead of skipping them.
ABORTING = (BudgetExceeded, NoKeysLeft, JobStopped)


class _Routed:
    """The generator's LLM for its units: each answer carries the route its request asked for (the
    records' ``route`` column), unless a layer below has said already."""

    __slots__ = ("llm",)

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    async def complete(self, request: Request) -> Completion:
        c: Completion = await self.llm.complete(request)
        if not c.route:
            c.route = request.model
        return c

    def __getattr__(self, name: str) -> Any:  # embed and anything else, as they are
        return getattr(self.llm, name)


@dataclass
class ShardOutcome:
    shard: int
    records: pa.Table | None
    dead: pa.Table | None
    stats: dict[str, Any] = field(default_factory=dict)
    aborted: str | None = None  # the reason, when an aborting error stopped the shard


def _rows_table(rows: list[dict[str, Any]], schema: pa.Schema | None) -> pa.Table:
    """One table from the dict rows of many units, built in one call (per-unit tables cost more
    than the rows themselves). Without a schema, columns are the union of the rows' keys."""
    if schema is not None:
        return pa.Table.from_pylist(rows, schema=schema)
    names = list(dict.fromkeys(k for r in rows for k in r))
    return pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in names})


def _payload(units: list[tuple[Unit, UnitResult]], schema: pa.Schema | None) -> tuple[pa.Table, list[int]]:
    """All payload rows in unit order, and how many rows each unit gave."""
    tables: list[pa.Table] = []
    pending: list[dict[str, Any]] = []
    counts: list[int] = []
    for _, res in units:
        rows = res.rows
        if isinstance(rows, pa.Table):
            if pending:
                tables.append(_rows_table(pending, schema))
                pending = []
            tables.append(rows)
            counts.append(rows.num_rows)
            continue
        if isinstance(rows, dict):
            rows = [rows]
        pending.extend(rows)
        counts.append(len(rows))
    if pending or not tables:
        tables.append(_rows_table(pending, schema))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    clash = ENVELOPE_COLUMNS & set(table.column_names)
    return (table.drop_columns(sorted(clash)) if clash else table), counts


def records_table(
    units: list[tuple[Unit, UnitResult]], job: str, kind: str, schema: pa.Schema | None
) -> pa.Table | None:
    """Envelope columns first, payload columns after, one row per payload row, in unit order.

    Built column by column: one short array per envelope field (a value per unit), repeated to
    the units' row counts with one ``take``, so a unit of a million rows costs a few copies."""
    if not units:
        return None
    now = datetime.now(timezone.utc)
    payload, counts = _payload(units, schema)
    envs = [envelope_row(unit, job, kind, res.calls, now) for unit, res in units]
    cols: list[pa.Array] = [pa.array([e[f.name] for e in envs], type=f.type) for f in ENVELOPE]
    if any(c != 1 for c in counts):
        index = pa.array(np.repeat(np.arange(len(counts), dtype=np.int64), counts))
        cols = [c.take(index) for c in cols]
    return pa.Table.from_arrays(cols + payload.columns, schema=pa.schema(list(ENVELOPE) + list(payload.schema)))


def dead_table(rows: list[dict[str, Any]]) -> pa.Table | None:
    return pa.Table.from_pylist(rows, schema=DEAD_SCHEMA) if rows else None


async def run_shard(
    generator: Generator,
    ctx: GenContext,
    shard: Shard,
    fp: str,
    *,
    concurrency: int = 256,
    on_unit: Callable[[bool], None] | None = None,
) -> ShardOutcome:
    """Make every unit of a shard: each ends as payload rows or as a dead letter with its reason."""
    results: dict[int, UnitResult | BaseException] = {}
    abort: list[str] = []
    units = list(shard.units(fp, ctx.seed))
    pending = iter(units)
    ctx = replace(ctx, llm=_Routed(ctx.llm))

    async def lane() -> None:
        # ``concurrency`` lanes take units in order: no task or semaphore per unit
        for unit in pending:
            if abort:
                return
            try:
                results[unit.index] = await generator.generate(unit, ctx)
            except ABORTING as e:
                abort.append(f"{e.kind}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - every failure becomes a dead letter with its reason
                results[unit.index] = e
            if on_unit is not None:  # live progress: units as they finish, not shards as they commit
                on_unit(not isinstance(results[unit.index], BaseException))

    await asyncio.gather(*(lane() for _ in range(max(1, min(concurrency, len(units))))))
    if abort:
        return ShardOutcome(shard.index, None, None, {}, aborted=abort[0])

    ok: list[tuple[Unit, UnitResult]] = []
    dead: list[dict[str, Any]] = []
    extra: Counter[str] = Counter()
    now = datetime.now(timezone.utc)
    prompt = completion = 0
    cost = 0.0
    for unit in units:
        res = results[unit.index]
        if isinstance(res, BaseException):
            kind = res.kind if isinstance(res, SynthError) else "internal"
            msg = str(res) if isinstance(res, SynthError) else f"{type(res).__name__}: {res}"
            dead.append(
                DeadLetter(
                    request_id=unit.id,
                    job=ctx.job,
                    shard=shard.index,
                    generator=generator.kind,
                    error_kind=kind,
                    message=msg[:2000],
                    attempts=getattr(res, "attempts", 0) or 0,
                    created_at=now,
                ).model_dump()
            )
            continue
        ok.append((unit, res))
        for c in res.calls:
            prompt += c.usage.prompt_tokens
            completion += c.usage.completion_tokens
            cost += c.cost_usd
        if res.stats:
            extra.update(res.stats)
    records = records_table(ok, ctx.job, generator.kind, generator.arrow_schema())
    stats = {
        "units": len(units),
        "records": len(ok),
        "rows": records.num_rows if records is not None else 0,
        "dead_letters": len(dead),
        "dead_by_kind": dict(Counter(d["error_kind"] for d in dead)),
        # one message per kind, for the run summary's reasons
        "dead_examples": {d["error_kind"]: d["message"][:300] for d in reversed(dead)},
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": cost,
        "generator_stats": dict(extra),
    }
    return ShardOutcome(shard.index, records, dead_table(dead), stats)


async def make_shard(
    generator: Generator,
    base: GenContext,
    shard: Shard,
    fp: str,
    *,
    concurrency: int,
    on_unit: Callable[[bool], None] | None = None,
) -> ShardOutcome:
    """:func:`run_shard` with the shard's own claims: a key is claimed once within a shard, so the
    same shard makes the same records on any worker and in any executor."""
    seen: set[str] = set()

    async def claim(key: str) -> bool:
        if key in seen:
            return False
        seen.add(key)
        return True

    return await run_shard(generator, replace(base, claims=claim), shard, fp, concurrency=concurrency, on_unit=on_unit)
