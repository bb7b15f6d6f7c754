"""The traffic-share model (compiler/diff/traffic.py) on hand-made Envoy resources.

Expected figures are worked out by hand from Envoy's load-balancing documentation
(priority levels with overprovisioning factor 1.4, panic threshold, locality-weighted LB);
tests/e2e/test_traffic_envoy.py checks the model against a real Envoy.
"""
from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc, route_pb2

from compiler.diff.traffic import (NO_CLUSTER, NO_HEALTHY_UPSTREAM, Destination, cluster_shares,
                                   service_shares)
from compiler.xds import CompiledView
from tests.conftest import compiled_from
from compiler.xds_types import CLUSTER, ENDPOINT, ROUTE

NAME = "outbound|80||svc.ns.svc.cluster.local"


def assignment(groups, overprovisioning=None) -> endpoint_pb2.ClusterLoadAssignment:
    """groups: (locality 'r/z', priority, locality weight, [(address, weight) or (address, weight, port)])."""
    out = endpoint_pb2.ClusterLoadAssignment(cluster_name=NAME)
    for locality, priority, weight, hosts in groups:
        region, zone = locality.split("/")
        group = out.endpoints.add(priority=priority)
        group.locality.region, group.locality.zone = region, zone
        if weight:
            group.load_balancing_weight.value = weight
        for address, host_weight, *port in hosts:
            lb = group.lb_endpoints.add()
            lb.endpoint.address.socket_address.address = address
            lb.endpoint.address.socket_address.port_value = port[0] if port else 80
            lb.load_balancing_weight.value = host_weight
    if overprovisioning:
        out.policy.overprovisioning_factor.value = overprovisioning
    return out


def config(groups, weighted=True, panic=None, lb=cluster_pb2.Cluster.LEAST_REQUEST, routes=None) -> CompiledView:
    cluster = cluster_pb2.Cluster(name=NAME, type=cluster_pb2.Cluster.EDS, lb_policy=lb)
    if weighted:
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    if panic is not None:
        cluster.common_lb_config.healthy_panic_threshold.value = panic
    return compiled_from({CLUSTER: [cluster], ENDPOINT: [assignment(groups)], ROUTE: list((routes or {}).values())})


def shares(view: CompiledView, down: str | None = None) -> dict[str, float]:
    return {pick.address: round(share, 4) for pick, share in cluster_shares(view, NAME, down).items()}


def test_locality_weights_then_endpoint_weights():
    view = config([("r/a", 0, 3, [("10.0.0.1", 1), ("10.0.0.2", 2)]), ("r/b", 0, 1, [("10.0.0.3", 1)])])
    assert shares(view) == {"10.0.0.1": 0.25, "10.0.0.2": 0.5, "10.0.0.3": 0.25}


def test_hosts_on_one_address_are_each_a_host():
    """Pods on one machine (the demo's, on 127.0.0.1) or with hostNetwork share an address: each is a
    host of its own, by its port; the shares still add up to the whole."""
    view = config([("r/a", 0, 1, [("127.0.0.1", 1, 18081), ("127.0.0.1", 1, 18083), ("10.0.0.3", 1, 18082)])])
    assert shares(view) == {"127.0.0.1": round(2 / 3, 4), "10.0.0.3": round(1 / 3, 4)}


def test_without_locality_weighted_lb_the_locality_weights_are_ignored():
    view = config([("r/a", 0, 3, [("10.0.0.1", 1), ("10.0.0.2", 2)]), ("r/b", 0, 1, [("10.0.0.3", 1)])],
                  weighted=False)
    assert shares(view) == {"10.0.0.1": 0.25, "10.0.0.2": 0.5, "10.0.0.3": 0.25}
    view = config([("r/a", 0, 3, [("10.0.0.1", 1)]), ("r/b", 0, 1, [("10.0.0.3", 3)])], weighted=False)
    assert shares(view) == {"10.0.0.1": 0.25, "10.0.0.3": 0.75}


def test_random_ignores_endpoint_weights():
    view = config([("r/a", 0, 0, [("10.0.0.1", 1), ("10.0.0.2", 3)])], weighted=False, lb=cluster_pb2.Cluster.RANDOM)
    assert shares(view) == {"10.0.0.1": 0.5, "10.0.0.2": 0.5}


def test_healthy_priority_zero_takes_everything():
    view = config([("r/a", 0, 1, [("10.0.0.1", 1)]), ("r/b", 1, 1, [("10.0.0.2", 1)])], panic=0)
    assert shares(view) == {"10.0.0.1": 1.0}


