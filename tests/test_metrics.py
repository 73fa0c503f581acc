"""Metrics: one registry per app, labelled children looked up once."""

from __future__ import annotations

from prometheus_client import generate_latest

from tokenbroker.metrics import Metrics


def test_a_child_is_the_labelled_metric_and_is_looked_up_once() -> None:
    metrics = Metrics()
    counter = metrics.child(metrics.exchanges, "vault_oidc", "success")
    assert counter is metrics.exchanges.labels("vault_oidc", "success")
    assert metrics.child(metrics.exchanges, "vault_oidc", "success") is counter
    assert metrics.child(metrics.exchanges, "vault_oidc", "denied") is not counter
    counter.inc()
    exposed = generate_latest(metrics.registry).decode()
    assert (
        'tokenbroker_exchanges_total{credential_type="vault_oidc",outcome="success"} 1.0' in exposed
    )


def test_the_cache_series_exist_at_zero_before_any_exchange() -> None:
    exposed = generate_latest(Metrics().registry).decode()
    for cache in ("issued", "jwks"):
        assert f'tokenbroker_cache_hits_total{{cache="{cache}"}} 0.0' in exposed
        assert f'tokenbroker_cache_misses_total{{cache="{cache}"}} 0.0' in exposed
