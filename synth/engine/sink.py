"""The Ray Data datasink: each input row is one finished piece of a shard (its records and dead
letters as Arrow IPC bytes), published and committed by :class:`~synth.engine.publish.Publisher`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ray.data import Datasink
from ray.data.block import BlockAccessor

from synth.engine.publish import NULL_PARTITION, Publisher, from_ipc, split_partitions, to_ipc
from synth.engine.storage import Storage


class ShardSink(Publisher, Datasink):
    """Publishes and commits shards; returns a summary per shard to the driver."""

    def get_name(self) -> str:
        return "SynthShards"

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[dict[str, Any]]:
        storage = Storage(self.out)
        done: list[dict[str, Any]] = []
        for block in blocks:
            row: Any
            for row in BlockAccessor.for_block(block).iter_rows(public_row_format=False):
                shard = int(row["shard"])
                if row["aborted"]:
                    done.append({"shard": shard, "aborted": row["aborted"]})
                    continue
                stats = json.loads(row["stats"])
                piece = json.loads(row["piece"]) if "piece" in row and row["piece"] else None
                done.append(self.publish(storage, shard, from_ipc(row["records"]), from_ipc(row["dead"]), stats, piece))
        return done


__all__ = ["NULL_PARTITION", "ShardSink", "from_ipc", "split_partitions", "to_ipc"]
