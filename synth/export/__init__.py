"""``synth export``: a job's committed records into the formats other tools take, streamed batch by
batch from any fsspec URI to any (memory stays flat whatever the dataset's size).

| format | what | ``--to`` |
|---|---|---|
| ``jsonl`` | one JSON object per record, nested fields nested | a file |
| ``csv`` | one row per record, nested fields as JSON strings | a file |
| ``sql`` | a table through SQLAlchemy | a SQLAlchemy URL, or a path (an SQLite file) |
| ``hf`` | a Hugging Face ``datasets`` folder (``load_from_disk``); ``--push`` to the Hub | a folder |
| ``openai`` | OpenAI chat fine-tuning JSONL, validated line by line (chat records) | a file |
| ``sharegpt`` | ``{"conversations": [{"from", "value"}]}`` per line (chat records) | a file |
| ``messages`` | ``{"id", "messages"}`` per line (chat records) | a file |

Dead letters are never exported. Envelope columns (model, provider, tokens, cost ...) are left out
unless ``with_envelope``; the record ``id`` is always kept (except in ``openai`` and ``sharegpt``).
Files are compressed when the name asks for it (``.gz``, ``.zst``, ``.bz2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from synth.dataset import Output, batches
from synth.errors import ConfigError
from synth.records import ENVELOPE_COLUMNS

FORMATS = ("jsonl", "csv", "sql", "hf", "openai", "sharegpt", "messages")
CHAT_FORMATS = ("openai", "sharegpt", "messages")
BATCH_ROWS = 2048


@dataclass
class ExportResult:
    format: str
    to: str
    records: int  # lines or rows written
    skipped: int = 0  # chat records that were not valid examples of the format
    first_skip: str | None = None
    pushed: str | None = None

    def line(self) -> str:
        where = self.to + (f" and the Hub repo {self.pushed}" if self.pushed else "")
        msg = f"exported {self.records:,} records as {self.format} to {where}"
        if self.skipped:
            msg += f"; skipped {self.skipped:,} that are not valid {self.format} examples (first: {self.first_skip})"
        return msg


def _columns(schema: pa.Schema, with_envelope: bool) -> list[str]:
    return [n for n in schema.names if with_envelope or n == "id" or n not in ENVELOPE_COLUMNS]


def export(
    output: str,
    format: str,  # noqa: A002 - the CLI's option name
    to: str | None,
    *,
    overwrite: bool = False,
    with_envelope: bool = False,
    table: str = "records",
    push: str | None = None,
    private: bool | None = None,
    batch_rows: int = BATCH_ROWS,
    storage: dict[str, Any] | None = None,
    to_storage: dict[str, Any] | None = None,
) -> ExportResult:
    """Export the committed records of ``output`` as ``format`` to ``to`` (see the module doc)."""
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r} is not known; use one of {', '.join(FORMATS)}")
    if to is None and not (format == "hf" and push):
        raise ConfigError("--to is missing; give the file, folder or database URL to write")
    if batch_rows < 1:
        raise ConfigError("--batch-rows must be at least 1")
    out = Output(output, storage)
    ds = out.dataset()
    schema = ds.schema
    if format in CHAT_FORMATS:
        from synth.export.chat import is_chat, write_chat

        if not (is_chat(schema) or (not out.data_files and out.generator == "conversation")):
            kind = out.generator or "non-chat"
            raise ConfigError(
                f"--format {format} needs chat records (a messages column, as the conversation generator "
                f"writes); {out.uri} holds {kind} records: use --format jsonl, csv, sql or hf"
            )
        extra = [n for n in _columns(schema, True) if n in ENVELOPE_COLUMNS and n != "id"] if with_envelope else []
        cols = ["id", "messages", *extra]
        target = _target(to, overwrite, to_storage)
        with target.file() as f:
            chat_rows = batches(ds, cols, batch_rows) if out.data_files else iter(())
            n, skipped, first = write_chat(
                format, chat_rows, f, spec=out.spec, extra=extra if format == "messages" else []
            )
            if skipped and not n:  # raised inside the block: the empty file is not published
                raise ConfigError(f"no record of {out.uri} is a valid {format} example (first: {first})")
        return ExportResult(format, to or "", n, skipped, first)

    cols = _columns(schema, with_envelope)
    sub = pa.schema([schema.field(c) for c in cols])
    rows = batches(ds, cols, batch_rows) if out.data_files else iter(())
    if format == "sql":
        from synth.export.sql import write_sql

        assert to is not None
        return ExportResult(format, to, write_sql(rows, sub, to, table=table, overwrite=overwrite))
    if format == "hf":
        from synth.export.hf import write_hf

        target = _target(to, overwrite, to_storage) if to else None
        n = write_hf(rows, sub, target, push=push, private=private)
        return ExportResult(format, to or "", n, pushed=push)
    from synth.export.rows import write_csv, write_jsonl

    target = _target(to, overwrite, to_storage)
    with target.file() as f:
        n = write_jsonl(rows, f) if format == "jsonl" else write_csv(rows, f, sub)
    return ExportResult(format, to or "", n)


def _target(to: str | None, overwrite: bool, storage: dict[str, Any] | None) -> Any:
    from synth.export.target import Target

    if not to:
        raise ConfigError("--to is missing; give the file or folder to write")
    return Target(to, overwrite=overwrite, storage=storage)


__all__ = ["CHAT_FORMATS", "FORMATS", "ExportResult", "export"]
