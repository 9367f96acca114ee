"""The response cache, alone and inside the dispatcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth.errors import ConfigError
from synth.providers.cache import ResponseCache, request_key
from synth.records import ChatMessage, Completion, Request, Usage
from tests.unit.test_dispatch import build, job, provider, req


def test_key_ignores_id_and_metadata_but_not_content() -> None:
    a = Request(id="a", messages=[ChatMessage(role="user", content="hi")], metadata={"unit": 1})
    b = a.model_copy(update={"id": "b", "metadata": {"unit": 2}})
    c = a.model_copy(update={"temperature": 0.5})
    d = a.model_copy(update={"messages": [ChatMessage(role="user", content="hi!")]})
    assert request_key(a) == request_key(b)
    assert len({request_key(a), request_key(c), request_key(d)}) == 3


def test_lru_evicts_least_recently_used() -> None:
    cache = ResponseCache(max_entries=2)
    for k in "abc":
        if k == "c":
            assert cache.get("a", "x") is not None  # touch a: b is now the oldest
        cache.put(k, Completion(request_id=k, text=k))
    assert cache.get("b", "x") is None and cache.get("a", "x") is not None and cache.get("c", "x") is not None
    assert len(cache) == 2


def test_persisted_entries_survive_a_new_cache(tmp_path: Path) -> None:
    cache = ResponseCache(path=tmp_path / "cache")
    cache.put("k", Completion(request_id="r", text="hello", cost_usd=0.5, usage=Usage(total_tokens=3)))
    cache.close()
    again = ResponseCache(path=tmp_path / "cache")
    hit = again.get("k", "new-id")
    assert hit is not None and hit.text == "hello" and hit.request_id == "new-id"
    assert hit.cached and hit.cost_usd == 0.0 and hit.usage.total_tokens == 3
    again.close()


def test_unusable_folder_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cache.path"):
        ResponseCache(path=blocker / "sub")


async def test_dispatcher_serves_identical_requests_from_cache(tmp_path: Path) -> None:
    spec = job([provider("main")], cache={"enabled": True, "path": str(tmp_path / "c")})
    d, made, clock = build(spec)
    first = await d.complete(req(1))
    again = await d.complete(req(1).model_copy(update={"id": "other"}))
    assert not first.cached and first.cost_usd > 0
    assert again.cached and again.cost_usd == 0 and again.request_id == "other" and again.text == first.text
    other = await d.complete(req(2))
    assert not other.cached and len(made["main"].calls) == 2
    assert d.stats()["cache_hits"] == 1
    await d.aclose()
    # a new process reuses the persisted answers
    d2, made2, _ = build(spec)
    assert (await d2.complete(req(2))).cached and made2["main"].calls == []
    await d2.aclose()