def test_failover_spills_what_priority_zero_cannot_hold_with_overprovisioning():
    # P0 has r/a (down) and r/c (2 healthy of 3 hosts in P0): health = min(100, 1.4 x 2/3) = 93.33 %
    view = config([("r/a", 0, 1, [("10.0.0.1", 1)]), ("r/c", 0, 1, [("10.0.0.4", 1), ("10.0.0.5", 1)]),
                   ("r/b", 1, 1, [("10.0.0.2", 1)])], panic=0)
    got = shares(view, down="r/a")
    assert got["10.0.0.2"] == pytest.approx(1 - 1.4 * 2 / 3, abs=1e-4)
    # r/c's effective locality weight is 1 x min(1, 1.4 x 2/2) = 1; r/a's is 0: r/c takes all of P0's load
    assert got["10.0.0.4"] == got["10.0.0.5"] == pytest.approx(1.4 * 2 / 3 / 2, abs=1e-4)
    assert "10.0.0.1" not in got


def test_whole_priority_down_moves_to_the_next():
    view = config([("r/a", 0, 1, [("10.0.0.1", 1)]), ("r/b", 1, 1, [("10.0.0.2", 1)])], panic=0)
    assert shares(view, down="r/a") == {"10.0.0.2": 1.0}


def test_nothing_healthy_without_panic_is_a_503_and_with_panic_uses_every_host():
    view = config([("r/a", 0, 1, [("10.0.0.1", 1), ("10.0.0.2", 1)])], panic=0)
    assert shares(view, down="r/a") == {NO_HEALTHY_UPSTREAM: 1.0}
    # Envoy's default panic threshold (50 %): 1 healthy of 3 is in panic, so all three share the load
    view = config([("r/a", 0, 0, [("10.0.0.1", 1), ("10.0.0.2", 1)]), ("r/b", 0, 0, [("10.0.0.3", 1)])],
                  weighted=False)
    assert shares(view, down="r/a") == {"10.0.0.1": 0.3333, "10.0.0.2": 0.3333, "10.0.0.3": 0.3333}


def test_a_down_endpoint_picked_in_panic_is_labelled_so():
    """In panic Envoy sends requests to endpoints it knows are down: the preview must not show them as
    an ordinary destination of the failover."""
    view = config([("r/a", 0, 0, [("10.0.0.1", 1), ("10.0.0.2", 1)]), ("r/b", 0, 0, [("10.0.0.3", 1)])],
                  weighted=False)
    picks = cluster_shares(view, NAME, "r/a")
    assert {(p.address, p.down) for p in picks} == {("10.0.0.1", True), ("10.0.0.2", True), ("10.0.0.3", False)}
    got = service_shares(view, "svc.ns.svc.cluster.local", 80, "r/a", {"10.0.0.1": "c1", "10.0.0.2": "c1",
                                                                          "10.0.0.3": "c2"})
    assert got == {Destination("", "c1", "r/a", down=True): pytest.approx(2 / 3),
                   Destination("", "c2", "r/b"): pytest.approx(1 / 3)}
    assert "panic" in Destination("", "c1", "r/a", down=True).text()
    assert "panic" not in Destination("", "c2", "r/b").text()
    # every endpoint healthy: nothing is down, whatever the threshold
    assert not any(p.down for p in cluster_shares(view, NAME, None))


def test_route_weights_split_between_clusters_and_missing_clusters_are_503():
    routes = {"80": route_pb2.RouteConfiguration(name="80", virtual_hosts=[rc.VirtualHost(
        name="svc.ns.svc.cluster.local:80", domains=["*"], routes=[
            rc.Route(match=rc.RouteMatch(prefix="/", headers=[rc.HeaderMatcher(name="x-test", present_match=True)]),
                     route=rc.RouteAction(cluster="outbound|80|test|svc.ns.svc.cluster.local")),
            rc.Route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(weighted_clusters=rc.WeightedCluster(
                clusters=[rc.WeightedCluster.ClusterWeight(name=NAME, weight={"value": 3}),
                          rc.WeightedCluster.ClusterWeight(name="outbound|80|gone|svc.ns.svc.cluster.local",
                                                           weight={"value": 1})])))])])}
    view = config([("r/a", 0, 1, [("10.0.0.1", 1)])], routes=routes)
    got = service_shares(view, "svc.ns.svc.cluster.local", 80, None, {"10.0.0.1": "cluster-1"})
    # the header-matched route is not the catch-all one and is not followed
    assert got == {Destination("", "cluster-1", "r/a"): 0.75, Destination("gone", NO_CLUSTER, ""): 0.25}
    assert service_shares(view, "other.ns.svc.cluster.local", 80, None, {}) is None


def test_a_tcp_port_uses_its_one_cluster():
    view = config([("r/a", 0, 1, [("10.0.0.1", 1)])])
    assert service_shares(view, "svc.ns.svc.cluster.local", 80, None, {}) == {Destination("", "10.0.0.1", "r/a"): 1.0}
