"""Gateway actors that die under a worker's client, on a real local Ray with the HTTP simulator:
a crashed gateway restarts and the requests it held are answered; a gateway gone for good (its node
lost) leaves the route, and the replacement the driver publishes takes its key back into use."""

from __future__ import annotations

import asyncio
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
    return load_job({
        "name": "failover", "count": 10, "generator": {"kind": "structured", "prompt": "x", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
        "providers": [{"name": "default", "model": "compat:sim-model", "base_url": f"{url}/v1",
                       "keys": [{"env": "HTTP_KEY_A", "alias": "alpha"}, {"env": "HTTP_KEY_B", "alias": "bravo"}]}],
        "output": {"uri": "unused"},
    })


def _requests(prefix: str, n: int) -> list[Request]:
    return [Request(id=f"{prefix}-{i}", model="default", messages=[ChatMessage(role="user", content=f"Item {i}")],
                    max_tokens=8) for i in range(n)]


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
    client = GatewayClient({"default": [alpha, bravo]}, wait_ms=5, job=job, weights={"default": [1.0, 1.0]},
                           index={"default": [0, 1]}, directory=directory)

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
