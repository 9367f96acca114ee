"""One provider of a job as a dispatcher holds it: client, keys, price, retry policy, defaults."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from synth.errors import ConfigError
from synth.providers.base import Provider
from synth.providers.clock import Clock
from synth.providers.health import Health
from synth.providers.journal import KeyMaker, model_digest
from synth.providers.keys import KeyPool
from synth.providers.pricing import price_for
from synth.providers.retry import RetryPolicy
from synth.records import Request
from synth.spec import JobSpec, PriceSpec, ProviderSpec

Slot = tuple[str, int, float]  # (provider route, key index, share of that key's limits)

_PARAM_FIELDS = ("temperature", "top_p", "max_tokens", "seed")


class Target:
    """One provider of the job as this process holds it."""

    def __init__(self, spec: ProviderSpec, provider: Provider, pool: KeyPool, price: PriceSpec | None) -> None:
        self.spec = spec
        self.route = spec.route
        self.provider = provider
        self.pool = pool
        self.price = price
        self.policy = RetryPolicy(max_retries=spec.max_retries)
        self.timeout = spec.timeout_s
        # a second, outer timeout for providers whose client may overrun its own (SDKs retrying
        # inside); a client that enforces a total deadline itself says so and saves a timer per call
        own = getattr(provider, "enforces_timeout", False)
        self.backstop: float | None = None if own else spec.timeout_s * 1.1 + 0.1
        self.defaults = {k: spec.params[k] for k in _PARAM_FIELDS if spec.params.get(k) is not None}
        self.health = Health(spec.timeout_s)  # how it is doing: the outage policy and the abandon deadline
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}  # one message per error kind, for the run summary
        # the answer store's view: answers are kept per model and endpoint, keyed by content
        self.journaled = not spec.model.startswith("sim:")
        self.digest = model_digest(spec.model, spec.base_url)
        self.keymaker = KeyMaker(spec.model, spec.base_url, spec.params)

    def prepare(self, request: Request) -> Request:
        """The request with the provider's default params filled into fields it leaves unset."""
        if not self.defaults:
            return request
        update = {k: v for k, v in self.defaults.items() if getattr(request, k) is None}
        return request.model_copy(update=update) if update else request

    def est_usd(self, prompt: int, output: int) -> float:
        p = self.price
        return 0.0 if p is None else (prompt * p.input_per_mtok + output * p.output_per_mtok) / 1e6


def build_targets(
    job: JobSpec,
    slots: Sequence[Slot] | None,
    *,
    clock: Clock,
    provider_factory: Callable[[ProviderSpec], Provider] | None,
    env: Mapping[str, str] | None,
    max_usd: float | None,
    burst_s: float,
) -> dict[str, Target]:
    """Every provider of the job with the keys one process owns (see ``Dispatcher.from_spec``)."""
    if provider_factory is None:
        from synth.providers.factory import create_provider

        provider_factory = create_provider
    owned: dict[str, list[tuple[int, float]]] = {}
    routes = {p.route: p for p in job.providers}
    for route, index, share in slots or ():
        p = routes.get(route)
        if p is None or not (0 <= index < max(1, len(p.keys))) or not 0 < share <= 1:
            raise ConfigError(
                f"gateway slot {(route, index, share)!r} names no key of the job; "
                f"use (provider name, key index, share in (0, 1]) with names {list(routes)}"
            )
        owned.setdefault(route, []).append((index, share))
    prices = dict(job.prices)
    targets: dict[str, Target] = {}
    for p in job.providers:
        mine = owned.get(p.route)
        if slots is None:
            keys = None
            keyless_share = 1.0 / p.gateways
        else:
            keys = [(i, p.keys[i], s) for i, s in mine or () if p.keys]
            keyless_share = (mine[0][1] if mine else 1.0) if not p.keys else 0.0
        pool = KeyPool(p, keys, env=env, clock=clock, burst_s=burst_s, keyless_share=keyless_share)
        price = price_for(p.model, prices, provider_price=p.price)
        if max_usd and price is None:
            raise ConfigError(
                f"budget.max_usd is set but no price is known for {p.model}; add "
                f"'price:' to that provider or an entry under 'prices:' in the job file"
            )
        targets[p.route] = Target(p, provider_factory(p), pool, price)
    return targets


__all__ = ["Slot", "Target", "build_targets"]
