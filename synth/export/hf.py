"""Records as a Hugging Face ``datasets`` folder (the ``save_to_disk`` layout, for
``datasets.load_from_disk``), optionally pushed to the Hub.

Batches are streamed into an Arrow file on local disk, which ``datasets`` memory-maps and saves in
its own layout: memory stays flat, disk holds the data twice while the export runs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from synth.errors import ConfigError
from synth.export.target import Target


def _datasets() -> tuple[Any, Any]:
    try:
        import datasets
        from datasets.arrow_writer import ArrowWriter
    except ImportError:
        raise ConfigError("--format hf needs the datasets package; pip install 'synth[hf]'") from None
    return datasets, ArrowWriter


def write_hf(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    target: Target | None,
    *,
    push: str | None = None,
    private: bool | None = None,
) -> int:
    """Write the folder to ``target`` (when given) and push to the Hub repo ``push`` (when given;
    the token comes from ``HF_TOKEN`` or ``huggingface-cli login``)."""
    datasets, ArrowWriter = _datasets()
    datasets.disable_progress_bars()  # the export prints its own one-line result
    features = datasets.Features.from_arrow_schema(schema)
    n = 0
    with tempfile.TemporaryDirectory(prefix="synth-hf-") as work:
        staged = os.path.join(work, "records.arrow")
        writer = ArrowWriter(features=features, path=staged)
        try:
            for b in batches:
                writer.write_table(pa.Table.from_batches([b], schema=schema))
                n += b.num_rows
            if n == 0:
                writer.write_table(schema.empty_table())
            writer.finalize()
        finally:
            writer.close()
        ds = datasets.Dataset.from_file(staged, in_memory=False)
        if target is not None:
            with target.folder() as folder:
                ds.save_to_disk(folder)
        if push:
            ds.push_to_hub(push, private=private)
        del ds
    return n
