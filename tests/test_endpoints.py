"""EDS: split horizon and locality load balancing, as table tests against Istio's behaviour."""
from __future__ import annotations

from fractions import Fraction

import pytest

from compiler.endpoints import Group, Target, apply_distribute, apply_failover, split_horizon
from compiler.locality import Locality
from compiler.model import Network, NetworkGateway
from compiler.view import ProxyView, make_view

NETWORKS = {
    "n1": Network("n1", (NetworkGateway("1.1.1.1", 15443),), (), ()),
    "n2": Network("n2", (NetworkGateway("2.2.2.2", 15443), NetworkGateway("2.2.2.20", 15443)), (), ()),
    "n3": Network("n3", (NetworkGateway("3.3.3.3", 15443),), (), ()),
    "n4": Network("n4", (), (), ()),
}
HERE = Locality("region1", "zone1", "subzone1")


def group(*targets: Target) -> list[Group]:
    return [Group(HERE, tuple(targets), sum(t.weight for t in targets))]


def shares(groups: list[Group]) -> dict[str, Fraction]:
    total = sum(t.weight for g in groups for t in g.targets)
    out: dict[str, Fraction] = {}
    for g in groups:
        for t in g.targets:
            out[t.address] = out.get(t.address, 0) + Fraction(t.weight, total)
    return out


ONE_PER_NETWORK = group(*(Target(f"10.0.0.{i}", 8080, 1, f"n{i}", sidecar=True) for i in (1, 2, 3, 4)))

# Every remote endpoint becomes its network's gateways (weight split evenly over them);
# n4 has no gateway, so its endpoint is sent directly; weights scale by lcm(1, 2, 1) = 2.
SPLIT_HORIZON = {
    "n1": {"10.0.0.1": Fraction(1, 4), "10.0.0.4": Fraction(1, 4), "2.2.2.2": Fraction(1, 8),
           "2.2.2.20": Fraction(1, 8), "3.3.3.3": Fraction(1, 4)},
    "n2": {"10.0.0.2": Fraction(1, 4), "10.0.0.4": Fraction(1, 4), "1.1.1.1": Fraction(1, 4),
           "3.3.3.3": Fraction(1, 4)},
    "n3": {"10.0.0.3": Fraction(1, 4), "10.0.0.4": Fraction(1, 4), "1.1.1.1": Fraction(1, 4),
           "2.2.2.2": Fraction(1, 8), "2.2.2.20": Fraction(1, 8)},
    "n4": {"10.0.0.4": Fraction(1, 4), "1.1.1.1": Fraction(1, 4), "2.2.2.2": Fraction(1, 8),
           "2.2.2.20": Fraction(1, 8), "3.3.3.3": Fraction(1, 4)},
}


@pytest.mark.parametrize("network", sorted(SPLIT_HORIZON))
def test_split_horizon_table(network):
    result = split_horizon(ONE_PER_NETWORK, network, NETWORKS, mtls=None)
    assert shares(result) == SPLIT_HORIZON[network]
    (only,) = result
    gateways = [t for t in only.targets if t.gateway]
    assert [t.address for t in gateways] == sorted(t.address for t in gateways), "gateways sorted by address"
    assert not any(t.gateway for t in only.targets[: len(only.targets) - len(gateways)]), "gateways come last"
    assert only.weight == sum(t.weight for t in only.targets)


def test_gateway_weight_sums_the_endpoints_it_stands_for():
    targets = group(Target("10.0.0.1", 80, 1, "n1", sidecar=True),
                    *(Target(f"10.2.0.{i}", 80, w, "n2", sidecar=True) for i, w in ((1, 3), (2, 1))))
    (result,) = split_horizon(targets, "n1", NETWORKS, mtls=None)
    by_address = {t.address: t.weight for t in result.targets}
    # (3 + 1) * 2 / 2 gateways = 4 each, against 1 * 2 for the local endpoint
    assert by_address == {"10.0.0.1": 2, "2.2.2.2": 4, "2.2.2.20": 4}


