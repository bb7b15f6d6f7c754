"""EDS: one ClusterLoadAssignment per cluster, as Istio computes it for one proxy.

The steps are separate pure functions over plain data, in Istio's order:
select the service's endpoints for a port and subset, group them by locality,
apply the split horizon for the proxy's network (remote endpoints become
their network's gateways), then locality load balancing (distribute weights,
or failover priorities when outlier detection is on).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Mapping, NamedTuple

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import wrappers_pb2

from . import cache, provenance
from .locality import Locality
from .kinds import CLUSTER_LABEL
from .model import Mesh, Network, Port, Service
from .parse import SourceObject
from .names import cluster_name, sni
from .view import ProxyView

NETWORK_LABEL = "topology.istio.io/network"
REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone",
                                           "topology.istio.io/subzone")


@dataclass(slots=True, init=False)
class Target:
    """One address Envoy may send to: an endpoint, or a remote network's gateway standing for some.
    Its __init__ is written out: compiled (compiler/native.py) it takes half the time of the one
    dataclass generates, which stays interpreted, and a large view makes 200,000 targets."""

    address: str
    port: int
    weight: int
    network: str
    cluster: str
    labels: Mapping[str, str] = field(compare=False)
    gateway: bool
    sidecar: bool  # can terminate Istio mTLS, so it may be reached across networks

    def __init__(self, address: str, port: int, weight: int, network: str = "", cluster: str = "",
                 labels: Mapping[str, str] | None = None, gateway: bool = False, sidecar: bool = False) -> None:
        self.address = address
        self.port = port
        self.weight = weight
        self.network = network
        self.cluster = cluster
        self.labels = {} if labels is None else labels
        self.gateway = gateway
        self.sidecar = sidecar

    def scaled(self, factor: int) -> "Target":
        # Targets are treated as values: a change makes a new one (this is the hot path's copy).
        return Target(self.address, self.port, self.weight * factor, self.network, self.cluster, self.labels,
                      self.gateway, self.sidecar)


@dataclass(slots=True, init=False)
class Group:
    """Envoy's LocalityLbEndpoints: targets in one locality, with a weight and a priority.
    Made 60,000 times for one large view: its __init__ is written out, as Target's.

    A mesh's own groups (``targets_of``, ``subset_groups``) also carry what is derived from their
    targets alone: ``networks`` and, in ``encoded``, their serialized form; so a group that a view
    passes on unchanged costs nothing per target. Whatever makes a group with other targets leaves
    both None. Callers never change a group: a change makes a new one.
    """

    locality: Locality
    targets: tuple[Target, ...]
    weight: int
    priority: int
    networks: frozenset[str] | None = field(compare=False)
    encoded: dict[bool, bytes] | None = field(compare=False)

    def __init__(self, locality: Locality, targets: tuple[Target, ...], weight: int, priority: int = 0,
                 networks: frozenset[str] | None = None, encoded: dict[bool, bytes] | None = None) -> None:
        self.locality = locality
        self.targets = targets
        self.weight = weight
        self.priority = priority
        self.networks = networks
        self.encoded = encoded

    def with_weight(self, weight: int) -> "Group":
        """The same group with another weight (its targets, so what is derived from them, unchanged)."""
        return Group(self.locality, self.targets, weight, self.priority, self.networks, self.encoded)


def targets_of(mesh: Mesh, service: Service, port: Port) -> list[Group]:
    """Every endpoint of a service port as a target, in one group per locality (sorted by locality,
    targets by address); computed once per mesh and shared by all subsets and views."""
    return cache.TARGETS.of(mesh, (service.host, port.number), lambda: _located(service, port))


def _located(service: Service, port: Port) -> list[Group]:
    # Envoy refuses weight 0 on an endpoint; Istio sends such endpoints with weight 1. The index
    # breaks ties, so the sort compares tuples in C and never a Target. (A plain loop and
    # positional arguments: 150,000 endpoints in a large mesh.)
    located = []
    for i, ep in enumerate(service.endpoints):
        number = ep.port_for(port)
        if number is None:  # listed for the service's other ports only
            continue
        located.append((ep.locality, ep.address, number, i, Target(
            ep.address, number, max(ep.weight, 1), ep.network, ep.cluster, ep.labels, False, ep.mtls_ready)))
    located.sort()
    return [_group(locality, tuple([item[4] for item in same]))
            for locality, same in itertools.groupby(located, key=itemgetter(0))]


def _group(locality: Locality, targets: tuple[Target, ...]) -> Group:
    """A group of a mesh's own targets, which keeps what it derives from them."""
    return Group(locality, targets, sum([t.weight for t in targets]), 0, frozenset([t.network for t in targets]), {})


