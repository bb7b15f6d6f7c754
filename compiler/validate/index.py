"""Look-up tables the semantic analyzers share, built once per validation.

Only objects that passed the schema check are indexed, so every field here has the type its schema
promises. Hosts are looked up as Istio's analyzers look them up (ServiceEntries and Kubernetes
Services, each under the namespaces it is exported to); workloads are what selectors can match.
"""
from __future__ import annotations

import copy
import hashlib
import weakref
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator, Mapping

from .. import kube, meshnetworks
from ..hosts import EVERYWHERE, export_scopes, fqdn, matches, service_namespace
from ..kinds import (CLUSTER_LABEL, INJECTION_LABEL, KUBERNETES_GATEWAY, NAMESPACE, NETWORK_LABEL, REVISION_LABEL,
                     SERVICE, WORKLOAD_KINDS)
from ..model import mesh_settings
from ..parse import Path, SourceObject
from ..protocols import of_service_entry_port
from . import assumed

@dataclass(frozen=True)
class Declared:
    """A host a ServiceEntry or a Kubernetes Service declares, with that object's ports as
    (number, name, protocol) and its workload selector (a ServiceEntry's; a Service's pods are
    matched by its own selector, kept apart)."""

    host: str
    obj: SourceObject
    ports: tuple[tuple[int, str, str], ...]
    selector: Mapping[str, str] | None = None

    def port_numbers(self) -> list[int]:
        return [number for number, _, _ in self.ports]


def _declarations(objects: Mapping[str, list[SourceObject]]) -> Iterator[tuple[str, Declared]]:
    """(scope, declaration) for every host of every ServiceEntry and Kubernetes Service."""
    for se in objects.get("ServiceEntry", ()):
        spec = se.spec
        ports = tuple((p["number"], p.get("name", ""), of_service_entry_port(p.get("protocol")))
                      for p in spec.get("ports", ()))
        selector = (spec.get("workloadSelector") or {}).get("labels") or {} if "workloadSelector" in spec else None
        scopes = export_scopes(se.namespace, spec.get("exportTo", ()))
        for host in spec.get("hosts", ()):
            declared = Declared(fqdn(host, se.namespace), se, ports, selector)
            for scope in sorted(scopes):
                yield scope, declared
    for service in objects.get(SERVICE, ()):
        ports = tuple((p.number, p.name, p.protocol) for p in kube.service_ports(service))
        declared = Declared(kube.service_host(service), service, ports)
        for scope in sorted(export_scopes(service.namespace, kube.export_to(service))):
            yield scope, declared


def _strip_star(host: str) -> str:
    return host[1:] if host.startswith("*") else host