def test_endpoints_without_sidecar_are_dropped_across_networks_but_kept_at_home():
    plain = group(Target("10.0.0.1", 80, 1, "n1", sidecar=True), Target("10.0.0.2", 80, 1, "n2"))
    assert set(shares(split_horizon(plain, "n1", NETWORKS, mtls=None))) == {"10.0.0.1"}
    # from n2, the local one is direct and the n1 one (with a sidecar) goes through n1's gateway
    assert set(shares(split_horizon(plain, "n2", NETWORKS, mtls=None))) == {"1.1.1.1", "10.0.0.2"}


def test_destination_rule_decides_mtls_when_it_says():
    targets = group(Target("10.0.0.1", 80, 1, "n1"), Target("10.0.0.2", 80, 1, "n2", sidecar=True))
    # ISTIO_MUTUAL: even an endpoint without a known sidecar is reached through the gateway
    assert set(shares(split_horizon(group(Target("10.0.0.2", 80, 1, "n2")), "n1", NETWORKS, mtls=True))) == {
        "2.2.2.2", "2.2.2.20"}
    # DISABLE (or SIMPLE, MUTUAL): no SNI routing is possible, the remote endpoint is dropped
    assert set(shares(split_horizon(targets, "n1", NETWORKS, mtls=False))) == {"10.0.0.1"}


def test_endpoint_without_network_is_always_direct():
    result = split_horizon(group(Target("10.9.9.9", 80, 1, "")), "n2", NETWORKS, mtls=False)
    assert shares(result) == {"10.9.9.9": 1}


def test_a_group_left_empty_is_dropped():
    remote_plain = [Group(Locality("r2"), (Target("10.0.0.2", 80, 1, "n2"),), 1)]
    assert split_horizon(remote_plain, "n1", NETWORKS, mtls=None) == []


LOCALITIES = ["region1/zone1/subzone1", "region1/zone1/subzone1", "region1/zone1/subzone2",
              "region1/zone1/subzone3", "region1/zone2", "region2", "region3"]


def locality_groups() -> list[Group]:
    return [Group(Locality.parse(loc), (Target(f"10.0.0.{i}", 80, 1),), 1) for i, loc in enumerate(LOCALITIES)]


def test_distribute_weights():
    distribute = [{"from": "region1/zone1/subzone1",
                   "to": {"region1/zone1/subzone1": 80, "region1/zone1/subzone2": 15,
                          "region1/zone1/subzone3": 5}}]
    result = apply_distribute(locality_groups(), HERE, distribute)
    weights = {t.address: g.weight for g in result for t in g.targets}
    expected = [40, 40, 15, 5, 0, 0, 0]
    # zero-weight localities carry no endpoints at all
    assert weights == {f"10.0.0.{i}": w for i, w in enumerate(expected) if w}


def test_distribute_wildcards_and_first_matching_rule():
    distribute = [{"from": "region9/*", "to": {"region9": 100}},
                  {"from": "region1/*", "to": {"region1/*": 60, "region2/*": 40}}]
    result = apply_distribute(locality_groups(), HERE, distribute)
    weights = {t.address: g.weight for g in result for t in g.targets}
    # five region1 groups share 60 (ceil(60/5) = 12 each); region2 alone gets 40; region3 nothing
    assert weights == {"10.0.0.0": 12, "10.0.0.1": 12, "10.0.0.2": 12, "10.0.0.3": 12, "10.0.0.4": 12,
                       "10.0.0.5": 40}


def test_distribute_without_a_matching_rule_changes_nothing():
    groups = locality_groups()
    assert apply_distribute(groups, HERE, [{"from": "region7", "to": {"region7": 100}}]) == groups


def view_at(locality: Locality, **labels) -> ProxyView:
    return ProxyView("c1", "n1", locality, "sidecar", "default", tuple(sorted(labels.items())))


def priorities(groups: list[Group]) -> list[int]:
    by_address = {t.address: g.priority for g in groups for t in g.targets}
    return [by_address[f"10.0.0.{i}"] for i in range(len(LOCALITIES))]


def test_failover_priorities():
    result = apply_failover(locality_groups(), view_at(HERE), [{"from": "region1", "to": "region2"}], [])
    assert priorities(result) == [0, 0, 1, 1, 2, 3, 4]