def group_by_locality(groups: list[Group], subset_labels: Mapping[str, str] | None) -> list[Group]:
    """The targets of ``targets_of`` that carry the subset's labels, in their locality groups; a
    group's weight is the sum of its targets'."""
    wanted = (subset_labels or {}).items()
    if not wanted:
        return groups
    out = []
    for group in groups:
        if len(wanted) == 1:  # the usual subset (version: v1): one look-up instead of comparing item views
            [(label, value)] = wanted
            targets = tuple([target for target in group.targets if target.labels.get(label) == value])
        else:
            targets = tuple([target for target in group.targets if wanted <= target.labels.items()])
        if len(targets) == len(group.targets):
            out.append(group)
        elif targets:
            out.append(_group(group.locality, targets))
    return out


def subset_groups(mesh: Mesh, service: Service, port: Port, subset: str | None) -> list[Group]:
    """``group_by_locality`` for a DestinationRule subset (or the whole service), once per mesh."""
    def filtered() -> list[Group]:
        rule = mesh.destination_rule(service.host)
        chosen = rule.subset(subset) if rule and subset else None
        return group_by_locality(targets_of(mesh, service, port), chosen.labels if chosen else None)
    return cache.SUBSET_TARGETS.of(mesh, (service.host, port.number, subset), filtered)


def scale_factor(networks: Mapping[str, Network]) -> int:
    """Istio scales every weight by the LCM of the networks' gateway counts, so splits stay whole."""
    return math.lcm(*(len(n.gateways) for n in networks.values() if n.gateways)) if networks else 1


def split_horizon(groups: list[Group], proxy_network: str, networks: Mapping[str, Network],
                  mtls: bool | None) -> list[Group]:
    """Istio's network filter.

    Endpoints in the proxy's network (or in none) are sent as they are, and so
    are endpoints of a remote network that has no gateway. An endpoint of a
    remote network with gateways is replaced by those gateways, its weight
    split evenly over them; that needs Istio mTLS (``mtls`` True: the
    DestinationRule says ISTIO_MUTUAL; None: it says nothing, so the endpoint's
    own sidecar decides), otherwise the endpoint is dropped. Gateways follow the
    direct endpoints, sorted by address, in the same locality group.
    """
    return _split(groups, _horizon(networks, proxy_network), mtls)


class _Horizon(NamedTuple):
    scale: int
    remote: dict[str, tuple]  # the networks reached through their gateways: the remote ones that have some


def _horizon(networks: Mapping[str, Network], proxy_network: str) -> _Horizon:
    return _Horizon(scale_factor(networks), {name: n.gateways for name, n in networks.items()
                                             if name and name != proxy_network and n.gateways})


def _split(groups: list[Group], horizon: _Horizon, mtls: bool | None) -> list[Group]:
    scale, remote = horizon
    out = []
    for group in groups:
        networks = group.networks if group.networks is not None else {t.network for t in group.targets}
        if remote.keys().isdisjoint(networks):  # the common case: all direct
            if scale == 1:
                out.append(group)
            else:
                targets = tuple(target.scaled(scale) for target in group.targets)
                out.append(Group(group.locality, targets, sum(t.weight for t in targets), group.priority))
            continue
        direct: list[Target] = []
        via: dict[tuple[str, int, str], int] = {}
        for target in group.targets:
            gateways = remote.get(target.network)
            if gateways is None:
                direct.append(target.scaled(scale) if scale != 1 else target)
                continue
            if mtls is False or (mtls is None and not target.sidecar):
                continue  # cross-network traffic is routed by SNI, which only Istio mTLS carries
            share = target.weight * scale // len(gateways)
            for gw in gateways:
                key = (gw.address, gw.port, target.network)
                via[key] = via.get(key, 0) + share
        gateway_targets = [Target(address, port, max(weight, 1), network, gateway=True)
                           for (address, port, network), weight in sorted(via.items())]
        targets = tuple(direct + gateway_targets)
        if targets:
            out.append(Group(group.locality, targets, sum(t.weight for t in targets), group.priority))
    return out


