"""Prometheus metrics, held in a registry per application (no process-global state).

Under ``server.workers`` > 1 the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` for its workers
before they start (prometheus-client reads it at import): every worker then writes its values to
files there, and a scrape of any worker reads all of them (``Metrics.exposition``).
"""

from __future__ import annotations

import os
from typing import TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the broker exports, registered in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.exchanges = Counter(
            "tokenbroker_exchanges",
            "Exchanges decided, by credential type and outcome.",
            ["credential_type", "outcome"],
            registry=self.registry,
        )
        self.exchange_seconds = Histogram(
            "tokenbroker_exchange_seconds",
            "Latency of a whole exchange.",
            ["credential_type"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_seconds = Histogram(
            "tokenbroker_backend_seconds",
            "Latency of a backend call.",
            ["credential_type"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.jwks_fetches = Counter(
            "tokenbroker_jwks_fetches",
            "JWKS fetches, by issuer and outcome.",
            ["issuer", "outcome"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "tokenbroker_cache_hits",
            "Lookups answered from a cache, by cache.",
            ["cache"],
            registry=self.registry,
        )
        self.cache_misses = Counter(
            "tokenbroker_cache_misses",
            "Lookups that missed a cache, by cache.",
            ["cache"],
            registry=self.registry,
        )
        # Every exchange counts in these: looked up once here, since labels() checks, locks and
        # hashes on each call. The series exist from the start, at zero.
        self.issued_cache_hits = self.cache_hits.labels("issued")
        self.issued_cache_misses = self.cache_misses.labels("issued")
        self.jwks_cache_hits = self.cache_hits.labels("jwks")
        self.jwks_cache_misses = self.cache_misses.labels("jwks")
        # One series per live worker (labelled pid under workers > 1): how many serve, since when.
        self.worker_start_time = Gauge(
            "tokenbroker_worker_start_time_seconds",
            "When this worker process started, in Unix time.",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.worker_start_time.set_to_current_time()
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def child(self, metric: _Metric, *labels: str) -> _Metric:
        """``metric.labels(*labels)``, remembered: label values here are credential types and
        outcomes, a small fixed set."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return cast(_Metric, found)

    def exposition(self) -> bytes:
        """The Prometheus text of this registry, or of every worker's under multiprocess mode."""
        directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
        if not directory:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