def test_failover_priorities_are_compacted():
    groups = [g for g in locality_groups() if g.locality.zone != "zone1"]  # no 0 or 1 left
    result = apply_failover(groups, view_at(HERE), [], [])
    assert sorted({g.priority for g in result}) == [0, 1]


def test_failover_priority_labels_rank_first():
    groups = [Group(Locality("region1", "zone1", "subzone1"),
                    (Target("10.0.0.1", 80, 1, labels={"tier": "gold", "rack": "a"}),
                     Target("10.0.0.2", 80, 1, labels={"tier": "gold", "rack": "b"}),
                     Target("10.0.0.3", 80, 1, labels={"tier": "silver", "rack": "a"})), 3)]
    result = apply_failover(groups, view_at(HERE, tier="gold", rack="a"), [], ["tier", "rack"])
    by_address = {t.address: g.priority for g in result for t in g.targets}
    # both labels match: 0; only the first: 1; the first does not match: 2 (the second then never counts)
    assert by_address == {"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 2}


def test_sample_mesh_split_horizon_from_each_network(sample_mesh):
    from compiler.endpoints import build_load_assignment
    service = sample_mesh.services["reviews.bookinfo.svc.cluster.local"]
    port = service.ports[0]
    far = build_load_assignment(sample_mesh, make_view(sample_mesh, "cluster-c"), service, port, None)
    addresses = {ep.endpoint.address.socket_address.address for loc in far.endpoints for ep in loc.lb_endpoints}
    assert "192.0.2.10" in addresses and not any(a.startswith(("10.1.", "10.2.")) for a in addresses)
    assert any(a.startswith("10.3.") for a in addresses)
    near = build_load_assignment(sample_mesh, make_view(sample_mesh, "cluster-a"), service, port, None)
    addresses = {ep.endpoint.address.socket_address.address for loc in near.endpoints for ep in loc.lb_endpoints}
    assert "198.51.100.10" in addresses and not any(a.startswith("10.3.") for a in addresses)
    assert all(loc.load_balancing_weight.value > 0 for loc in near.endpoints)
    # reviews' DestinationRule has outlierDetection and failover: the caller's own zone comes first
    assert [loc.priority for loc in near.endpoints if loc.locality.zone == "us-east-1a"] == [0]
    assert {loc.priority for loc in near.endpoints if loc.locality.region == "eu-west"} == {2}


def test_views_alike_but_for_the_labels_failover_priority_reads_get_their_own_assignments():
    """An assignment is kept once per mesh for the views alike in what it reads of them
    (endpoints.view_facts): the labels failoverPriority ranks by are among them, so two proxies of one
    place but different tiers each get theirs, on one mesh as on meshes of their own."""
    from compiler.xds import compile_view
    from tests.conftest import ONE_CLUSTER, mesh_from
    files = {"mesh.yaml": ONE_CLUSTER + """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: search, namespace: shop}
spec:
  hosts: [search.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.1.0.1, labels: {tier: gold}}
  - {address: 10.1.0.2, labels: {tier: silver}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: search, namespace: shop}
spec:
  host: search.shop.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
    loadBalancer: {localityLbSetting: {enabled: true, failoverPriority: [tier]}}
"""}
    name = "outbound|8080||search.shop.svc.cluster.local"

    def first(mesh, tier: str) -> dict[str, int]:
        view = make_view(mesh, "cluster-a", "sidecar~10.1.9.1~web-1.shop~shop.svc.cluster.local", {"tier": tier})
        assignment = compile_view(mesh, view).message("type.googleapis.com/envoy.config.endpoint.v3."
                                                      "ClusterLoadAssignment", name)
        return {lb.endpoint.address.socket_address.address: group.priority
                for group in assignment.endpoints for lb in group.lb_endpoints}

    shared = mesh_from(files)
    together = [first(shared, "gold"), first(shared, "silver")]
    assert together == [{"10.1.0.1": 0, "10.1.0.2": 1}, {"10.1.0.1": 1, "10.1.0.2": 0}]
    assert together == [first(mesh_from(files), "gold"), first(mesh_from(files), "silver")]
