"""The answer journal and the response cache: keys, segments, the store, and the dispatcher using it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from synth.providers.answers import ANSWERS, AnswerStore, LocalFolder
from synth.providers.journal import KeyMaker, SegmentWriter, encode_entry, parse_segment
from synth.records import ChatMessage, Completion, Request, Usage
from tests.unit.test_dispatch import SCHEMA, SECRETS, build, job, provider, req


def test_key_is_the_request_content_not_its_id_or_the_api_key() -> None:
    km = KeyMaker("openai:gpt-4o-mini", None, {"temperature": 0.2})
    a = Request(id="a", messages=[ChatMessage(role="user", content="hi")], metadata={"unit": 1})
    b = a.model_copy(update={"id": "b", "metadata": {"unit": 2}})
    keys = {
        km.key(a),
        km.key(a.model_copy(update={"temperature": 0.5})),
        km.key(a.model_copy(update={"messages": [ChatMessage(role="user", content="hi!")]})),
        km.key(a.model_copy(update={"seed": 3})),
        km.key(a.model_copy(update={"json_schema": SCHEMA})),
        KeyMaker("openai:gpt-4o", None, {"temperature": 0.2}).key(a),
        KeyMaker("openai:gpt-4o-mini", "http://other/v1", {"temperature": 0.2}).key(a),
        KeyMaker("openai:gpt-4o-mini", None, {"temperature": 0.3}).key(a),
    }
    assert km.key(a) == km.key(b)
    assert len(keys) == 8


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path)
    for i in range(3):
        w.append(encode_entry(f"k{i}", f"r{i}", "ok", ["x"], 0.1, 1.0))
    path = w.rotate()
    assert path is not None
    data = path.read_bytes()
    entries = list(parse_segment(data[:-7]))  # a crash in the middle of the last write
    assert [e.key for e in entries] == ["k0", "k1"]


def test_an_append_survives_sigkill_of_the_writer(tmp_path: Path) -> None:
    """One write per answer: once append() returns, killing the process loses nothing."""
    code = (
        "import os, sys, signal\n"
        "from synth.providers.journal import SegmentWriter, encode_entry\n"
        f"w = SegmentWriter({str(tmp_path)!r}, writer='w')\n"
        "for i in range(500):\n"
        "    w.append(encode_entry(f'k{i}', f'r{i}', 'ok', ['x' * 100], 0.0, 1.0))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert r.returncode == -signal.SIGKILL
    entries = list(parse_segment((tmp_path / "w-000000.jsonl").read_bytes()))
    assert len(entries) == 500 and entries[-1].key == "k499"


def _comp(text: str, cost: float) -> Completion:
    return Completion(
        request_id="r",
        text=text,
        cost_usd=cost,
        model="m",
        provider="openai",
        key_alias="k1",
        usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
    )


def test_store_replays_its_journal_then_the_cache_with_a_ttl(tmp_path: Path) -> None:
    now = [1000.0]
    spool, cache = tmp_path / "out" / "_journal", LocalFolder(tmp_path / "cache")
    s1 = AnswerStore(["d"], spool=spool, journal=LocalFolder(tmp_path / "out"), cache=cache, clock=lambda: now[0])
    s1.record("d", "k1", "r1", _comp("one", 0.25), cost_usd=0.25)
    s1.record("d", "k2", "r2", None, cost_usd=0.1, raw="{not json")
    assert s1.ship(final=True) == 1  # the closed segment went to the cache
    assert len(cache.list(f"{ANSWERS}/d")) == 1

    # the job's journal: the answer as bought (cost kept), or the unparseable one to re-ask
    s2 = AnswerStore(["d"], spool=spool, journal=LocalFolder(tmp_path / "out"), cache=None, clock=lambda: now[0])
    status, comp = s2.find("d", "k1", "new-id")  # type: ignore[misc]
    assert status == "ok" and comp.text == "one" and comp.cost_usd == 0.25 and not comp.cached  # type: ignore[union-attr]
    assert comp.request_id == "new-id"  # type: ignore[union-attr]
    assert s2.find("d", "k2", "x") == ("malformed", "{not json")
    assert s2.find("d", "k3", "x") is None
    assert s2.stats()["journal_hits"] == 2 and s2.stats()["misses"] == 1

    # another job's output: only the cache has it; a hit costs nothing; past the TTL it is not used
    other = tmp_path / "other" / "_journal"
    s3 = AnswerStore(["d"], spool=other, cache=cache, ttl_s=60, clock=lambda: now[0] + 30)
    status, comp = s3.find("d", "k1", "r9")  # type: ignore[misc]
    assert status == "ok" and comp.cached and comp.cost_usd == 0 and comp.key_alias is None  # type: ignore[union-attr]
    assert s3.stats()["saved_usd"] == 0.25
    s4 = AnswerStore(["d"], spool=other, cache=cache, ttl_s=60, clock=lambda: now[0] + 61)
    assert s4.find("d", "k1", "r9") is None


def test_skip_leaves_committed_work_out_of_the_index(tmp_path: Path) -> None:
    spool = tmp_path / "_journal"
    s1 = AnswerStore(["d"], spool=spool)
    s1.record("d", "k1", "done-1", _comp("a", 0.1), cost_usd=0.1)
    s1.record("d", "k2", "todo-1", _comp("b", 0.1), cost_usd=0.1)
    s2 = AnswerStore(["d"], spool=spool, skip=lambda rid: rid.startswith("done"))
    assert s2.sizes()["journal_entries"] == 1 and s2.find("d", "k2", "x") is not None


async def test_dispatcher_journals_before_use_and_never_buys_twice(tmp_path: Path) -> None:
    spool = tmp_path / "_journal"
    spec = job([provider("main")])
    d, made, _ = build(spec, answers=AnswerStore([], spool=spool))
    # the store knows the target's model folder once given it
    d.answers = AnswerStore([d.targets["main"].digest], spool=spool)
    first = await d.complete(req(1))
    again = await d.complete(req(1).model_copy(update={"id": "other"}))
    assert len(made["main"].calls) == 1 and again.text == first.text and again.request_id == "other"
    assert again.cost_usd == first.cost_usd > 0  # the same answer, as bought
    # a new process (a resumed run) replays it from the journal on disk
    d2, made2, _ = build(spec, answers=AnswerStore([d.targets["main"].digest], spool=spool))
    replay = await d2.complete(req(1))
    assert made2["main"].calls == [] and replay.text == first.text and d2.stats()["replayed"] == 1
    # no key value in any journal file
    for f in spool.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not any(v.encode() in data for v in SECRETS.values())


async def test_reasks_are_journaled_and_replayed_in_order(tmp_path: Path) -> None:
    spool = tmp_path / "_journal"
    answers = iter(['{"n": "bad"}', "not json", '{"n": 2}'])
    spec = job([provider("main", max_reasks=3)])
    d, made, _ = build(spec, scripts={"main": lambda r, k, n: next(answers)})
    d.answers = AnswerStore([d.targets["main"].digest], spool=spool)
    out = await d.complete(req(1, json_schema=SCHEMA))
    assert out.parsed == {"n": 2} and len(made["main"].calls) == 3
    d2, made2, _ = build(spec, scripts={"main": lambda r, k, n: '{"n": 99}'})
    d2.answers = AnswerStore([d2.targets["main"].digest], spool=spool)
    again = await d2.complete(req(1, json_schema=SCHEMA))
    assert again.parsed == {"n": 2} and made2["main"].calls == []


def test_failure_window_stops_the_job() -> None:
    from synth.errors import JobStopped, Transient

    spec = job([provider("main", max_retries=0)], engine={"failure_window": 10, "max_failure_rate": 0.5})
    d, _, _ = build(spec, scripts={"main": lambda r, k, n: Transient("HTTP 500", status=500)})

    async def go() -> list[BaseException]:
        out: list[BaseException] = []
        for i in range(12):
            try:
                await d.complete(req(i))
            except BaseException as e:  # noqa: BLE001
                out.append(e)
        return out

    import asyncio

    errs = asyncio.run(go())
    assert [type(e).__name__ for e in errs[:10]] == ["Transient"] * 10
    assert all(isinstance(e, JobStopped) for e in errs[10:]) and "10 of the last 10" in str(errs[10])


def test_units_made_again_are_bought_afresh(tmp_path: Path) -> None:
    spool = tmp_path / "_journal"
    s1 = AnswerStore(["d"], spool=spool)
    s1.record("d", "k1", "u-1:t0", _comp("bad", 0.1), cost_usd=0.1)
    s2 = AnswerStore(["d"], spool=spool, bypass=lambda rid: rid.startswith("u-1:"))
    assert s2.find("d", "k1", "u-1:t0") is None  # --retry-failed: the stored answer made a dead letter
    assert s2.find("d", "k1", "u-2:t0") is not None  # the same content for another unit is replayed


def test_unit_skipper_keeps_setup_calls_and_drops_other_shards() -> None:
    from synth.engine.answerstore import unit_skipper
    from synth.engine.plan import fingerprint, unit_id
    from tests.unit.test_dispatch import job as make_job

    spec = make_job([provider("main")], output={"uri": "x", "shard_size": 10})
    fp = fingerprint(spec)
    skip = unit_skipper(spec, todo={1}, retried={12})
    assert skip(unit_id(fp, 3) + ":c") and not skip(unit_id(fp, 13) + ":c") and skip(unit_id(fp, 12))
    assert not skip("instructions:topics:abc")
