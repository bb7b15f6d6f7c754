"""Prometheus metrics of one running server.

Each server gets its own registry, so several can run in one process (tests,
benchmarks) without colliding in the global one.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from compiler.xds_types import BY_URL

XDS_PROTOCOLS = ("sotw", "delta")  # the two ADS variants: state of the world, incremental
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def type_label(type_url: str) -> str:
    known = BY_URL.get(type_url)
    return known.dump_key if known is not None else type_url.rsplit(".", 1)[-1]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected = Gauge("galleon_xds_connected_proxies", "xDS streams open now, by protocol (sotw, delta)",
                               ["protocol"], registry=r)
        for protocol in XDS_PROTOCOLS:  # (shown at 0 too: an alert on no proxy connected needs the series)
            self.connected.labels(protocol)
        self.views = Gauge("galleon_xds_views", "Distinct proxy views compiled and held", registry=r)
        self.pushes = Counter("galleon_xds_pushes", "xDS responses sent", ["type"], registry=r)
        self.nacks = Counter("galleon_xds_nacks", "xDS responses a proxy rejected", ["type"], registry=r)
        self.denied = Counter("galleon_denied", "Requests on the gRPC port refused by authentication or "
                              "authorization, by reason", ["reason"], registry=r)
        self.refused = Counter("galleon_xds_refused", "xDS streams refused, by reason", ["reason"], registry=r)
        self.views_bytes = Gauge("galleon_xds_views_bytes",
                                 "Bytes the compiled views hold (resources and responses), against --views-memory",
                                 registry=r)
        self.views_memory = Gauge("galleon_xds_views_memory_bytes", "The compiled views' budget (--views-memory)",
                                  registry=r)
        self.view_evictions = Counter("galleon_xds_view_evictions",
                                      "Views no connected proxy held, let go to make room for a new one", registry=r)
        self.push_latency = Histogram(
            "galleon_xds_push_latency_seconds",
            "From a new configuration being published to a proxy's response being sent",
            ["type"], buckets=LATENCY_BUCKETS, registry=r)
        self._pushed: dict[str, tuple] = {}  # type URL served -> its pushes' counter and latency children
        self.compile_seconds = Histogram("galleon_compile_seconds", "Time to compile and serialize one view",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.loads = Counter("galleon_source_loads", "Source revisions read, by outcome", ["outcome"], registry=r)
        self.snapshot_valid = Gauge("galleon_snapshot_valid",
                                    "1 when the newest revision read is valid, 0 when it has errors", registry=r)
        self.revision_info = Gauge("galleon_revision_info", "The revision served (value 1)", ["revision"],
                                   registry=r)
        self.ca_reconciles = Counter("galleon_ca_reconciles", "CA reconciles of this cluster's cacerts, by outcome",
                                     ["outcome"], registry=r)
        self.dns_reconciles = Counter("galleon_dns_reconciles", "DNS reconciles of this cluster's CoreDNS block, "
                                      "by outcome", ["outcome"], registry=r)
        self.leader = Gauge("galleon_leader", "1 while this replica holds the lease (or runs alone)", registry=r)
        self.leader.set(1)
        self.last_success = Gauge("galleon_last_success_timestamp_seconds",
                                  "When the source was last read with its newest revision valid and served",
                                  registry=r)

        self.registry_push_seconds = Histogram(
            "galleon_registry_push_seconds", "Time to publish a batch of registry changes (mesh and views)",
            buckets=LATENCY_BUCKETS, registry=r)

    def pushed(self, type_url: str, latency: float | None) -> None:
        """A response of a served type was sent to a stream; ``latency``: since the publish that woke it
        (None: it answered a request). Every stream's every push counts, so the labelled series are
        looked up once per type."""
        series = self._pushed.get(type_url)
        if series is None:
            label = type_label(type_url)
            series = self._pushed[type_url] = (self.pushes.labels(label), self.push_latency.labels(label))
        series[0].inc()
        if latency is not None:
            series[1].observe(latency)

    def follow_registry(self, status: Callable[[], list[dict]]) -> None:
        """Expose the registry's figures (registry/store.py's status), read when scraped."""
        self.registry.register(_RegistryCollector(status))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _RegistryCollector:
    def __init__(self, status: Callable[[], list[dict]]) -> None:
        self.status = status

    def collect(self):
        clusters = self.status()
        synced = GaugeMetricFamily("galleon_registry_synced",
                                   "1 once a cluster's registry has listed every kind it reads", labels=["cluster"])
        stale = GaugeMetricFamily("galleon_registry_stale",
                                  "1 while a cluster's registry cannot be read (its last objects are kept)",
                                  labels=["cluster"])
        endpoints = GaugeMetricFamily("galleon_registry_endpoints",
                                      "Endpoint addresses the EndpointSlices of a cluster list", labels=["cluster"])
        events = CounterMetricFamily("galleon_registry_events", "Watch events read from a cluster's registry",
                                     labels=["cluster", "kind"])
        errors = CounterMetricFamily("galleon_registry_errors",
                                     "Errors reading a cluster's registry, by kind (\"\": the whole cluster)",
                                     labels=["cluster", "kind"])
        for c in clusters:
            name = c["cluster"]
            synced.add_metric([name], 1 if c["synced"] else 0)
            stale.add_metric([name], 1 if c["stale"] else 0)
            endpoints.add_metric([name], c["endpoints"])
            for kind, count in sorted(c["events"].items()):
                events.add_metric([name, kind], count)
            for kind, count in sorted(c["errors"].items()):
                errors.add_metric([name, kind], count)
        return [synced, stale, endpoints, events, errors]
