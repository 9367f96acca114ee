"""Publishing a finished piece of a shard: its records and dead letters as hive-partitioned files
in the output's format (Parquet, JSONL, JSON or CSV: see :mod:`synth.engine.formats`), then the
commit entry in the manifest; until the commit entry exists, resume treats the piece as not done.
Plain code, no Ray: the Ray Data datasink (:mod:`synth.engine.sink`) and the single-process
executor (:mod:`synth.engine.local`) both publish through it."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synth.engine.formats import SCHEMA_KEY, TYPED, encode, schema_of_text, schema_text, unify
from synth.engine.manifest import DEAD, Manifest, merge_entry, piece_name
from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.spec import OutputSpec

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
PUBLISH_THREADS = 4  # files of one shard encoded and written side by side; more only adds contention
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
_pool: ThreadPoolExecutor | None = None


def _publisher() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="synth-publish")
    return _pool


def to_ipc(table: pa.Table | None) -> bytes:
    """A finished shard as Arrow IPC stream bytes, LZ4-compressed: the envelope columns repeat a
    few values, so a shard takes a fraction of the room in Ray's object store (a quarter for a
    million-row time series) and is not spilled to disk."""
    if table is None:
        return b""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as w:
        w.write_table(table)
    return sink.getvalue()


def from_ipc(data: bytes) -> pa.Table | None:
    if not data:
        return None
    return pa.ipc.open_stream(data).read_all()


def _partition_value(v: Any) -> str:
    return NULL_PARTITION if v is None else quote(str(v), safe="")


def _group_codes(table: pa.Table, cols: list[str]) -> np.ndarray:
    """A group number per row: equal partition values, equal number (null is a value too)."""
    codes = np.zeros(table.num_rows, dtype=np.int64)
    for i, c in enumerate(cols):
        enc = pc.dictionary_encode(table[c].combine_chunks(), null_encoding="encode")
        codes = codes * len(enc.dictionary) + enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if i < len(cols) - 1:  # renumber densely so that many columns cannot overflow
            codes = np.unique(codes, return_inverse=True)[1].astype(np.int64).reshape(-1)
    return codes


def split_partitions(table: pa.Table, cols: list[str]) -> list[tuple[str, pa.Table]]:
    """(relative folder, rows without the partition columns) per distinct partition value, in
    folder order; rows keep their order within a partition. One stable sort, then slices."""
    if not cols:
        return [("", table)]
    if table.num_rows == 0:
        return []
    codes = _group_codes(table, cols)
    order = np.argsort(codes, kind="stable")
    ranked = codes[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    stops = np.r_[starts[1:], len(ranked)]
    keys = table.select(cols).take(pa.array(order[starts])).to_pylist()
    rest = table.drop_columns(cols)
    if len(starts) > 1 and np.any(order[1:] < order[:-1]):
        rest = rest.take(pa.array(order))
    groups = sorted(zip(keys, starts.tolist(), stops.tolist()), key=lambda g: tuple(str(g[0][c]) for c in cols))
    return [
        ("/".join(f"{c}={_partition_value(key[c])}" for c in cols), rest.slice(start, stop - start))
        for key, start, stop in groups
    ]


class Publisher:
    """Publishes and commits the pieces of shards of one output."""

    def __init__(self, out: OutputSpec, partition_by: list[str], extra: dict[str, Any] | None = None) -> None:
        self.out = out
        self.partition_by = partition_by
        self.extra = extra or {}

    def publish(
        self,
        storage: Storage,
        shard: int,
        records: pa.Table | None,
        dead: pa.Table | None,
        stats: dict[str, Any],
        piece: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Publish one piece of a shard (``piece``: see :meth:`Shard.piece`; None is a whole shard)
        in files of its own, then commit the shard's new entry. A piece that retried the shard's
        dead letters replaces their files: the old ones are removed only after the commit."""
        manifest = Manifest(storage)
        piece = piece or {"part": 0, "start": None, "stop": None, "retry": False}
        gen = int(piece.get("part", 0))
        if manifest.entry(shard, gen) is not None:  # an earlier attempt of this write committed it
            return {"shard": shard, **stats}
        base = manifest.entry(shard, gen - 1) if gen else None
        if gen and base is None:
            raise StorageError(
                f"{storage.uri}: shard {shard} has no commit entry of generation {gen - 1} to add to; run the job again"
            )
        fmt = self.out.format
        parts: list[tuple[str, pa.Table, str]] = []  # (file, rows, format)
        name = piece_name(shard, gen)
        typed: dict[str, Any] = {}
        if records is not None and records.num_rows:
            cols = [c for c in self.partition_by if c in records.column_names]
            if fmt in TYPED:  # text keeps no types: the entry records them (with the shard's earlier pieces')
                schemas = [records.drop_columns(cols).schema]
                if base and base.get(SCHEMA_KEY):
                    schemas.insert(0, schema_of_text(base[SCHEMA_KEY]))
                try:
                    typed[SCHEMA_KEY] = schema_text(unify(schemas))
                except (pa.ArrowInvalid, pa.ArrowTypeError):  # types that cannot merge: this piece's
                    typed[SCHEMA_KEY] = schema_text(schemas[-1])
            for folder, part in split_partitions(records, cols):
                rel = f"data/{folder}/{name}.{fmt}" if folder else f"data/{name}.{fmt}"
                parts.append((rel, part, fmt))
        if dead is not None and dead.num_rows:
            parts.append((f"{DEAD}{name}.parquet", dead, "parquet"))
        files = [rel for rel, _, _ in parts]
        superseded = [f for f in base["files"] if f.startswith(DEAD)] if base and piece.get("retry") else []
        manifest.intend(shard, files, gen=gen, remove=superseded)

        def put(item: tuple[str, pa.Table, str]) -> int:
            rel, table, fmt = item
            data = encode(table, fmt, self.out.compression)
            storage.write_bytes(rel, data)
            return len(data)

        # a shard of many partitions is many small files: encode and upload them side by side
        # (pyarrow and the object-store clients release the GIL while they work)
        if len(parts) > 1:
            futures = [_publisher().submit(put, p) for p in parts]
            wait(futures)  # on a failure too: no write of this piece lands after the error is raised
            sizes = [f.result() for f in futures]
        else:
            sizes = [put(p) for p in parts]
        dead_bytes = sum(n for (rel, _, _), n in zip(parts, sizes) if rel.startswith(DEAD))
        entry = merge_entry(
            base, piece, {"files": files, "bytes": sum(sizes), "dead_bytes": dead_bytes, **stats, **typed}
        )
        manifest.commit(shard, entry, gen=gen, remove=superseded)
        return {"shard": shard, **stats}


__all__ = ["Publisher", "from_ipc", "split_partitions", "to_ipc"]
