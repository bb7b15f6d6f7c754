"""Look-up tables the semantic analyzers share, built once per validation.

Only objects that passed the schema check are indexed, so every field here
has the type its schema promises.
"""
from __future__ import annotations

import copy
import hashlib
from collections import defaultdict
from functools import cached_property
from typing import Iterator

from ..hosts import fqdn, matches
from ..parse import Path, SourceObject



class Index:
    def __init__(self, objects: list[SourceObject]):
        self.objects = objects
        self.by_kind: dict[str, list[SourceObject]] = defaultdict(list)
        for obj in objects:
            self.by_kind[obj.kind].append(obj)
        self.hosts: dict[str, list[SourceObject]] = defaultdict(list)
        self.wildcards: list[tuple[str, SourceObject]] = []
        for se in self.by_kind["ServiceEntry"]:
            for host in se.spec.get("hosts", []):
                host = fqdn(host, se.namespace)
                if host.startswith("*"):
                    self.wildcards.append((host, se))
                else:
                    self.hosts[host].append(se)
        self.subset_names: dict[str, set[str]] = defaultdict(set)
        for dr in self.by_kind["DestinationRule"]:
            self.subset_names[fqdn(dr.spec.get("host", ""), dr.namespace)].update(
                subset["name"] for subset in dr.spec.get("subsets", []))
        self.wildcard_rule_hosts = [h for h in self.subset_names if h.startswith("*")]
        self.clusters = {c.name: c for c in self.by_kind["Cluster"]}
        self.networks = {name for mn in self.by_kind["MeshNetworks"]
                         for name in mn.spec.get("networks", {})}
        self.gateways = {f"{g.namespace}/{g.name}": g for g in self.by_kind["Gateway"]}
        self._fact_digests: dict[str, str] = {}

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

    def workload_labels(self) -> Iterator[dict[str, str]]:
        """The labels of every WorkloadEntry and ServiceEntry endpoint, as they are asked for: a
        Gateway selector looks until it finds a match, among 150,000 endpoints in a large mesh."""
        for we in self.by_kind["WorkloadEntry"]:
            yield we.spec.get("labels", {})
        for se in self.by_kind["ServiceEntry"]:
            for ep in se.spec.get("endpoints", []):
                yield ep.get("labels", {})

    def only(self, objects: list[SourceObject], kinds: tuple[str, ...]) -> Index:
        """This index with ``objects`` (some of its own, of ``kinds``) to check: ``objects`` and
        ``by_kind`` hold only those, and ``by_kind`` no other kind; every look-up table still covers
        all (framework.Analyzer.run)."""
        restricted = copy.copy(self)
        restricted.objects = objects
        restricted.by_kind = {kind: [] for kind in kinds}
        for obj in objects:
            restricted.by_kind[obj.kind].append(obj)
        return restricted

    @cached_property
    def declared(self) -> frozenset[tuple[str, int | None]]:
        """(host, port number) for every host of every ServiceEntry and its ports, and (host, None):
        all that ``services`` and ``ports`` answer depends on, as a fact local analyzers can compare."""
        return frozenset((fqdn(host, se.namespace), number) for se in self.by_kind["ServiceEntry"]
                         for host in se.spec.get("hosts", [])
                         for number in (None, *(port["number"] for port in se.spec.get("ports", []))))

    @cached_property
    def subset_facts(self) -> frozenset[tuple[str, str]]:
        """(host, subset name) for every DestinationRule subset: all ``subsets`` depends on."""
        return frozenset((host, name) for host, names in self.subset_names.items() for name in names)

    def services(self, host: str) -> list[SourceObject]:
        """The ServiceEntries that declare ``host`` (an FQDN), exactly or by wildcard."""
        found = list(self.hosts.get(host, ()))
        if not host.startswith("*"):
            found += [se for pattern, se in self.wildcards if matches(pattern, host)]
        else:
            found += [se for pattern, se in self.wildcards if pattern == host]
        return found

    def ports(self, host: str) -> dict[int, dict]:
        """Port number -> port declaration, over every ServiceEntry declaring ``host``."""
        return {port["number"]: port for se in self.services(host) for port in se.spec.get("ports", [])}

    def subsets(self, host: str) -> set[str]:
        """Subset names defined for ``host`` by DestinationRules for it or for a wildcard covering it."""
        found = set(self.subset_names.get(host, ()))
        for pattern in self.wildcard_rule_hosts:
            if pattern != host and matches(pattern, host):
                found |= self.subset_names[pattern]
        return found


def destinations(vs: SourceObject) -> Iterator[tuple[Path, dict, list]]:
    """Every Destination a VirtualService names: (path of the Destination, it, its route list).

    The route list is the weighted list it belongs to (empty for mirrors).
    """
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
    levels = [(("spec", "trafficPolicy"), top, {})] if top else []
    for i, subset in enumerate(dr.spec.get("subsets", [])):
        if subset.get("trafficPolicy"):
            levels.append((("spec", "subsets", i, "trafficPolicy"), subset["trafficPolicy"], top or {}))
    for path, policy, parent in list(levels):
        for k, port_policy in enumerate(policy.get("portLevelSettings", [])):
            levels.append((path + ("portLevelSettings", k), port_policy, {**parent, **policy}))
    yield from levels
