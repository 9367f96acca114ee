"""The metrics of a run on the local executor, served for Prometheus by the run's own process.

A local run has no Ray to export through, so :class:`PromMeter` serves the same series a Ray run
exports (:mod:`synth.engine.metrics`: the same names, with Ray's ``ray_`` prefix, and the same
labels: job, provider, model, key alias) at ``http://127.0.0.1:PORT/metrics`` while the run lasts
(``engine.metrics_port``). Like the Ray meter it is a :class:`~synth.providers.metrics.Tally`: the
hot path adds to dicts, and :meth:`PromMeter.flush` moves the totals into the registry each tick.
"""

from __future__ import annotations

from typing import Any

from synth.engine.metrics import CALL_TAGS, COUNTERS, HISTOGRAMS
from synth.errors import ConfigError
from synth.providers.metrics import LATENCY_BOUNDS, Tally, bucket_means

HOST = "127.0.0.1"  # never another interface: the numbers name the job's providers and key aliases


class PromMeter(Tally):
    def __init__(self, job: str, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        super().__init__(bounds)
        self.job = job
        self.registry = CollectorRegistry()  # this run's series only, not the process's defaults
        self._metrics: dict[str, Any] = {
            name: Counter(name, doc, labelnames=tags, namespace="ray", registry=self.registry)
            for name, (doc, tags) in COUNTERS.items()
        }
        for name, doc in HISTOGRAMS.items():
            self._metrics[name] = Histogram(
                name, doc, labelnames=CALL_TAGS, buckets=bounds, namespace="ray", registry=self.registry
            )
        self._server: Any = None

    def serve(self, port: int) -> None:
        """Listen on 127.0.0.1:``port``; a port that is taken is a one-line error."""
        from prometheus_client import start_http_server

        try:
            self._server, _ = start_http_server(port, addr=HOST, registry=self.registry)
        except OSError as e:
            raise ConfigError(
                f"engine.metrics_port: cannot serve metrics on {HOST}:{port} ({e.strerror or e}); "
                "choose a free port or leave it out"
            ) from None

    def flush(self) -> None:
        counts, hists = self.drain()
        job = self.job
        for (name, *labels), value in counts.items():
            if value > 0:
                self._metrics[name].labels(job, *labels).inc(value)
        for (name, *labels), cells in hists.items():
            h = self._metrics[name].labels(job, *labels)
            for mean, n in bucket_means(cells, self.bounds):
                for _ in range(n):
                    h.observe(mean)

    def close(self) -> None:
        """The last counts, then the endpoint ends with the run."""
        self.flush()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


__all__ = ["PromMeter"]