def apply_distribute(groups: list[Group], proxy: Locality, distribute: list[Mapping[str, Any]]) -> list[Group]:
    """Istio's locality weights: the first rule whose ``from`` matches the proxy sets each matching
    locality's share; a locality no ``to`` entry matches gets nothing (its group is dropped)."""
    rule = next((r for r in distribute if proxy.matches(r.get("from", "*"))), None)
    if rule is None:
        return groups
    weights: dict[int, int] = {}
    for pattern, share in (rule.get("to") or {}).items():
        # a wildcard can match several groups: the share is divided in proportion to their weights
        matched = [i for i, g in enumerate(groups) if i not in weights and g.locality.matches(pattern)]
        total = sum(groups[i].weight for i in matched)
        for i in matched:
            weights[i] = math.ceil(groups[i].weight * share / total) if total else 0
    return [g.with_weight(weights[i]) for i, g in enumerate(groups) if weights.get(i, 0) > 0]


def _topology_labels(network: str, cluster: str, locality: Locality) -> dict[str, str]:
    """The well-known labels failoverPriority may name, which Istio derives from topology."""
    return {NETWORK_LABEL: network, CLUSTER_LABEL: cluster, REGION_LABEL: locality.region,
            ZONE_LABEL: locality.zone, SUBZONE_LABEL: locality.subzone}


def _label_value(target: Target, label: str, locality: Locality) -> str | None:
    special = _topology_labels(target.network, target.cluster, locality)
    return special[label] if label in special else target.labels.get(label)


def _proxy_label(view: ProxyView, label: str) -> str | None:
    special = _topology_labels(view.network, view.cluster, view.locality)
    return special[label] if label in special else view.label_map.get(label)


def apply_failover(groups: list[Group], view: ProxyView, failover: list[Mapping[str, str]],
                   failover_priority: list[str]) -> list[Group]:
    """Istio's failover priorities, compacted to 0..N without gaps.

    With ``failoverPriority`` labels, a target matching the first k labels of
    the proxy (in order) ranks by how many it matches; within that (or alone,
    and then only when ``failover`` rules are given too), locality distance
    ranks: 0 same subzone, 1 same zone, 2 same region, 3 another region, 4 another
    region that a ``failover`` entry from the proxy's region does not name as
    its ``to``.
    """
    ranked: dict[tuple[int, Locality], list[Group | Target]] = {}
    # failoverPriority alone replaces locality distance; with failover rules both apply
    by_distance = not failover_priority or bool(failover)
    proxy = view.locality
    rule = next((f for f in failover if f.get("from") == proxy.region), None)
    for group in groups:
        distance = group.locality.priority_from(proxy) if by_distance else 0
        if distance == 3 and rule is not None and group.locality.region != rule.get("to"):
            distance = 4
        if not failover_priority:  # the whole group shares one rank
            ranked.setdefault((distance, group.locality), []).append(group)
            continue
        for target in group.targets:
            label_rank = len(failover_priority)
            for i, label in enumerate(failover_priority):
                if _label_value(target, label, group.locality) != _proxy_label(view, label):
                    label_rank = len(failover_priority) - i
                    break
            else:
                label_rank = 0
            ranked.setdefault((label_rank * 5 + distance, group.locality), []).append(target)
    order = {rank: i for i, rank in enumerate(sorted({rank for rank, _ in ranked}))}
    return [_ranked(locality, members, order[rank]) for (rank, locality), members in sorted(ranked.items())]


def _ranked(locality: Locality, members: list[Group | Target], priority: int) -> Group:
    """One group of ``apply_failover``'s result from what shares its rank: whole groups or targets."""
    if len(members) == 1 and isinstance(members[0], Group):  # the common case: a group as it was
        group = members[0]
        return Group(locality, group.targets, group.weight, priority, group.networks, group.encoded)
    targets = tuple(t for member in members for t in (member.targets if isinstance(member, Group) else (member,)))
    return Group(locality, targets, sum(t.weight for t in targets), priority)


