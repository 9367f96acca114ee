"""Records into a SQL table through SQLAlchemy (any database it has a driver for; an SQLite file by
default). Rows go in batch by batch into a table of a temporary name, which is renamed to the
table asked for only when every row is in: a failed export leaves no table, and no SQLite file
that was not there before."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from synth.errors import ConfigError, StorageError
from synth.export.rows import flat_schema, flatten

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def sql_url(to: str) -> str:
    """A SQLAlchemy URL: ``to`` itself when it is one, else an SQLite file at that path."""
    if re.match(r"^[a-z][a-z0-9+]*://", to) and not to.startswith(("file://", "s3://", "gs://")):
        return to
    if "://" in to and not to.startswith("file://"):
        raise ConfigError(f"--to {to}: sql needs a SQLAlchemy URL (sqlite:///x.db, postgresql://...) or a local path")
    return "sqlite:///" + os.path.abspath(to.removeprefix("file://"))


def _column_type(t: pa.DataType) -> Any:
    import sqlalchemy as sa

    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_integer(t):
        return sa.BigInteger()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return sa.Float()
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if pa.types.is_date(t):
        return sa.Date()
    return sa.Text()  # strings, and nested values as JSON text


def _sqlite_file(url: str) -> str | None:
    path = url.removeprefix("sqlite:///")
    return path if url.startswith("sqlite:///") and path and path != ":memory:" else None


def write_sql(batches: Iterable[pa.RecordBatch], schema: pa.Schema, to: str, *, table: str, overwrite: bool) -> int:
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    if not _NAME.match(table):
        raise ConfigError(f"--table {table!r}: use letters, digits and _ (not starting with a digit)")
    url = sql_url(to)
    sqlite = _sqlite_file(url)
    created_file = sqlite is not None and not os.path.exists(sqlite)
    try:
        engine = sa.create_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise ConfigError(
            f"--to {to}: cannot use this database URL ({type(e).__name__}); check it and its driver"
        ) from None
    flat = flat_schema(schema)
    tmp_name = f"{table}__tmp_{uuid.uuid4().hex[:8]}"
    meta = sa.MetaData()
    tmp = sa.Table(tmp_name, meta, *[sa.Column(f.name, _column_type(f.type)) for f in flat])
    n = 0
    try:
        if sa.inspect(engine).has_table(table) and not overwrite:
            raise ConfigError(f"table {table} exists in {_safe(url)}; use --overwrite to replace it, or --table")
        meta.create_all(engine)
        for b in batches:
            rows = flatten(b, flat).to_pylist()
            with engine.begin() as conn:
                conn.execute(tmp.insert(), rows)
            n += len(rows)
        q = engine.dialect.identifier_preparer.quote
        with engine.begin() as conn:
            if overwrite:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {q(table)}"))
            conn.execute(sa.text(f"ALTER TABLE {q(tmp_name)} RENAME TO {q(table)}"))
    except BaseException as e:
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {engine.dialect.identifier_preparer.quote(tmp_name)}"))
        except SQLAlchemyError:
            pass
        engine.dispose()
        if created_file and sqlite:
            for suffix in ("", "-journal", "-wal", "-shm"):
                if os.path.exists(sqlite + suffix):
                    os.remove(sqlite + suffix)
        if isinstance(e, SQLAlchemyError):
            raise StorageError(f"{_safe(url)}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        raise
    engine.dispose()
    return n


def _safe(url: str) -> str:
    """The URL without its password."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is named without its details
        return "the database"
