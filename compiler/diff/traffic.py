"""Where a sidecar's requests to a service go: Envoy's load balancing, applied to compiled config.

The shares are computed from the proxy's own configuration (route weights, then each cluster's
priorities, locality weights and endpoint weights), with the rules Envoy applies:

- priority load: a priority's health is ``min(100, overprovisioning_factor/100 x healthy/total)``
  percent of hosts; priority 0 takes its health, the next the rest up to its own, and so on; when
  the healths sum to less than 100 the loads are scaled up to 100;
- panic: a priority whose healthy hosts are fewer than ``healthy_panic_threshold`` percent (50
  unless set; Istio sets 0 with outlier detection) balances over all its hosts; without panic, a
  priority with no healthy host answers 503;
- with ``locality_weighted_lb_config`` a locality gets ``weight x min(1, factor x healthy/total)``
  of its priority, then its hosts share that by endpoint weight; without it the priority's hosts
  share it by endpoint weight (RANDOM ignores weights).

"Every endpoint healthy" is the normal case; "failover" marks every host in the caller's own
locality unhealthy. Only the catch-all route of the service's virtual host (what a request that
matches no specific rule gets) is followed.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, NamedTuple

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf.message import Message

from ..names import parse_cluster_name, sidecar_route_name, virtual_host_name
from ..xds import CompiledView
from ..xds_types import CLUSTER, ENDPOINT, ROUTE

DEFAULT_OVERPROVISIONING = 140
DEFAULT_PANIC_THRESHOLD = 50.0
NO_HEALTHY_UPSTREAM = "no healthy endpoint (503)"
NO_CLUSTER = "no such cluster (503)"
NO_ENDPOINT = "no endpoints (503)"
ORIGINAL_DESTINATION = "the address the caller asked for (ORIGINAL_DST)"
PANIC = "down, yet sent requests (panic: too few healthy endpoints)"


class Pick(NamedTuple):
    """Where a share of one cluster's requests lands: an endpoint's locality and address, and whether
    that endpoint is down (Envoy picks it only in panic)."""

    locality: str
    address: str
    down: bool = False


@dataclass(frozen=True, order=True)
class Destination:
    """Where a share of requests lands. ``place`` is the Kubernetes cluster of the endpoint, or
    ``<network> gateway`` for a remote network reached through its east-west gateway."""

    subset: str
    place: str
    locality: str
    down: bool = False  # picked though down: its priority is in panic, so Envoy balances over every host

    def text(self) -> str:
        return " · ".join(p for p in (self.subset and f"subset {self.subset}", self.place, self.locality,
                                      self.down and PANIC) if p)


Shares = dict[Destination, float]  # fractions of requests, summing to 1 when traffic goes anywhere


@dataclass(frozen=True)
class _Host:
    address: str
    port: int  # (two pods may share an address, on one machine or by hostNetwork: each is a host)
    weight: int
    locality: str
    healthy: bool


def service_shares(config: CompiledView, host: str, port: int, caller_locality: str | None,
                   places: Mapping[str, str]) -> Shares | None:
    """The shares of requests from this view to ``host:port``; with ``caller_locality``, when every
    host there is down. None when the view has no route to the service."""
    destinations = _route_destinations(config, host, port)
    if destinations is None:
        return None
    total = sum(weight for _, weight in destinations)
    shares: Shares = defaultdict(float)
    for cluster_name, weight in destinations:
        if not cluster_name.startswith("outbound|"):
            shares[Destination("", cluster_name, "")] += weight / total  # a direct response or redirect
            continue
        subset = parse_cluster_name(cluster_name)[1]
        for pick, share in cluster_shares(config, cluster_name, caller_locality).items():
            destination = Destination(subset, places.get(pick.address, pick.address), pick.locality, pick.down)
            shares[destination] += share * weight / total
    return dict(sorted(shares.items()))


def _route_destinations(config: CompiledView, host: str, port: int) -> list[tuple[str, int]] | None:
    """(cluster, weight) of the catch-all route to ``host:port``; a TCP port's one cluster."""
    route_config = config.message(ROUTE, sidecar_route_name(port))
    if route_config is None:
        name = f"outbound|{port}||{host}"
        return [(name, 1)] if name in config.resources[CLUSTER] else None
    vhost = next((v for v in route_config.virtual_hosts if v.name == virtual_host_name(host, port)), None)
    if vhost is None or not vhost.routes:
        return None
    route = next((r for r in vhost.routes if _catch_all(r)), vhost.routes[0])
    if route.HasField("direct_response"):
        return [(f"direct response {route.direct_response.status}", 1)]
    if route.HasField("redirect"):
        return [("redirect", 1)]
    action = route.route
    if action.HasField("weighted_clusters"):
        return [(c.name, c.weight.value) for c in action.weighted_clusters.clusters if c.weight.value > 0]
    return [(action.cluster, 1)]