@dataclass(slots=True, init=False)
class LocalityPolicy:
    """The locality load-balancing that applies to one cluster for one proxy; one per cluster of a
    mesh, so its __init__ is written out as Target's (callers never change one)."""

    distribute: tuple
    failover: tuple
    failover_priority: tuple
    failover_enabled: bool

    def __init__(self, distribute: tuple = (), failover: tuple = (), failover_priority: tuple = (),
                 failover_enabled: bool = False) -> None:
        self.distribute = distribute
        self.failover = failover
        self.failover_priority = failover_priority
        self.failover_enabled = failover_enabled

    @property
    def weighted(self) -> bool:
        """Whether Envoy must weigh localities: with distribute weights, and (as Istio sets it) failover."""
        return bool(self.distribute) or self.failover_enabled


def locality_policy(mesh: Mesh, host: str, port: int, subset: str | None) -> LocalityPolicy:
    """The DestinationRule's localityLbSetting wins over the mesh's; ``enabled: false`` turns it off.
    Failover needs outlierDetection: without it Envoy never sees a locality as unhealthy. Once per
    mesh: a cluster and its assignment both ask."""
    return cache.LOCALITY_POLICY.of(mesh, (host, port, subset), lambda: _locality_policy(mesh, host, port, subset))


def _locality_policy(mesh: Mesh, host: str, port: int, subset: str | None) -> LocalityPolicy:
    policy = mesh.policy(host, port, subset)
    setting = (policy.get("loadBalancer") or {}).get("localityLbSetting")
    if setting is None:
        setting = mesh.settings.locality_lb  # Istio's default mesh config: enabled, no rules
    if setting.get("enabled") is False:
        return LocalityPolicy()
    return LocalityPolicy(tuple(setting.get("distribute") or ()), tuple(setting.get("failover") or ()),
                          tuple(setting.get("failoverPriority") or ()), "outlierDetection" in policy)


def locality_lb(groups: list[Group], view: ProxyView, locality: LocalityPolicy) -> list[Group]:
    if locality.distribute:
        return apply_distribute(groups, view.locality, list(locality.distribute))
    if locality.failover_enabled:
        return apply_failover(groups, view, list(locality.failover), list(locality.failover_priority))
    return groups


def mtls_mode(mesh: Mesh, host: str, port: int, subset: str | None) -> bool | None:
    """True when the DestinationRule asks for Istio mTLS, False when it asks for anything else,
    None when it says nothing (then each endpoint's sidecar decides)."""
    tls = mesh.policy(host, port, subset).get("tls")
    return None if not tls else tls.get("mode") == "ISTIO_MUTUAL"


@dataclass(slots=True, init=False)
class _Plan:
    """What one service port and subset's assignment needs of the mesh, the same for every view."""

    groups: list[Group]
    mtls: bool | None
    locality: LocalityPolicy

    def __init__(self, groups: list[Group], mtls: bool | None, locality: LocalityPolicy) -> None:
        self.groups = groups
        self.mtls = mtls
        self.locality = locality


def _plan(mesh: Mesh, service: Service, port: Port, subset: str | None) -> _Plan:
    return cache.EDS_PLAN.of(mesh, (service.host, port.number, subset), lambda: _Plan(
        subset_groups(mesh, service, port, subset), mtls_mode(mesh, service.host, port.number, subset),
        locality_policy(mesh, service.host, port.number, subset)))


def compute_groups(mesh: Mesh, view: ProxyView, service: Service, port: Port, subset: str | None,
                   local_only: bool = False, split: bool = True) -> list[Group]:
    """The targets a proxy gets for one service port and subset, before Envoy encoding.

    ``local_only`` is for an east-west gateway's SNI-DNAT clusters: only the endpoints of its own
    network that can take the caller's Istio mTLS, never another network's gateway. Without
    ``split`` (DNS clusters, whose hosts Envoy resolves itself) no network filter applies, as in Istio.
    """
    plan = _plan(mesh, service, port, subset)
    groups = plan.groups
    if local_only:
        groups = local_mtls_targets(groups, view.network)
    elif split:
        horizon = cache.HORIZON.of(mesh, view.network, lambda: _horizon(mesh.networks, view.network))
        groups = _split(groups, horizon, plan.mtls)
    return locality_lb(groups, view, plan.locality)


