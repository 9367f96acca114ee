"""Gateway actors that die under a worker's client, on a real local Ray with the HTTP simulator:
a crashed gateway restarts and the requests it held are answered; a gateway gone for good (its node
lost) leaves the route, and the replacement the driver publishes takes its key back into use."""

from __future__ import annotations

import asyncio
import tempfile
import time

import pytest
import ray

import synth.engine.client as client_mod
from synth.api import load_job
from synth.engine.client import GatewayClient
from synth.engine.gateway import GatewayActor
from synth.engine.monitor import MonitorActor
from synth.records import ChatMessage, Completion, Request
from tests.support.simulator import SimulatorProcess

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def slow_sim():
    with SimulatorProcess(ttft_ms=500, tpot_ms=0) as sim:  # long enough to kill a gateway mid-call
        yield sim


def _job(url: str):
    # HTTP_KEY_A / HTTP_KEY_B are set by conftest before Ray starts, as a node's environment would have them
    return load_job(
        {
            "name": "failover",
            "count": 10,
            "generator": {
                "kind": "structured",
                "prompt": "x",
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            },
            "providers": [
                {
                    "name": "default",
                    "model": "compat:sim-model",
                    "base_url": f"{url}/v1",
                    "keys": [{"env": "HTTP_KEY_A", "alias": "alpha"}, {"env": "HTTP_KEY_B", "alias": "bravo"}],
                }
            ],
            "output": {"uri": tempfile.mkdtemp(prefix="failover-")},  # where the gateways journal answers
        }
    )


def _requests(prefix: str, n: int) -> list[Request]:
    # distinct content per call: an answer to the same content would be replayed from the journal
    return [
        Request(
            id=f"{prefix}-{i}",
            model="default",
            messages=[ChatMessage(role="user", content=f"{prefix} item {i}")],
            max_tokens=8,
        )
        for i in range(n)
    ]


async def _all(client: GatewayClient, reqs: list[Request]) -> list[Completion]:
    return list(await asyncio.gather(*(client.complete(r) for r in reqs)))


def test_crashed_gateway_restarts_and_its_requests_are_answered(slow_sim):
    job = _job(slow_sim.url)
    gw = GatewayActor.remote(job.model_dump_json(), [("default", 0, 1.0), ("default", 1, 1.0)], 1.0)
    assert ray.get(gw.ready.remote()) == ["default"]
    client = GatewayClient({"default": [gw]}, wait_ms=5, job=job)
    cancelled_before = slow_sim.stats()["cancelled"]
    reqs = _requests("crash", 30)

    async def main() -> list[Completion]:
        task = asyncio.ensure_future(_all(client, reqs))
        deadline = time.monotonic() + 30
        while (await asyncio.to_thread(slow_sim.stats))["in_flight"] < len(reqs) // 2:  # out at the simulator
            assert time.monotonic() < deadline and not task.done()
        ray.kill(gw, no_restart=False)  # the process dies; Ray starts it again on its node
        return await asyncio.wait_for(task, 120)

    done = asyncio.run(main())
    assert sorted(c.request_id for c in done) == sorted(r.id for r in reqs)
    # the calls it had out were cut, so those answers came from calls sent again
    assert slow_sim.stats()["cancelled"] >= cancelled_before + len(reqs) // 2
    assert ray.get(gw.ready.remote()) == ["default"]  # the same actor, restarted
    ray.kill(gw)


def test_lost_gateway_leaves_the_route_and_its_replacement_takes_its_key_back(slow_sim, monkeypatch):
    monkeypatch.setattr(client_mod, "REFRESH_S", 0.0)  # look for a replacement on every batch
    job = _job(slow_sim.url)
    job_json = job.model_dump_json()
    alpha = GatewayActor.remote(job_json, [("default", 0, 1.0)], 0.5)
    bravo = GatewayActor.remote(job_json, [("default", 1, 1.0)], 0.5)
    directory = MonitorActor.remote()
    assert ray.get([alpha.ready.remote(), bravo.ready.remote()]) == [["default"], ["default"]]
    client = GatewayClient(
        {"default": [alpha, bravo]},
        wait_ms=5,
        job=job,
        weights={"default": [1.0, 1.0]},
        index={"default": [0, 1]},
        directory=directory,
    )

    async def main() -> tuple[set[str], set[str], set[str], int]:
        first = {c.key_alias for c in await _all(client, _requests("before", 20))}
        ray.kill(alpha, no_restart=True)  # gone for good, as when its node leaves the cluster
        during = {c.key_alias for c in await _all(client, _requests("during", 20))}
        replacement = GatewayActor.remote(job_json, [("default", 0, 1.0)], 0.5)
        assert await replacement.ready.remote() == ["default"]
        await directory.publish_gateways.remote(1, [replacement, bravo])
        after: set[str] = set()
        rounds = 0
        while "alpha" not in after and rounds < 20:  # each batch may pick up the new table
            rounds += 1
            after |= {c.key_alias for c in await _all(client, _requests(f"after{rounds}", 10))}
        ray.kill(replacement)
        return first, during, after, rounds

    first, during, after, rounds = asyncio.run(main())
    assert first == {"alpha", "bravo"}
    assert during == {"bravo"}  # the lost gateway's requests went to the other one
    assert "alpha" in after, (after, rounds)  # its key serves again, through the replacement
    for a in (bravo, directory):
        ray.kill(a)


