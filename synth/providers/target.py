"""One provider of a job as a dispatcher holds it: client, keys, price, retry policy, defaults."""

from __future__ import annotations

from collections import Counter

from synth.providers.base import Provider
from synth.providers.keys import KeyPool
from synth.providers.retry import RetryPolicy
from synth.records import Request
from synth.spec import PriceSpec, ProviderSpec

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
        self.counts: Counter[str] = Counter()

    def prepare(self, request: Request) -> Request:
        """The request with the provider's default params filled into fields it leaves unset."""
        if not self.defaults:
            return request
        update = {k: v for k, v in self.defaults.items() if getattr(request, k) is None}
        return request.model_copy(update=update) if update else request

    def est_usd(self, prompt: int, output: int) -> float:
        p = self.price
        return 0.0 if p is None else (prompt * p.input_per_mtok + output * p.output_per_mtok) / 1e6


__all__ = ["Target"]
