"""Prometheus metrics of one KME (``prometheus_client``), in a registry the caller may share.

A link node that runs a KME in-process passes its own :class:`prometheus_client.CollectorRegistry`
to ``start_kme(..., registry=...)`` and adds its gauges to it; one ``/metrics`` then shows both.
No metric carries key bytes or key IDs: labels are endpoints, HTTP statuses and peer actions.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["KmeMetrics", "CONTENT_TYPE_LATEST"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class KmeMetrics:
    """The KME's counters, histogram and gauges, registered in ``registry`` (a new one if ``None``).

    Attributes:
        deliveries: ``qkd_kme_deliveries_total{endpoint}`` — keys handed out (enc_keys, dec_keys).
        errors: ``qkd_kme_errors_total{status}`` — API answers other than 200.
        latency: ``qkd_kme_request_seconds{endpoint}`` — request latency histogram.
        stored_keys: ``qkd_kme_stored_keys`` — keys in the store (updated at each scrape).
        free_keys: ``qkd_kme_free_keys`` — unassigned keys of the stock size.
        peer_failures: ``qkd_kme_peer_failures_total{action}`` — peer calls that failed.
        unsettled: ``qkd_kme_unsettled_reservations`` — reservations waiting to be settled with the peer.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.deliveries = Counter("qkd_kme_deliveries", "Keys delivered to SAEs", ["endpoint"], registry=r)
        self.errors = Counter("qkd_kme_errors", "API requests answered with an error", ["status"], registry=r)
        self.latency = Histogram("qkd_kme_request_seconds", "KME request latency", ["endpoint"], buckets=_BUCKETS,
                                 registry=r)
        self.stored_keys = Gauge("qkd_kme_stored_keys", "Keys in the key store (free or assigned)", registry=r)
        self.free_keys = Gauge("qkd_kme_free_keys", "Free keys of the stock size", registry=r)
        self.peer_failures = Counter("qkd_kme_peer_failures", "Calls to the peer KME that failed", ["action"],
                                     registry=r)
        self.unsettled = Gauge("qkd_kme_unsettled_reservations", "Reservations not yet settled with the peer",
                               registry=r)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