class Index:
    def __init__(self, objects: list[SourceObject]):
        # Istio's default ingress gateway, when the repository has none of its own: looked up like the
        # repository's objects, reported on never (validate.validate_objects).
        self.assumed = assumed.ingress_gateway(objects)
        if self.assumed:
            objects = [*objects, *self.assumed]
        self.objects = objects
        self.by_kind: dict[str, list[SourceObject]] = defaultdict(list)
        for obj in objects:
            self.by_kind[obj.kind].append(obj)
        # (scope, host) -> what declares it there; a Kubernetes Service over a ServiceEntry (Istio's order)
        self.scoped: dict[tuple[str, str], Declared] = {}
        for scope, declared in _declarations(self.by_kind):
            key = (scope, declared.host)
            if declared.obj.kind == SERVICE or key not in self.scoped:
                self.scoped[key] = declared
        # (scope, wildcard host, declaration), the most specific (longest) wildcard first
        self.wildcards = sorted(((scope, host, d) for (scope, host), d in self.scoped.items() if host.startswith("*")),
                                key=lambda w: (-len(w[1]), w[1], w[0]))
        # host -> the ServiceEntries that declare it, whatever their exportTo (cross-cluster names, vips.py)
        self.hosts: dict[str, list[SourceObject]] = defaultdict(list)
        for se in self.by_kind["ServiceEntry"]:
            for host in se.spec.get("hosts", []):
                self.hosts[fqdn(host, se.namespace)].append(se)
        self.subset_names: dict[str, set[str]] = defaultdict(set)
        for dr in self.by_kind["DestinationRule"]:
            self.subset_names[fqdn(dr.spec.get("host", ""), dr.namespace)].update(
                subset["name"] for subset in dr.spec.get("subsets", []))
        self.wildcard_rule_hosts = [h for h in self.subset_names if h.startswith("*")]
        self.clusters = {c.name: c for c in self.by_kind["Cluster"]}
        self.networks = {name for mn in self.by_kind["MeshNetworks"]
                         for name in mn.spec.get("networks", {})}
        self.gateways = {f"{g.namespace}/{g.name}": g for g in self.by_kind["Gateway"]}
        # Gateway API Gateways by "namespace/name": what a VirtualService's gateway names when no Istio
        # Gateway has that name (Istio's GatewayAnalyzer looks among Istio's first)
        self.kubernetes_gateways = {f"{g.namespace}/{g.name}": g for g in self.by_kind[KUBERNETES_GATEWAY]}
        self._fact_digests: dict[str, str] = {}
        self._looked_up: dict[tuple[str, tuple[str, ...], str], Declared | None] = {}

    def facts_digest(self, facts: tuple[str, ...]) -> str:
        """A hash of these facts (attributes: sets, or dicts by their keys), equal exactly when they
        are: what a local analyzer's kept problems were found against (framework.Analyzer.run)."""
        return hashlib.sha256("".join(map(self._fact_digest, facts)).encode()).hexdigest()

    def _fact_digest(self, fact: str) -> str:
        found = self._fact_digests.get(fact)
        if found is None:
            # repr escapes newlines, so the separator cannot occur inside a value
            text = "\n".join(sorted(map(repr, getattr(self, fact))))
            found = self._fact_digests[fact] = hashlib.sha256(f"{fact}\n{text}".encode()).hexdigest()
        return found

    def only(self, by_kind: dict[str, list[SourceObject]]) -> Index:
        """This index with only these objects (some of its own, by kind) to check: ``objects`` and
        ``by_kind`` hold only those, and ``by_kind`` no other kind; every look-up table still covers
        all (framework.run_all)."""
        restricted = copy.copy(self)
        restricted.objects = [obj for objects in by_kind.values() for obj in objects]
        restricted.by_kind = by_kind
        return restricted

    @cached_property
    def named_networks(self) -> frozenset[str]:
        """Every network the mesh names: MeshNetworks', Clusters', endpoints' and Pods' (their
        ``topology.istio.io/network`` label)."""
        named = set(self.networks)
        named.update(c.spec["network"] for c in self.by_kind["Cluster"] if c.spec.get("network"))
        named.update(we.spec["network"] for we in self.by_kind["WorkloadEntry"] if we.spec.get("network"))
        named.update(ep["network"] for se in self.by_kind["ServiceEntry"] for ep in se.spec.get("endpoints", ())
                     if ep.get("network"))
        named.update(p.labels[NETWORK_LABEL] for p in self.by_kind["Pod"] if p.labels.get(NETWORK_LABEL))
        return frozenset(named)

    @cached_property
    def registries(self) -> frozenset[str]:
        """Every MeshNetworks ``fromRegistry`` (in either spelling): the Clusters placed on a network by it."""
        return frozenset(registry for mn in self.by_kind["MeshNetworks"] for network in mn.spec["networks"].values()
                         for ep in network["endpoints"] if (registry := meshnetworks.get(ep, "fromRegistry")))

    # --- hosts ------------------------------------------------------------------------------------

    @cached_property
    def declared(self) -> frozenset[tuple[str, str, tuple]]:
        """(scope, host, ports) for every declared host: all that ``lookup`` answers depends on, as a
        fact local analyzers can compare."""
        return frozenset((scope, host, d.ports) for (scope, host), d in self.scoped.items())

    @cached_property
    def service_namespaces(self) -> frozenset[str]:
        """The namespaces the repository declares services of (a Kubernetes Service, or a ServiceEntry
        host NAME.NAMESPACE.svc.cluster.local): where an undeclared service host is a mistake rather
        than a Service managed elsewhere. Istio's default ingress gateway's Service, which validation
        assumes (assumed.py), is not the repository's: istio-system's other Services stay unknown."""
        return frozenset(namespace for (_, host), declared in self.scoped.items()
                         if (namespace := service_namespace(host)) and not assumed.is_assumed(declared.obj))

    def lookup(self, namespace: str, export_to: Iterable[str], host: str) -> Declared | None:
        """What declares ``host`` for an object of ``namespace`` exported to ``export_to``, as Istio's
        analyzers find it: the host exported everywhere, else to the object's namespace (or, when it
        is exported elsewhere, to those namespaces), else a wildcard host covering it exported
        everywhere or to the object's namespace. An ExternalName Service's host gives what declares
        the host it stands for, when that is declared: traffic to it goes there (Istio's aliases).
        Asked a score of times per object, by as many analyzers: each answer is found once."""
        key = (namespace, tuple(export_to), host)
        if key in self._looked_up:
            return self._looked_up[key]
        found = self._lookup(namespace, export_to, host)
        if found is not None and found.obj.kind == SERVICE:
            target = kube.external_name(found.obj)
            if target is not None:
                found = self._lookup(found.obj.namespace, (), target) or found
        self._looked_up[key] = found
        return found

    def _lookup(self, namespace: str, export_to: Iterable[str], host: str) -> Declared | None:
        name = fqdn(host, namespace)
        found = self.scoped.get((EVERYWHERE, name))
        if found is not None:
            return found
        scopes = [namespace if e == "." else e for e in export_to] or [namespace]
        for scope in scopes:
            found = self.scoped.get((scope, name))
            if found is not None:
                return found
        wanted = _strip_star(name)
        for scope, pattern, declared in self.wildcards:
            if scope in (EVERYWHERE, namespace) and wanted.endswith(_strip_star(pattern)):
                return declared
        return None

    @cached_property
    def vip_suffix(self) -> frozenset[str]:
        """The suffix of the cross-cluster names Galleon gives a VIP of their own (MeshConfig dnsSuffix,
        compiler/vips.py), as a fact: one string."""
        return frozenset({mesh_settings(self.by_kind["MeshConfig"]).dns_suffix})

    @cached_property
    def all_hosts(self) -> frozenset[str]:
        """Every host declared, in any scope."""
        return frozenset(host for _, host in self.scoped)

    # --- gateways -----------------------------------------------------------------------------------

    @cached_property
    def gateway_hosts(self) -> frozenset[tuple[str, tuple[str, ...]]]:
        """("namespace/name", the hosts its servers list, as written) for every Gateway: all that a
        check of VirtualService hosts against their Gateways reads, as a fact local analyzers can compare."""
        return frozenset((key, tuple(host for server in gw.spec.get("servers", []) for host in server.get("hosts", [])))
                         for key, gw in self.gateways.items())

    @cached_property
    def kubernetes_gateway_hosts(self) -> frozenset[tuple[str, tuple[str, ...]]]:
        """("namespace/name", the hostname of each of its listeners, "" for a listener without one, which
        accepts every host) for every Gateway API Gateway: the same fact as ``gateway_hosts``, for them."""
        return frozenset((key, tuple(listener.get("hostname") or "" for listener in gw.spec.get("listeners", [])))
                         for key, gw in self.kubernetes_gateways.items())

    # --- subsets ------------------------------------------------------------------------------------

    @cached_property
    def subset_facts(self) -> frozenset[tuple[str, str]]:
        """(host, subset name) for every DestinationRule subset: all ``subsets`` depends on."""
        return frozenset((host, name) for host, names in self.subset_names.items() for name in names)

    def subsets(self, host: str) -> set[str]:
        """Subset names defined for ``host`` by DestinationRules for it or for a wildcard covering it."""
        found = set(self.subset_names.get(host, ()))
        for pattern in self.wildcard_rule_hosts:
            if pattern != host and matches(pattern, host):
                found |= self.subset_names[pattern]
        return found

    # --- namespaces ---------------------------------------------------------------------------------

    @cached_property
    def namespace_injection(self) -> frozenset[tuple[str, str, tuple[tuple[str, str], ...]]]:
        """(cluster, name, its injection labels) of every Namespace object: its cluster is its
        ``topology.istio.io/cluster`` label ("" when none), its injection labels those of
        ``istio-injection`` and ``istio.io/rev`` it has, as (label, value) pairs. As a fact local
        analyzers can compare (the workload analyzers, compiler/validate/workloads.py)."""
        return frozenset((ns.labels.get(CLUSTER_LABEL, ""), ns.name,
                          tuple((label, ns.labels[label]) for label in (INJECTION_LABEL, REVISION_LABEL)
                                if label in ns.labels))
                         for ns in self.by_kind[NAMESPACE])

    # --- workloads ----------------------------------------------------------------------------------

    def workloads(self) -> Iterator[tuple[SourceObject, dict[str, str]]]:
        """(object, labels) of every workload the repository holds: the pods workload objects run,
        WorkloadEntries, and the endpoints ServiceEntries write; yielded as they are asked for (a
        selector looks until it finds a match, among 150,000 endpoints in a large mesh)."""
        for kind in sorted(WORKLOAD_KINDS):
            for obj in self.by_kind.get(kind, ()):
                yield obj, kube.workload_labels(obj)
        for we in self.by_kind["WorkloadEntry"]:
            yield we, we.spec.get("labels") or {}
        for se in self.by_kind["ServiceEntry"]:
            for ep in se.spec.get("endpoints", []):
                yield se, ep.get("labels") or {}

    def selects_any(self, selector: Mapping[str, str], namespace: str | None = None) -> bool:
        """Whether some workload (of ``namespace``, when given) carries every label of ``selector``."""
        wanted = selector.items()
        return any(wanted <= labels.items() for obj, labels in self.workloads()
                   if namespace is None or obj.namespace == namespace)


