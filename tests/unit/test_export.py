"""Reading and exporting outputs without Ray: outputs laid out by the real manifest code (commit
entries, generations, partitions, dead letters, uncommitted leftovers), read back through
synth.open, inspect and export."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import synth
from synth.engine.manifest import Manifest, piece_name
from synth.engine.storage import Storage
from synth.errors import ConfigError, StorageError
from synth.export import export
from synth.export.chat import openai_problem, to_sharegpt
from synth.export.target import Target
from synth.inspect import _Distinct, inspect
from synth.spec import OutputSpec

TS = pa.timestamp("us", tz="UTC")


def _parquet(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def records(start: int, n: int, *, score_type: pa.DataType = pa.int64(), tokens: int = 10) -> pa.Table:
    ids = [f"fp-{i:010d}" for i in range(start, start + n)]
    return pa.table(
        {
            "id": ids,
            "model": ["sim:m"] * n,
            "prompt_tokens": [tokens] * n,
            "created_at": pa.array([0] * n, pa.int64()).cast(TS),
            "name": [f"name {i}" if i % 5 else None for i in range(start, start + n)],
            "score": pa.array([i % 7 for i in range(start, start + n)]).cast(score_type)
            if score_type != pa.null()
            else pa.nulls(n),
            "record": [{"tags": ["a", "b"][: i % 3], "n": i} for i in range(start, start + n)],
        }
    )


def write_output(root, pieces, *, count, shard_size=10, dead=None, generator="structured"):
    """``pieces``: (shard, gen, {partition folder: table}) committed in order; ``dead``: shard ->
    dead-letter table. Files and entries as the datasink writes them."""
    st = Storage(OutputSpec(uri=str(root)))
    spec = {
        "name": "t",
        "count": count,
        "shard_size": shard_size,
        "format": "parquet",
        "generator": {"kind": generator},
    }
    st.write_bytes("_manifest/job.json", json.dumps({"fingerprint": "fp", "spec": spec}).encode())
    m = Manifest(st)
    for shard, gen, parts in pieces:
        base = m.entry(shard, gen - 1) if gen else None
        files = list(base["files"]) if base else []
        rows = sum(t.num_rows for t in parts.values())
        for folder, t in parts.items():
            rel = f"data/{folder + '/' if folder else ''}{piece_name(shard, gen)}.parquet"
            st.write_bytes(rel, _parquet(t))
            files.append(rel)
        d = (dead or {}).get(shard) if gen == 0 else None
        if d is not None:
            rel = f"dead_letters/{piece_name(shard, 0)}.parquet"
            st.write_bytes(rel, _parquet(d))
            files.append(rel)
        nd = d.num_rows if d is not None else 0
        prev = base or {"records": 0, "rows": 0, "prompt_tokens": 0, "cost_usd": 0.0, "stop": shard * shard_size}
        entry = {
            "files": files,
            "start": shard * shard_size,
            "stop": prev["stop"] + rows + nd,
            "records": prev["records"] + rows,
            "rows": prev["rows"] + rows,
            "dead_letters": nd,
            "dead_by_kind": {"malformed_output": nd} if nd else {},
            "prompt_tokens": prev["prompt_tokens"] + 10 * rows,
            "completion_tokens": 0,
            "cost_usd": prev["cost_usd"] + 0.001 * rows,
            "bytes": 0,
        }
        m.commit(shard, entry, gen=gen)
    return st


def dead_letters(shard: int, n: int, msg: str = "schema says no") -> pa.Table:
    return pa.table(
        {
            "request_id": [f"fp-{shard * 10 + 9 - i:010d}" for i in range(n)],
            "job": ["t"] * n,
            "shard": pa.array([shard] * n, pa.int32()),
            "generator": ["structured"] * n,
            "error_kind": ["malformed_output"] * n,
            "message": [msg] * n,
            "attempts": pa.array([3] * n, pa.int32()),
            "created_at": pa.array([0] * n, pa.int64()).cast(TS),
        }
    )


@pytest.fixture
def unfinished(tmp_path):
    """Shards 0 (8 records, 2 dead) and 1 (a generation 1 that widened the 'score' column from
    null) committed; shard 2 published a file but was killed before its commit; a stray temporary."""
    root = tmp_path / "out"
    st = write_output(
        root,
        [
            (0, 0, {"": records(0, 8)}),
            (1, 0, {"": records(10, 5, score_type=pa.null())}),
            (1, 1, {"": records(15, 5)}),
        ],
        count=30,
        dead={0: dead_letters(0, 2)},
    )
    st.write_bytes(f"data/{piece_name(2)}.parquet", _parquet(records(20, 10)))  # uncommitted
    (root / "data" / ".tmp-0123abcd").write_bytes(b"half a file")
    return root


def test_open_reads_only_committed_records_with_one_schema(unfinished):
    t = synth.open(str(unfinished)).to_table()
    ids = t["id"].to_pylist()
    assert sorted(ids) == [f"fp-{i:010d}" for i in [*range(0, 8), *range(10, 20)]]
    assert t.schema.field("score").type == pa.int64()  # null in one piece, int64 in the next
    assert t.schema.field("record").type.get_field_index("tags") >= 0
    assert t.filter(pa.compute.is_in(t["id"], pa.array(["fp-0000000012"])))["score"].to_pylist() == [None]


def test_partitions_come_back_as_columns(tmp_path):
    root = tmp_path / "out"
    write_output(
        root,
        [
            (0, 0, {"kind=a%2Fb": records(0, 3), "kind=__HIVE_DEFAULT_PARTITION__": records(3, 2)}),
            (1, 0, {"kind=c": records(10, 4)}),
        ],
        count=20,
    )
    t = synth.open(str(root)).to_table()
    assert t.num_rows == 9
    kinds = dict(zip(t["id"].to_pylist(), t["kind"].to_pylist()))
    assert kinds["fp-0000000000"] == "a/b" and kinds["fp-0000000003"] is None and kinds["fp-0000000010"] == "c"


def test_inspect_counts_committed_work_and_says_unfinished(unfinished):
    doc = inspect(str(unfinished), samples=2)
    assert doc["status"] == "unfinished" and doc["complete"] is False
    assert doc["shards"] == {"planned": 3, "committed": 2}
    assert doc["units"] == {"planned": 30, "committed": 20}
    assert doc["records"] == 18 == doc["rows_scanned"] and doc["dead_letters"] == 2
    assert doc["tokens"]["prompt"] == 180 and doc["cost_usd"] == pytest.approx(0.018)
    assert doc["failure_reasons"] == [
        {"kind": "malformed_output", "message": "schema says no", "count": 2, "example": "schema says no"}
    ]
    cols = {c["name"]: c for c in doc["columns"]}
    assert cols["id"]["distinct"] == 18 and cols["id"]["distinct_exact"] and cols["id"]["len_min"] == 13
    assert cols["name"]["nulls"] == 4  # ids 0, 5, 10, 15
    assert cols["score"]["nulls"] == 5 and cols["score"]["min"] == 0 and cols["score"]["max"] == 6
    assert cols["model"]["envelope"] and not cols["name"]["envelope"]
    assert len(doc["samples"]) == 2 and doc["samples"][0]["id"] == "fp-0000000000"


def test_distinct_is_exact_when_small_and_close_when_large():
    d = _Distinct(k=256)
    d.add(pa.array(["x", "y", "x", None]))
    assert d.value() == (2, True)
    d = _Distinct(k=1024)
    for start in range(0, 200_000, 50_000):
        d.add(pa.array(range(start, start + 50_000)))
        d.add(pa.array(range(start, start + 1000)))  # repeats change nothing
    n, exact = d.value()
    assert not exact and abs(n - 200_000) / 200_000 < 0.1


def test_csv_and_jsonl_exports_read_back(unfinished, tmp_path):
    export(str(unfinished), "csv", str(tmp_path / "r.csv"))
    rows = list(csv.DictReader(open(tmp_path / "r.csv", newline="")))
    assert len(rows) == 18 and set(rows[0]) == {"id", "name", "score", "record"}  # envelope left out
    assert json.loads(rows[0]["record"]) == {"tags": [], "n": 0}
    export(str(unfinished), "jsonl", str(tmp_path / "r.jsonl.gz"), with_envelope=True)
    import gzip

    lines = [json.loads(x) for x in gzip.open(tmp_path / "r.jsonl.gz")]
    assert len(lines) == 18 and lines[1]["record"] == {"tags": ["a"], "n": 1} and lines[0]["model"] == "sim:m"


def test_sql_export_makes_a_table_and_refuses_to_clobber(unfinished, tmp_path):
    db = tmp_path / "r.db"
    assert export(str(unfinished), "sql", str(db), table="items").records == 18
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from items").fetchone() == (18,)
    assert [r[1] for r in con.execute("pragma table_info(items)")] == ["id", "name", "score", "record"]
    assert [r[0] for r in con.execute("select name from sqlite_master where type='table'")] == ["items"]
    con.close()
    with pytest.raises(ConfigError, match="exists"):
        export(str(unfinished), "sql", str(db), table="items")
    assert export(str(unfinished), "sql", str(db), table="items", overwrite=True).records == 18


def test_bad_requests_are_one_line_errors(unfinished, tmp_path):
    with pytest.raises(ConfigError, match="not known"):
        export(str(unfinished), "xml", str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="needs chat records"):
        export(str(unfinished), "openai", str(tmp_path / "x.jsonl"))
    with pytest.raises(StorageError, match="not a synth output"):
        export(str(tmp_path), "jsonl", str(tmp_path / "x.jsonl"))
    (tmp_path / "there.csv").write_text("keep me")
    with pytest.raises(ConfigError, match="--overwrite"):
        export(str(unfinished), "csv", str(tmp_path / "there.csv"))
    assert (tmp_path / "there.csv").read_text() == "keep me"
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "x").exists()


def test_a_failed_write_leaves_nothing(tmp_path):
    t = Target(str(tmp_path / "sub" / "f.jsonl"))
    with pytest.raises(RuntimeError):
        with t.file() as f:
            f.write(b"partial\n")
            raise RuntimeError("stop")
    assert not (tmp_path / "sub" / "f.jsonl").exists() and list((tmp_path / "sub").iterdir()) == []


def test_openai_validation_names_what_is_wrong():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    good = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert openai_problem(good) is None
    bad_args = json.loads(json.dumps(good))
    bad_args["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{not json"
    assert "not JSON" in openai_problem(bad_args)
    orphan = {"messages": [{"role": "user", "content": "u"}, {"role": "tool", "tool_call_id": "zz", "content": "x"}]}
    assert "no earlier tool call" in openai_problem(orphan)
    assert "role" in openai_problem({"messages": [{"role": "robot", "content": "x"}]})
    assert "no assistant" in openai_problem({"messages": [{"role": "user", "content": "u"}]})
    share = to_sharegpt(good, [{"type": "function", "function": {"name": "f"}}])
    assert [t["from"] for t in share["conversations"]] == ["system", "human", "function_call", "observation", "gpt"]
    assert json.loads(share["conversations"][2]["value"]) == {"name": "f", "arguments": {"a": 1}}
    assert json.loads(share["tools"]) == [{"name": "f"}]


def test_inspect_says_running_while_a_run_holds_the_lease(unfinished):
    from synth.engine.lease import hold

    st = Storage(OutputSpec(uri=str(unfinished)))
    with hold(st):
        doc = inspect(str(unfinished), samples=0)
        assert doc["status"] == "running" and doc["running"] and doc["records"] == 18
    assert inspect(str(unfinished), samples=0)["status"] == "unfinished"


def chat(ids: list[str], answered: list[bool]) -> pa.Table:
    def msgs(ok: bool) -> list[dict]:
        m = [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}]
        return m + ([{"role": "assistant", "content": "hi"}] if ok else [])

    return pa.table({"id": ids, "messages": [msgs(ok) for ok in answered]})


def test_openai_export_skips_invalid_lines_and_refuses_when_none_is_valid(tmp_path):
    mixed = tmp_path / "mixed"
    write_output(mixed, [(0, 0, {"": chat(["a", "b", "c"], [True, False, True])})], count=3, generator="conversation")
    res = export(str(mixed), "openai", str(tmp_path / "m.jsonl"))
    assert (res.records, res.skipped) == (2, 1) and "b: no assistant message" in res.first_skip
    lines = [json.loads(x) for x in open(tmp_path / "m.jsonl")]
    assert [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant"]
    bad = tmp_path / "bad"
    write_output(bad, [(0, 0, {"": chat(["x"], [False])})], count=1, generator="conversation")
    with pytest.raises(ConfigError, match="no record .* is a valid openai example"):
        export(str(bad), "openai", str(tmp_path / "b.jsonl"))
    assert not (tmp_path / "b.jsonl").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "bad",
        "m.jsonl",
        "mixed",
    ]
