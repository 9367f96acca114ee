"""What a run tells its user: outcomes by provider, failure reasons, keys lost, exit codes."""

from __future__ import annotations

from types import SimpleNamespace

from synth.engine import report
from synth.outcome import EXIT, outcome


def gw(route: str, ok: int, errors: dict[str, int], keys: dict[str, dict], example: str = "") -> dict:
    return {
        "providers": {
            route: {
                "model": "compat:m",
                "requests": ok + sum(errors.values()),
                "successes": ok,
                "errors": errors,
                "examples": {k: example for k in errors},
                "keys": keys,
            }
        },
        "answers": {"journal_hits": 2, "cache_hits": 1, "misses": 3, "journaled": 3, "saved_usd": 0.5},
    }


def test_all_failed_names_the_model_count_and_an_example() -> None:
    reps = [gw("a", 0, {"transient": 12}, {}, "HTTP 500: boom"), gw("a", 0, {"transient": 8}, {}, "HTTP 500: x")]
    by = report.providers(reps)
    assert by["a"]["calls"] == 20 and by["a"]["errors"] == {"transient": 20}
    assert report.all_failed(by) == "all 20 calls to compat:m failed: HTTP 500: boom"
    assert report.all_failed(report.providers([gw("a", 1, {"transient": 8}, {})])) is None
    assert report.answers(reps) == {"journal_hits": 4, "cache_hits": 2, "misses": 6, "journaled": 6, "saved_usd": 1.0}


def test_failure_reasons_are_counted_over_shards_with_an_example() -> None:
    entries = [
        {"dead_by_kind": {"malformed_output": 3, "bad_request": 1}, "dead_examples": {"malformed_output": "bad json"}},
        {"dead_by_kind": {"malformed_output": 2}, "dead_examples": {"malformed_output": "other"}},
        {},
    ]
    top = report.failure_reasons(entries)
    assert top[0] == {"kind": "malformed_output", "count": 5, "example": "bad json"}
    assert top[1]["kind"] == "bad_request" and top[1]["count"] == 1


def test_a_key_is_reported_once_when_disabled_or_cooling_long() -> None:
    watch = report.KeyWatch()
    quiet = [gw("a", 5, {}, {"k1": {"disabled": False, "cooling_s": 2.0}})]
    assert watch.news(quiet) == []
    bad = [gw("a", 5, {}, {"k1": {"disabled": True, "cooling_s": 0.0}, "k2": {"disabled": False, "cooling_s": 75.0}})]
    lines = watch.news(bad)
    assert len(lines) == 2 and "k1" in lines[0] and "disabled" in lines[0] and "k2" in lines[1]
    assert watch.news(bad) == []  # once each
    assert watch.summary() == {"disabled": ["a/k1"], "cooled_over_60s": ["a/k2"]}


def res(**kw):
    base = dict(
        aborted=None,
        complete=True,
        planned_units=100,
        dead_letters=0,
        shards_total=1,
        stats={"shards": {"committed": 1}, "max_dead_letter_rate": 0.01},
    )
    base.update(kw)
    return SimpleNamespace(**base)


def test_exit_codes_tell_the_truth() -> None:
    assert outcome(res()) == (0, "")
    assert outcome(res(dead_letters=1))[0] == 0  # at the limit
    code, why = outcome(res(dead_letters=2))
    assert code == EXIT["dead_letters"] == 6 and "2 of 100" in why and "--retry-failed" in why
    assert outcome(res(aborted="budget: spent"))[0] == 4
    assert outcome(res(aborted="stopped: 150 of the last 200 requests failed"))[0] == 7
    assert outcome(res(aborted="no_keys_left: all keys disabled"))[0] == 5
    assert outcome(res(complete=False, stats={"shards": {"committed": 0}}))[0] == 1
    failed = res(dead_letters=100, stats={"shards": {"committed": 1}, "all_failed": "all 100 calls to m failed: x"})
    assert outcome(failed)[1].startswith("all 100 calls to m failed: x")