def destinations(vs: SourceObject) -> tuple[tuple[Path, dict, list], ...]:
    """Every Destination a VirtualService names: (path of the Destination, it, its route list).

    The route list is the weighted list it belongs to (empty for mirrors). Read once per object
    (a score of analyzers ask, in every revision that shares it).
    """
    found = _destinations.get(vs)
    if found is None:
        found = _destinations[vs] = tuple(_destinations_of(vs))
    return found


_destinations: "weakref.WeakKeyDictionary[SourceObject, tuple]" = weakref.WeakKeyDictionary()


def _destinations_of(vs: SourceObject) -> Iterator[tuple[Path, dict, list]]:
    for section in ("http", "tcp", "tls"):
        for i, rule in enumerate(vs.spec.get(section, [])):
            route = rule.get("route", [])
            for j, weighted in enumerate(route):
                if "destination" in weighted:
                    yield ("spec", section, i, "route", j, "destination"), weighted["destination"], route
            if section != "http":
                continue
            if "mirror" in rule:
                yield ("spec", section, i, "mirror"), rule["mirror"], []
            for k, mirror in enumerate(rule.get("mirrors", [])):
                if "destination" in mirror:
                    yield ("spec", section, i, "mirrors", k, "destination"), mirror["destination"], []


def traffic_policies(dr: SourceObject) -> Iterator[tuple[Path, dict, dict]]:
    """Every TrafficPolicy of a DestinationRule: (path, the policy, the policy it inherits from).

    Port-level and subset policies inherit unset fields from the level above,
    as Istio merges them.
    """
    top = dr.spec.get("trafficPolicy")
    levels: list[tuple[Path, dict, dict]] = [(("spec", "trafficPolicy"), top, {})] if top else []
    for i, subset in enumerate(dr.spec.get("subsets", [])):
        if subset.get("trafficPolicy"):
            levels.append((("spec", "subsets", i, "trafficPolicy"), subset["trafficPolicy"], top or {}))
    for path, policy, parent in list(levels):
        for k, port_policy in enumerate(policy.get("portLevelSettings", [])):
            levels.append((path + ("portLevelSettings", k), port_policy, {**parent, **policy}))
    yield from levels