def _catch_all(route: Message) -> bool:
    match = route.match
    return (match.prefix == "/" or match.path_separated_prefix == "/") and not match.headers \
        and not match.query_parameters


def cluster_shares(config: CompiledView, cluster_name: str, caller_locality: str | None) -> dict[Pick, float]:
    """Where one cluster's requests land, and their shares. Where Envoy picks no endpoint of its own
    the address says why (NO_CLUSTER, NO_ENDPOINT, ORIGINAL_DESTINATION, NO_HEALTHY_UPSTREAM)."""
    cluster = config.message(CLUSTER, cluster_name)
    if cluster is None:
        return {Pick("", NO_CLUSTER): 1.0}
    if cluster.type == cluster_pb2.Cluster.EDS:
        assignment = config.message(ENDPOINT, cluster_name)
    elif cluster.HasField("load_assignment"):
        assignment = cluster.load_assignment
    else:
        return {Pick("", ORIGINAL_DESTINATION): 1.0}
    if assignment is None or not any(g.lb_endpoints for g in assignment.endpoints):
        return {Pick("", NO_ENDPOINT): 1.0}
    factor = (assignment.policy.overprovisioning_factor.value
              if assignment.policy.HasField("overprovisioning_factor") else DEFAULT_OVERPROVISIONING) / 100
    lb = cluster.common_lb_config
    panic = lb.healthy_panic_threshold.value if lb.HasField("healthy_panic_threshold") else DEFAULT_PANIC_THRESHOLD
    by_priority: dict[int, list[tuple[str, int, list[_Host]]]] = defaultdict(list)
    for group in assignment.endpoints:
        where = "/".join(filter(None, (group.locality.region, group.locality.zone, group.locality.sub_zone)))
        hosts = [_Host(lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value,
                       lb.load_balancing_weight.value or 1, where, where != caller_locality)
                 for lb in group.lb_endpoints]
        by_priority[group.priority].append((where, group.load_balancing_weight.value or 1, hosts))
    levels = [by_priority[p] for p in sorted(by_priority)]
    loads = _priority_loads(levels, factor)
    weighted = lb.HasField("locality_weighted_lb_config")
    equal = cluster.lb_policy == cluster_pb2.Cluster.RANDOM
    shares: dict[Pick, float] = defaultdict(float)
    for level, load in zip(levels, loads):
        if load <= 0:
            continue
        hosts = [h for _, _, group in level for h in group]
        healthy = sum(h.healthy for h in hosts)
        in_panic = 100 * healthy / len(hosts) < panic
        if not healthy and not in_panic:
            shares[Pick("", NO_HEALTHY_UPSTREAM)] += load  # Envoy answers 503 "no healthy upstream"
            continue
        for host, share in _level_shares(level, factor, weighted, equal, in_panic).items():
            shares[Pick(host.locality, host.address, not host.healthy)] += load * share
    return dict(shares)


def _priority_loads(levels: list, factor: float) -> list[float]:
    health = []
    for level in levels:
        hosts = [h for _, _, group in level for h in group]
        health.append(min(1.0, factor * sum(h.healthy for h in hosts) / len(hosts)) if hosts else 0.0)
    total = min(1.0, sum(health))
    if total == 0:
        return [1.0] + [0.0] * (len(levels) - 1)  # nothing healthy: priority 0 takes it all, in panic
    loads, left = [], 1.0
    for h in health:
        loads.append(min(h, left))
        left -= loads[-1]
    return [load / total for load in loads]


def _level_shares(level: list, factor: float, weighted: bool, equal: bool, in_panic: bool) -> dict[_Host, float]:
    def pickable(hosts: list[_Host]) -> list[_Host]:
        return hosts if in_panic else [h for h in hosts if h.healthy]

    def by_weight(hosts: list[_Host]) -> dict[_Host, float]:
        total = len(hosts) if equal else sum(h.weight for h in hosts)
        return {h: (1 if equal else h.weight) / total for h in hosts} if total else {}

    if not weighted:
        return by_weight(pickable([h for _, _, group in level for h in group]))
    effective = []
    for _, weight, hosts in level:
        available = 1.0 if in_panic else min(1.0, factor * sum(h.healthy for h in hosts) / len(hosts))
        if weight * available > 0 and pickable(hosts):
            effective.append((weight * available, pickable(hosts)))
    total = sum(w for w, _ in effective)
    return {host: w / total * share for w, hosts in effective for host, share in by_weight(hosts).items()}