def test_driver_replaces_a_gateway_whose_node_is_gone_with_the_rest_of_its_budget(slow_sim):
    """Gateways.check, as the driver runs it: the gateway recorded on a node that is no longer in the
    cluster gets a replacement on a live node, holding the same key, with its budget share less
    what the lost one had spent or held; the directory publishes it for the workers."""
    from synth.engine.gateways import Gateways

    doc = _job(slow_sim.url).model_dump()
    doc["budget"] = {"max_usd": 2.0, "max_tokens": 10_000}
    doc["providers"][0]["price"] = {"input_per_mtok": 0.15, "output_per_mtok": 0.6}
    job = load_job(doc)
    gws = Gateways(job)
    gws.start()
    directory = MonitorActor.remote()
    try:
        assert len(gws.actors) == 1 and gws.index == {"default": [0]}  # one node here: both keys in one
        assert gws.check(directory, force=True) == 0  # nothing lost
        lost = gws.actors[0]
        gws.nodes[0] = "f" * 56  # as if its node had left the cluster
        gws.last_stats[0] = {
            "requests": 5,
            "budget": {"spent_usd": 0.5, "held_usd": 0.25, "spent_tokens": 1000, "held_tokens": 500},
        }
        assert gws.check(directory, force=True) == 1
        new = gws.actors[0]
        assert new != lost and gws.nodes[0] == ray.get_runtime_context().get_node_id()
        budget = ray.get(new.stats.remote())["budget"]
        assert budget["max_usd"] == pytest.approx(1.25) and budget["max_tokens"] == 8_500
        version, table = ray.get(directory.gateways.remote())
        assert version == 1 and table == [new]
        assert gws.stats(timeout=10)["requests"] == 5  # the lost one's calls still count
        ray.kill(lost)
    finally:
        gws.kill()
        ray.kill(directory)


def test_budget_follows_spending_across_gateways(slow_sim, tmp_path):
    """Two gateways share a $1 budget by key capacity ($0.50 each). One key is revoked, so all
    spending lands on the other gateway: with a fixed split it would stop the job at $0.50. The
    driver deals the unspent budget again as it goes, and a call that does not fit waits for the
    calls out and for the next deal, so the job spends close to the whole budget, and never more."""
    import synth

    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}  # about $0.015 an answer
    doc = {
        "name": "pooled",
        "count": 100,
        "generator": {
            "kind": "structured",
            "prompt": "Item {n}",
            "vars": {"n": {"kind": "range", "low": 1, "high": 10**6}},
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        },
        "providers": [
            {
                "name": "default",
                "model": "compat:m",
                "base_url": slow_sim.openai_url,
                "price": price,
                "keys": [{"env": "HTTP_KEY_A", "alias": "alpha"}, {"env": "HTTP_KEY_B", "alias": "bravo"}],
                "params": {"max_tokens": 16},
            }
        ],
        "budget": {"max_usd": 1.0},
        "output": {"uri": str(tmp_path / "o"), "shard_size": 10},
        "engine": {"workers": 1, "shards_per_worker": 1, "concurrency": 4, "gateways_per_node": 2},
    }
    slow_sim.configure(revoked=["sk-http-secret-bravo-0002"])
    try:
        res = synth.run(doc)
    finally:
        slow_sim.restore()
    assert res.aborted and res.aborted.startswith("budget")
    paid = res.stats["requests"]["cost_usd"]
    assert 0.95 < paid <= 1.0, paid  # within a few answers (about $0.015 each) of the budget
