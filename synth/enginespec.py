"""How a job executes: the executor, workers, batching, concurrency, failure and outage limits.
None of it changes the records a job makes (it is outside the job's fingerprint)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synth.providerspec import BreakerSpec, Strict


class EngineSpec(Strict):
    executor: Literal["auto", "local", "ray"] = Field(
        "auto",
        description="where the run executes: 'local' in this one process (no Ray: starts in about a "
        "second), 'ray' on an embedded or joined Ray cluster, 'auto' local for jobs of at most "
        "local_max_units units when no cluster address is given (--address or RAY_ADDRESS), else ray",
    )
    local_max_units: int = Field(
        20_000, ge=0, description="the largest job 'auto' runs in one process (units planned by this run)"
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="a run in this process serves its metrics for Prometheus at "
        "http://127.0.0.1:PORT/metrics while it lasts (the names a Ray run exports through Ray's "
        "metrics agent)",
    )
    workers: int | None = Field(None, ge=1, description="generator worker actors (default: one per CPU)")
    max_workers: int | None = Field(
        None,
        ge=1,
        description="most generator workers: the pool grows toward this when nodes join the cluster "
        "mid-run (default: no growth past the starting workers)",
    )
    batch_size: int = Field(256, ge=1, description="most requests in one call from a worker to a gateway")
    batch_wait_ms: float = Field(20.0, ge=0, description="how long a worker gathers requests into one batch")
    concurrency: int = Field(512, ge=1, description="units in flight per shard")
    shards_per_worker: int = Field(
        2,
        ge=1,
        description="shards a Ray worker makes at once (its memory is about this many shards); the "
        "local executor keeps concurrency x this many units unfinished, opening shards as units end",
    )
    gateways_per_node: int = Field(
        1, ge=1, description="gateway processes per node; keys are dealt to them, each key to one"
    )
    max_failure_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description="the job stops early, everything committed, when more than this share of "
        "the last failure_window model requests failed",
    )
    failure_window: int = Field(
        200,
        ge=1,
        description="requests in the sliding window of max_failure_rate (and the fewest made before it applies)",
    )
    max_outage_s: float = Field(
        300.0,
        gt=0,
        description="how long a provider may go without answering a single request (429s, 5xx, "
        "timeouts, lost connections, all retried with backoff meanwhile) before the job "
        "stops, everything committed, to be run again when it is back",
    )
    breaker: BreakerSpec = Field(
        default_factory=BreakerSpec, description="every provider's circuit breaker (a provider's 'breaker' overrides)"
    )


__all__ = ["EngineSpec"]
