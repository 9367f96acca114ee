"""Shards made in pieces: extending a committed job to a larger count, retrying dead letters, and
the manifest's commit of a retry staying whole when the process dies at any step."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.engine.manifest import Manifest, merge_entry, piece_name
from synth.engine.plan import Shard, fingerprint, pieces, unit_id
from synth.engine.shardrun import dead_table
from synth.engine.sink import ShardSink
from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.spec import parse_job

GEN = {"kind": "structured", "prompt": "p"}


def job(tmp_path, **kw):
    doc = {
        "name": "t",
        "count": 10,
        "seed": 1,
        "generator": GEN,
        "output": {"uri": str(tmp_path / "o"), "shard_size": 10},
    }
    doc.update(kw)
    return parse_job(doc, env={})


# ----------------------------------------------------------------- planning
def test_shard_only_makes_just_those_units_with_the_same_ids_and_seeds():
    whole = {u.index: u for u in Shard(0, 0, 10).units("f" * 16, 3)}
    some = list(Shard(0, 0, 10, part=2, only=(7, 2)).units("f" * 16, 3))
    assert [u.index for u in some] == [7, 2]
    assert all(u == whole[u.index] for u in some)
    assert Shard(0, 0, 10, part=2, only=(7, 2)).size == 2
    # the work item goes through Ray Data as plain scalars and comes back the same
    for s in (Shard(3, 30, 40), Shard(3, 30, 40, part=1, only=(31, 39))):
        assert Shard.from_item(**s.item()) == s


def test_pieces_extend_partial_shards_and_add_new_ones():
    # count 250 in shards of 100 committed [0,100) [100,200) [200,250); count 400 asks for more
    heads = {0: (0, 100), 1: (0, 200), 2: (0, 250)}
    got = list(pieces(400, 100, heads))
    assert got == [Shard(2, 250, 300, part=1), Shard(3, 300, 400)]
    # nothing left at the committed count
    assert list(pieces(250, 100, heads)) == []


def test_pieces_fold_a_retry_into_the_shard_extension():
    heads = {0: (2, 300)}
    got = list(pieces(400, 1000, heads, retry={0: [17, 5]}))
    assert got == [Shard(0, 0, 400, part=3, only=(5, 17, *range(300, 400)))]
    assert list(pieces(300, 1000, heads, retry={0: [5]})) == [Shard(0, 0, 300, part=3, only=(5,))]
    assert list(pieces(300, 1000, heads, retry={0: []})) == []


# ----------------------------------------------------------------- opening
def test_larger_count_extends_smaller_is_refused_in_one_line(tmp_path):
    m = Manifest(Storage(job(tmp_path).output))
    assert m.open(job(tmp_path, count=30)) == set()
    assert m.open(job(tmp_path, count=40)) == set()
    with pytest.raises(StorageError) as e:
        Manifest(m.storage).open(job(tmp_path, count=25))
    msg = str(e.value)
    assert "\n" not in msg and "40" in msg and "25" in msg and "--overwrite" in msg and "new output path" in msg
    assert json.loads(m.storage.read_bytes("_manifest/job.json"))["spec"]["count"] == 40
    with pytest.raises(StorageError, match="shard_size: 10 -> 5"):
        Manifest(m.storage).open(job(tmp_path, count=40, output={"uri": str(tmp_path / "o"), "shard_size": 5}))


# ----------------------------------------------------------------- publishing pieces
def records(j, indices: list[int]) -> pa.Table:
    fp = fingerprint(j)
    return pa.table(
        {
            "id": [unit_id(fp, i) for i in indices],
            "generator": ["structured"] * len(indices),
            "shard": pa.array([0] * len(indices), pa.int32()),
            "a": [f"v{i}" for i in indices],
        }
    )


def dead(j, indices: list[int]) -> pa.Table | None:
    fp = fingerprint(j)
    now = datetime.now(timezone.utc)
    return dead_table(
        [
            {
                "request_id": unit_id(fp, i),
                "job": "t",
                "shard": 0,
                "generator": "structured",
                "error_kind": "transient",
                "message": "500",
                "attempts": 1,
                "created_at": now,
            }
            for i in indices
        ]
    )


def stats(made: list[int], failed: list[int]) -> dict:
    return {
        "units": len(made) + len(failed),
        "records": len(made),
        "rows": len(made),
        "dead_letters": len(failed),
        "dead_by_kind": {"transient": len(failed)} if failed else {},
        "prompt_tokens": 10 * len(made),
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "generator_stats": {},
    }


def publish(sink, st, j, shard: Shard, ok: list[int], failed: list[int]):
    return sink.publish(st, 0, records(j, ok), dead(j, failed), stats(ok, failed), shard.piece())


def on_disk(st: Storage) -> set[str]:
    root = st.root + "/"
    return {p[len(root) :] for p in st.fs.find(st.root) if "/_manifest/" not in p and not p.endswith("stats.json")}


def test_extension_and_retry_commit_the_shard_as_it_now_is(tmp_path):
    j = job(tmp_path, count=6)
    st = Storage(j.output)
    m = Manifest(st)
    m.open(j)
    sink = ShardSink(j.output, ["generator"])
    publish(sink, st, j, Shard(0, 0, 6), ok=[0, 1, 3, 4], failed=[2, 5])
    first = {f: (tmp_path / "o" / f).read_bytes() for f in on_disk(st)}
    # count 10: units [6, 10) as a piece of its own
    j10 = job(tmp_path, count=10)
    assert Manifest(st).open(j10) == {0}
    [ext] = m.todo(j10)
    assert ext == Shard(0, 6, 10, part=1)
    publish(sink, st, j10, ext, ok=[6, 7, 9], failed=[8])
    head = m.heads()[0]
    assert (head["gen"], head["units"], head["records"], head["dead_letters"]) == (1, 10, 7, 3)
    assert {f: (tmp_path / "o" / f).read_bytes() for f in first} == first  # the first piece untouched
    # retry: the three dead letters made again, one fails once more
    [again] = m.todo(j10, retry_failed=True)
    assert again == Shard(0, 0, 10, part=2, only=(2, 5, 8))
    publish(sink, st, j10, again, ok=[2, 8], failed=[5])
    head = m.heads()[0]
    assert (head["gen"], head["units"], head["records"], head["dead_letters"]) == (2, 10, 9, 1)
    assert head["dead_by_kind"] == {"transient": 1} and head["prompt_tokens"] == 90
    assert [e["gen"] for e in m.commit_entries()] == [2]
    assert st.list("_manifest/commits") == [f"{piece_name(0, 2)}.json"] and st.list("_manifest/intents") == []
    assert on_disk(st) == set(head["files"])
    assert [f for f in head["files"] if f.startswith("dead_letters/")] == [f"dead_letters/{piece_name(0, 2)}.parquet"]
    assert m.dead_units(head) == [5]
    assert head["bytes"] == sum((tmp_path / "o" / f).stat().st_size for f in head["files"])
    ids = [i for f in m.committed_files() for i in pq.read_table(f)["id"].to_pylist()]
    assert sorted(ids) == sorted(unit_id(fingerprint(j), i) for i in range(10) if i != 5)
    # a retry leaves no work behind when the dead letters are gone
    publish(sink, st, j10, m.todo(j10, retry_failed=True)[0], ok=[5], failed=[])
    assert m.todo(j10, retry_failed=True) == [] and not st.list("dead_letters")
    assert m.heads()[0]["dead_letters"] == 0 and m.heads()[0]["dead_bytes"] == 0


class Killed(BaseException):
    """The process dies here."""


class DyingStorage(Storage):
    """Real local storage whose process dies at its ``at``-th write or remove once armed: that
    step and every later one do not happen (the publisher's threads included)."""

    def __init__(self, out) -> None:
        super().__init__(out)
        self.at, self.ops, self.busy = 0, 0, 0
        self.idle = threading.Condition()

    def arm(self, at: int) -> None:
        self.at, self.ops = at, 0

    def _step(self, op, *args) -> None:
        with self.idle:
            self.ops += 1
            if self.at and self.ops >= self.at:
                raise Killed
            self.busy += 1
        try:
            op(*args)
        finally:
            with self.idle:
                self.busy -= 1
                self.idle.notify_all()

    def stopped(self) -> None:
        """Wait until the steps already under way when it died have ended, as in a dead process."""
        with self.idle:
            assert self.idle.wait_for(lambda: self.busy == 0, timeout=30)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._step(super().write_bytes, rel, data)

    def remove(self, rel: str) -> None:
        self._step(super().remove, rel)


def state(st: Storage) -> tuple:
    """What a reader following the manifest sees, checked for consistency with the disk."""
    m = Manifest(st)
    head = m.heads()[0]
    assert on_disk(st) == set(head["files"]), "files on disk that the manifest does not list, or the reverse"
    assert st.list("_manifest/intents") == [] and len(st.list("_manifest/commits")) == 1
    ids = sorted(i for f in m.committed_files() for i in pq.read_table(f)["id"].to_pylist())
    return head["gen"], head["records"], head["dead_letters"], tuple(ids), tuple(m.dead_units(head))


@pytest.mark.parametrize("kind", ["retry", "extension"])
def test_a_piece_killed_at_any_step_leaves_the_old_state_or_the_new(tmp_path, kind):
    j = job(tmp_path, count=8)
    later = j if kind == "retry" else job(tmp_path, count=10)
    ok, failed = ([3, 7], [5]) if kind == "retry" else ([8], [9])
    sink = ShardSink(j.output, ["generator"])

    def first_run(st: Storage) -> None:
        Manifest(st).open(j)
        publish(sink, st, j, Shard(0, 0, 8), ok=[0, 1, 2, 4, 6], failed=[3, 5, 7])

    first_run(Storage(j.output))
    old = state(Storage(j.output))
    fp = fingerprint(j)
    made = tuple(sorted(old[3] + tuple(unit_id(fp, i) for i in ok)))
    new = (1, 7, 1, made, (5,)) if kind == "retry" else (1, 6, 4, made, (3, 5, 7, 9))
    seen = set()
    at = 1
    while True:
        # the piece (intent, new files, commit, removal of what it supersedes) dies at its at-th step
        st = DyingStorage(j.output)
        Manifest(st).open(later)
        st.arm(at)
        [shard] = Manifest(st).todo(later, retry_failed=kind == "retry")
        assert shard == (Shard(0, 0, 8, 1, (3, 5, 7)) if kind == "retry" else Shard(0, 8, 10, 1))
        try:
            publish(sink, st, later, shard, ok=ok, failed=failed)
        except Killed:
            st.stopped()
        else:
            break  # got through: every step has been a kill point
        fresh = Storage(j.output)
        Manifest(fresh).clean_interrupted()
        now = state(fresh)
        assert now in (old, new)
        seen.add(now)
        if now == new:  # back to the old state for the next kill point
            for f in ("data", "dead_letters", "_manifest/commits", "_manifest/job.json"):
                fresh.remove(f)
            first_run(fresh)
            assert state(fresh) == old
        at += 1
    assert at > 5 and seen == {old, new}  # kills before the commit undo it, kills after it complete it
    assert state(Storage(j.output)) == new


def test_merge_counts_units_once_and_keeps_unknown_counts():
    base = {
        "start": 0,
        "stop": 300,
        "units": 300,
        "records": 290,
        "dead_letters": 10,
        "dead_by_kind": {"x": 10},
        "dead_examples": {"x": "boom"},
        "files": ["data/a", "dead_letters/a"],
        "bytes": 100,
        "dead_bytes": 10,
        "cache_hits": 4,
    }
    made = {
        "units": 110,
        "records": 105,
        "dead_letters": 5,
        "dead_by_kind": {"y": 5},
        "files": ["data/b", "dead_letters/b"],
        "bytes": 50,
        "dead_bytes": 5,
        "cache_hits": 1,
    }
    e = merge_entry(base, {"part": 1, "start": 0, "stop": 400, "retry": True}, made)
    assert (e["units"], e["records"], e["dead_letters"], e["dead_by_kind"]) == (400, 395, 5, {"y": 5})
    assert e["dead_examples"] == {} and e["cache_hits"] == 5
    assert e["files"] == ["data/a", "data/b", "dead_letters/b"] and (e["bytes"], e["dead_bytes"]) == (140, 5)
    e = merge_entry(base, {"part": 1, "start": 300, "stop": 400, "retry": False}, {**made, "units": 100})
    assert (e["units"], e["dead_letters"], e["dead_by_kind"]) == (400, 15, {"x": 10, "y": 5})
    assert e["files"] == ["data/a", "dead_letters/a", "data/b", "dead_letters/b"] and e["bytes"] == 150