def local_mtls_targets(groups: list[Group], network: str) -> list[Group]:
    """The targets in ``network`` (or in none) whose sidecar can terminate the caller's mTLS,
    which the east-west gateway passes through untouched."""
    out = []
    for group in groups:
        kept = tuple(t for t in group.targets if (not t.network or t.network == network) and t.sidecar)
        if kept:
            out.append(Group(group.locality, kept, sum(t.weight for t in kept), group.priority))
    return out


TLS_MATCH = "envoy.transport_socket_match"


def encode(mesh: Mesh, name: str, groups: list[Group], source: SourceObject | None = None,
           mark_tls_mode: bool = False) -> endpoint_pb2.ClusterLoadAssignment:
    """Envoy's form; every group names ``source``. With ``mark_tls_mode`` (auto mTLS) targets that
    can do Istio mTLS carry tlsMode=istio, which the cluster's transport_socket_matches select on."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for group in groups:
        encoded = assignment.endpoints.add()
        weight = max(group.weight, 1)
        cache.merge(encoded, cache.GROUP_HEADS, (group.locality, weight, group.priority),
                    lambda: _group_head(group.locality, weight, group.priority))
        if source is not None:
            provenance.set_sources(encoded.metadata, source)
        encoded.MergeFromString(_targets_bytes(mesh, group, mark_tls_mode))
    return assignment


def _targets_bytes(mesh: Mesh, group: Group, mark_tls_mode: bool) -> bytes:
    """The group's lb_endpoints, serialized (parsing appends them: a message's serialization is its
    fields' concatenation); kept in the group's memo, as every view that passes the group on
    unchanged sends the same."""
    memo = group.encoded
    found = None if memo is None else memo.get(mark_tls_mode)
    if found is None:
        found = b"".join([cache.LB_ENDPOINTS.of(mesh, (target.address, target.port, target.weight, marked),
                                                lambda: cache.serialize(_lb_endpoint(target, marked)))
                          for target in group.targets
                          for marked in (mark_tls_mode and (target.sidecar or target.gateway),)])
        if memo is not None:
            memo[mark_tls_mode] = found
    return found


def _lb_endpoint(target: Target, marked: bool) -> endpoint_components_pb2.LocalityLbEndpoints:
    """A locality group holding one endpoint: the target."""
    group = endpoint_components_pb2.LocalityLbEndpoints()
    lb = group.lb_endpoints.add()
    socket = lb.endpoint.address.socket_address
    socket.address = target.address
    socket.port_value = target.port
    lb.load_balancing_weight.value = target.weight
    if marked:
        lb.metadata.filter_metadata[TLS_MATCH].fields["tlsMode"].string_value = "istio"
    return group


def _group_head(locality: Locality, weight: int, priority: int) -> endpoint_components_pb2.LocalityLbEndpoints:
    """A group's locality, weight and priority."""
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(region=locality.region, zone=locality.zone, sub_zone=locality.subzone),
        load_balancing_weight=wrappers_pb2.UInt32Value(value=weight), priority=priority)


def view_facts(mesh: Mesh, view: ProxyView, service: Service, port: Port, subset: str | None) -> tuple:
    """All that an assignment of (service, port, subset) reads of the proxy's view: its network (split
    horizon), its locality, and its values of the labels ``failoverPriority`` ranks by. Views alike in
    these get the same assignment, whatever their namespace, role or other labels."""
    priority = _plan(mesh, service, port, subset).locality.failover_priority
    return view.network, view.locality, tuple(_proxy_label(view, label) for label in priority)


def build_load_assignment(mesh: Mesh, view: ProxyView, service: Service, port: Port,
                          subset: str | None, sni_dnat: bool = False) -> endpoint_pb2.ClusterLoadAssignment:
    groups = compute_groups(mesh, view, service, port, subset, local_only=sni_dnat)
    name = (sni if sni_dnat else cluster_name)(port.number, subset, service.host)
    auto_mtls = _plan(mesh, service, port, subset).mtls is None and not sni_dnat
    return encode(mesh, name, groups, service.source, mark_tls_mode=auto_mtls)
