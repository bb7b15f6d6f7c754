"""The typed mesh: what a validated snapshot means, independent of any proxy.

Built once per snapshot from schema-valid objects; every xDS generator reads
this, never raw YAML. Istio's defaulting rules are applied here so the
generators stay simple.
"""
from __future__ import annotations

import hashlib
import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

from . import cache, kube, meshnetworks, protocols
from .hosts import EVERYWHERE, export_scopes, fqdn, matches
from .kinds import CLUSTER_LABEL, ENDPOINT_KINDS, NAMESPACE, NODE, REFERENCE_ONLY_KINDS, SERVICE, WORKLOAD_KINDS
from .locality import Locality
from .overlay import Overlay
from .parse import SourceObject
from .vips import DEFAULT_CIDR, DEFAULT_SUFFIX, Assignment, allocate, explicit_address, under_suffix


TLS_MODE_LABEL = "security.istio.io/tlsMode"
ISTIO_TLS_MODE, NO_TLS_MODE = "istio", "disabled"
DEFAULT_GATEWAY_PORT = 15443
ROOT_NAMESPACE = "istio-system"
# Kinds whose objects shape a service's clusters and endpoints (or its routes) rather than the whole
# mesh: a Pod's labels and service account are those of the endpoints that name it, a Node's
# topology labels their locality.
PER_SERVICE_KINDS = frozenset({"ServiceEntry", "WorkloadEntry", "DestinationRule", "VirtualService", SERVICE,
                               "Pod", NODE}) | ENDPOINT_KINDS
# Kinds no proxy configuration depends on (the CA reconciler reads CertificateAuthority; workload
# controllers only give validation the labels their pods will have, Namespaces whether they are
# injected): not in the mesh's digest.
NOT_PROXY_KINDS = frozenset({"CertificateAuthority", NAMESPACE}) | (WORKLOAD_KINDS - {"Pod"})


@dataclass(frozen=True)
class MeshCluster:
    name: str
    network: str
    locality: Locality
    kube_context: str | None
    trust_domain: str | None
    source: SourceObject = field(repr=False, compare=False)


def kube_context(cluster: SourceObject) -> str | None:
    """A Cluster object's kubeContext: the kubeconfig context its API server is reached by, if any."""
    return cluster.spec.get("kubeContext")


@dataclass(frozen=True)
class NetworkGateway:
    address: str
    port: int
    locality: Locality | None = None


@dataclass(frozen=True)
class Network:
    name: str
    gateways: tuple[NetworkGateway, ...]
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    registries: tuple[str, ...]


@dataclass(frozen=True)
class Port:
    number: int
    name: str
    protocol: str  # compiler.protocols: Istio's name, or AUTO when it is detected on the connection
    target_port: int | str | None = None  # a Kubernetes Service port's may name a container port

    @property
    def is_http(self) -> bool:
        return protocols.is_http(self.protocol)

    @property
    def routes_http(self) -> bool:
        """Whether the port gets HTTP routes: HTTP, or detected (HTTP when the proxy finds it)."""
        return protocols.routes_http(self.protocol)


@dataclass(frozen=True)
class Endpoint:
    address: str
    ports: Mapping[str, int]
    labels: Mapping[str, str]
    network: str
    locality: Locality
    cluster: str
    weight: int
    service_account: str
    # The namespace of the object it comes from (a ServiceEntry or WorkloadEntry, an EndpointSlice, a
    # Pod): its identity's. Not the object itself: cached endpoints must not keep the object they are
    # cached for alive (cache.WRITTEN_ENDPOINTS holds its objects weakly).
    namespace: str = field(repr=False, compare=False)
    # Istio's tlsMode: "istio" when a sidecar terminates Istio mTLS (which crossing networks needs)
    tls_mode: str = NO_TLS_MODE
    # Its ports are what a Kubernetes listing (EndpointSlice) says it serves, by Service port name: a
    # port it does not list, it does not serve. Written endpoints fall back on the port's own.
    listed: bool = False

    @property
    def mtls_ready(self) -> bool:
        """Whether this endpoint has a sidecar to terminate Istio mTLS (needed across networks)."""
        return self.tls_mode == ISTIO_TLS_MODE

    def port_for(self, port: Port) -> int | None:
        """The port this endpoint serves ``port`` on, as Istio matches them: its port of that name,
        else the target port (a name, looked up among its ports), else the port itself; None when a
        listed endpoint does not serve it."""
        found = self.ports.get(port.name)
        if found or self.listed:
            return found
        if isinstance(port.target_port, str):
            return self.ports.get(port.target_port) or port.number
        return port.target_port or port.number


@dataclass
class Service:
    host: str
    namespace: str
    ports: tuple[Port, ...]
    resolution: str
    location: str
    addresses: tuple[str, ...]
    source: SourceObject = field(repr=False)
    # Where its endpoints come from; they are built on first use (``endpoints``): a preview compiles
    # the few services a change touches, of a mesh whose ServiceEntries write 150,000 endpoints.
    endpoint_sources: list[EndpointSource] = field(default_factory=list, repr=False, compare=False)
    # The namespaces whose proxies see it (its exportTo, hosts.export_scopes)
    exported_to: frozenset[str] = frozenset({EVERYWHERE})
    _endpoints: tuple[Endpoint, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        if self._endpoints is None:
            sources = self.endpoint_sources
            # One source's tuple as it is: shared with the revision before (_written_endpoints).
            self._endpoints = (sources[0].build() if len(sources) == 1
                               else tuple(ep for source in sources for ep in source.build()))
        return self._endpoints

    def port(self, number: int) -> Port | None:
        return next((p for p in self.ports if p.number == number), None)

    def known_port(self, number: int) -> Port:
        """A port the caller knows the service has (say, from a cluster name it built)."""
        found = self.port(number)
        assert found is not None, f"{self.host} has no port {number}"
        return found


@dataclass
class Subset:
    name: str
    labels: Mapping[str, str]
    traffic_policy: Mapping[str, Any]


@dataclass
class DestinationRule:
    host: str
    namespace: str
    traffic_policy: Mapping[str, Any]
    subsets: tuple[Subset, ...]
    source: SourceObject = field(repr=False)

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def policy(self, port: int, subset: str | None = None) -> dict[str, Any]:
        """The effective traffic policy for a port (and subset), merged as Istio does.

        Subset settings override the rule's, port-level settings override both;
        each level replaces whole top-level fields (loadBalancer, tls, ...).
        """
        levels = [self.traffic_policy]
        chosen = self.subset(subset) if subset else None
        if chosen:
            levels.append(chosen.traffic_policy)
        merged: dict[str, Any] = {}
        for level in levels:
            merged.update({k: v for k, v in level.items() if k != "portLevelSettings"})
            for port_level in level.get("portLevelSettings", ()):
                if port_level.get("port", {}).get("number") == port:
                    merged.update({k: v for k, v in port_level.items() if k != "port"})
        return merged


@dataclass
class MeshSettings:
    trust_domain: str = "cluster.local"
    locality_lb: Mapping[str, Any] = field(default_factory=lambda: {"enabled": True})
    dns_suffix: str = DEFAULT_SUFFIX
    vip_cidr: str = DEFAULT_CIDR


@dataclass
class Listings:
    """What the Kubernetes objects of the mesh list, indexed for its Services' endpoints: the
    EndpointSlices (or Endpoints) of each (namespace, Service name), by cluster; the Pods and Nodes
    by (cluster, [namespace,] name). Never changed once built (``relisted`` makes another)."""

    slices: dict[tuple[str, str], dict[str, list[SourceObject]]] = field(default_factory=dict)
    pods: Mapping[tuple[str, str, str], SourceObject] = field(default_factory=dict)
    nodes: dict[tuple[str, str], SourceObject] = field(default_factory=dict)
    # The Service each EndpointSlice, by (cluster, namespace, name), is listed under: where a slice
    # edited to name another Service is to be taken from.
    slice_services: Mapping[tuple[str, str, str], str] = field(default_factory=dict)


_OBJECTS_SERIALS = itertools.count(1)


@dataclass(frozen=True, eq=False)
class ObjectsByDigest:
    """A mesh's per-service objects (those about one service: fingerprints.py), by digest. Never
    changed once made: a live registry's change makes another (``changed``), so that what a compile
    finds changed since a mesh is found once per pair of meshes (fingerprints.changes, keyed by
    its serial)."""

    by_digest: Mapping[str, SourceObject] = field(default_factory=dict)
    # Names it for what is found against it (fingerprints.changes): unlike the object itself, a key
    # that keeps nothing alive, and unlike its id, never another's.
    serial: int = field(default_factory=lambda: next(_OBJECTS_SERIALS))

    @classmethod
    def of(cls, objects: Collection[SourceObject]) -> ObjectsByDigest:
        return cls({obj.digest: obj for obj in objects})

    def changed(self, gone: Collection[SourceObject], new: Collection[SourceObject]) -> ObjectsByDigest:
        return ObjectsByDigest(Overlay.of(self.by_digest).changed(((obj.digest, obj) for obj in new),
                                                                  (obj.digest for obj in gone)))


@dataclass
class Mesh:
    revision: str
    clusters: dict[str, MeshCluster]
    networks: dict[str, Network]
    services: dict[str, Service]
    destination_rules: dict[str, DestinationRule]
    virtual_services: list[SourceObject]
    gateways: list[SourceObject]
    sidecars: list[SourceObject]
    settings: MeshSettings
    # A hash of every object that is not about one service (clusters, networks, mesh settings,
    # gateways, sidecars...): when it is unchanged, a service's resources depend on its own objects only.
    digest: str = ""
    # The objects of the other kinds, which the keys of an incremental compile hold (fingerprints.py).
    per_service_objects: ObjectsByDigest = field(default_factory=ObjectsByDigest, repr=False)
    # Every cross-cluster name's VIP (vips.py), and the names the pool had no room for.
    vips: Assignment = field(default_factory=Assignment)
    # ExternalName Services: their host, and the host they stand for (Istio's aliases).
    aliases: dict[str, str] = field(default_factory=dict)
    # What its Kubernetes objects list, from which its Services' endpoints are made (``relisted``).
    listings: Listings = field(default_factory=Listings, repr=False)
    # Where cache.py's per-mesh entries keep what they derive from this (never changed) mesh.
    memo: dict = field(default_factory=dict, repr=False)

    def destination_rule(self, host: str) -> DestinationRule | None:
        """The rule for ``host``: an exact match, else the most specific wildcard covering it."""
        rule = self.destination_rules.get(host)
        if rule is not None:
            return rule
        wildcards = [r for h, r in self.destination_rules.items() if h.startswith("*") and matches(h, host)]
        return max(wildcards, key=lambda r: len(r.host), default=None)

    def endpoint_places(self) -> set[tuple[str, Locality]]:
        """(cluster name, locality) of every endpoint, without building them: from the few distinct
        cluster labels and localities written (callers must not change it)."""
        def gather() -> set[tuple[str, Locality]]:
            written: set[tuple[str, str | None]] = set()
            for service in self.services.values():
                for source in service.endpoint_sources:
                    written |= source.places_written()
            placed = (_placement(label, locality, self.clusters) for label, locality in written)
            return {(cluster.name if cluster else "", locality) for cluster, locality in placed}
        return cache.ENDPOINT_PLACES.of(self, (), gather)

    def resolve_alias(self, host: str) -> str:
        """The host an ExternalName Service's host stands for, through chains of them; ``host`` itself
        when it is no alias (or the chain loops, which Istio drops)."""
        seen, current = {host}, host
        while (target := self.aliases.get(current)) is not None:
            if target in seen:
                return host
            seen.add(target)
            current = target
        return current

    def aliases_of(self, host: str) -> list[str]:
        """The ExternalName hosts that stand for ``host``, sorted (callers must not change it)."""
        def inverse() -> dict[str, list[str]]:
            found: dict[str, list[str]] = {}
            for alias in sorted(self.aliases):
                target = self.resolve_alias(alias)
                if target != alias:
                    found.setdefault(target, []).append(alias)
            return found
        return cache.ALIASES.of(self, (), inverse).get(host, [])

    def policy(self, host: str, port: int, subset: str | None = None) -> dict[str, Any]:
        """The merged policy for a host's port and subset; computed once per mesh (callers must not change it)."""
        def merged() -> dict[str, Any]:
            rule = self.destination_rule(host)
            return rule.policy(port, subset) if rule else {}
        return cache.POLICY.of(self, (host, port, subset), merged)


def build_mesh(objects: list[SourceObject], revision: str = "", *, keep_vips: Mapping[str, str] | None = None,
               held_vips: Collection[str] = ()) -> Mesh:
    """The typed mesh of a validated snapshot's objects.

    ``keep_vips`` and ``held_vips``: the VIPs already given out (vips.allocate), so that a name keeps
    its address from one revision to the next; without them, the addresses a fresh mesh would get.
    Kinds validation alone reads (kinds.REFERENCE_ONLY_KINDS: Gateway API Gateways, Istio's
    RequestAuthentications) are left out: they configure no proxy Galleon compiles, and are in no
    digest, so adding one recompiles nothing.
    """
    by_kind: dict[str, list[SourceObject]] = {}
    for obj in sorted(objects, key=lambda o: (o.kind, o.namespace, o.name, o.key)):
        if obj.kind not in REFERENCE_ONLY_KINDS:
            by_kind.setdefault(obj.kind, []).append(obj)
    settings = mesh_settings(by_kind.get("MeshConfig", []))
    networks = _networks(by_kind.get("MeshNetworks", []))
    clusters = {c.name: MeshCluster(c.name, c.spec.get("network") or _registry_network(c.name, networks),
                                    Locality.parse(c.spec.get("locality")), kube_context(c),
                                    c.spec.get("trustDomain"), c)
                for c in by_kind.get("Cluster", [])}
    workload_entries = by_kind.get("WorkloadEntry", [])
    listings = _listings(by_kind, clusters)
    services: dict[str, Service] = {}
    for se in by_kind.get("ServiceEntry", []):
        for service in _services(se, workload_entries, listings, clusters, networks):
            # The same host in two ServiceEntries: Istio merges their endpoints; the first ports win.
            existing = services.get(service.host)
            if existing is None:
                services[service.host] = service
            else:
                existing.endpoint_sources += service.endpoint_sources
    # A Kubernetes Service wins over a ServiceEntry of the same host (Istio's rule against squatting).
    kubernetes, aliases = _kubernetes_services(by_kind, listings, clusters, networks)
    services.update(kubernetes)
    rules: dict[str, DestinationRule] = {}
    for dr in by_kind.get("DestinationRule", []):
        rule = DestinationRule(fqdn(dr.spec["host"], dr.namespace), dr.namespace,
                               dr.spec.get("trafficPolicy") or {},
                               tuple(Subset(s["name"], s.get("labels") or {}, s.get("trafficPolicy") or {})
                                     for s in dr.spec.get("subsets", [])), dr)
        rules.setdefault(rule.host, rule)  # first by namespace/name wins, deterministically
    vips = _assign_vips(services, settings, keep_vips, held_vips)
    mesh_wide = hashlib.sha256()
    for kind in sorted(set(by_kind) - PER_SERVICE_KINDS - NOT_PROXY_KINDS):
        for obj in by_kind[kind]:
            mesh_wide.update(f"{obj.ref} {obj.digest}\n".encode())
    return Mesh(revision, clusters, networks, services, rules,
                by_kind.get("VirtualService", []), by_kind.get("Gateway", []), by_kind.get("Sidecar", []), settings,
                mesh_wide.hexdigest()[:24],
                ObjectsByDigest.of([obj for kind in sorted(PER_SERVICE_KINDS) for obj in by_kind.get(kind, [])]),
                vips, aliases,
                listings)


def _assign_vips(services: dict[str, Service], settings: MeshSettings, keep: Mapping[str, str] | None,
                 held: Collection[str]) -> Assignment:
    """Allocate the cross-cluster names' VIPs and add each allocated one to its service's addresses,
    where listeners and routes pick it up like an address written in the ServiceEntry."""
    # Hosts that differ only by case are one DNS name (duplicate-vip reports them); the first one has it.
    hosts: dict[str, str] = {}
    for host in services:
        if under_suffix(host, settings.dns_suffix):
            hosts.setdefault(host.lower(), host)
    explicit = {}
    for name, host in hosts.items():
        address = explicit_address(services[host].addresses)
        if address is not None:
            explicit[name] = address
    assignment = allocate(hosts, settings.vip_cidr, explicit=explicit, keep=keep, held=held)
    for name, address in assignment.addresses.items():
        if name not in explicit:
            services[hosts[name]].addresses += (address,)
    return assignment


def mesh_settings(mesh_configs: list[SourceObject]) -> MeshSettings:
    """The settings of the first MeshConfig by namespace and name (the defaults without one)."""
    if not mesh_configs:
        return MeshSettings()
    spec = min(mesh_configs, key=lambda o: (o.namespace, o.name)).spec
    defaults = MeshSettings()
    return MeshSettings(spec.get("trustDomain", defaults.trust_domain),
                        spec.get("localityLbSetting") or defaults.locality_lb,
                        spec.get("dnsSuffix", defaults.dns_suffix), spec.get("vipCidr", defaults.vip_cidr))


def _networks(objects: list[SourceObject]) -> dict[str, Network]:
    networks = {}
    for mn in objects:
        # fields in either spelling Istio reads (fromRegistry, from_registry...)
        for name, spec in sorted(meshnetworks.networks(mn.spec).items()):
            gateways = tuple(NetworkGateway(g.get("address") or g["registryServiceName"],
                                            g.get("port", DEFAULT_GATEWAY_PORT),
                                            Locality.parse(g["locality"]) if g.get("locality") else None)
                             for g in spec["gateways"])
            cidrs = tuple(ipaddress.ip_network(e["fromCidr"], strict=False)
                          for e in spec["endpoints"] if "fromCidr" in e)
            registries = tuple(e["fromRegistry"] for e in spec["endpoints"] if "fromRegistry" in e)
            networks[name] = Network(name, gateways, cidrs, registries)
    return networks


def _registry_network(cluster: str, networks: dict[str, Network]) -> str:
    """The network a Cluster that names none is on: Istio's, the one whose MeshNetworks ``fromRegistry``
    lists it (the first by name when several do); "" when none does."""
    return next((name for name in sorted(networks) if cluster in networks[name].registries), "")


def _network_of(address: str, networks: dict[str, Network]) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    for network in networks.values():
        if any(ip in cidr for cidr in network.cidrs):
            return network.name
    return ""


def _placement(cluster_label: str, locality: str | None,
               clusters: dict[str, MeshCluster]) -> tuple[MeshCluster | None, Locality]:
    """An endpoint's cluster (from its label) and locality (its own, else its cluster's)."""
    cluster = clusters.get(cluster_label)
    return cluster, (Locality.parse(locality) if locality else cluster.locality if cluster else Locality())


def _endpoint(spec: dict, source: SourceObject, clusters, networks) -> Endpoint:
    labels = spec.get("labels") or {}
    cluster, locality = _placement(labels.get(CLUSTER_LABEL, ""), spec.get("locality"), clusters)
    address = spec.get("address", "")
    # DESIGN.md: its own network, else its cluster's, else the MeshNetworks fromCidr holding its address
    network = spec.get("network") or (cluster.network if cluster else "") or _network_of(address, networks)
    account = spec.get("serviceAccount", "")
    # Istio's rule for a WorkloadEntry: its tlsMode label, else Istio mTLS when it names a service account
    tls_mode = labels.get(TLS_MODE_LABEL) or (ISTIO_TLS_MODE if account else NO_TLS_MODE)
    return Endpoint(address, spec.get("ports") or {}, labels, network, locality,
                    cluster.name if cluster else "", spec.get("weight") or 1, account, source.namespace, tls_mode)


def _written_endpoints(se: SourceObject, clusters: dict[str, MeshCluster], networks: dict[str, Network]):
    topology = (tuple(clusters.values()), tuple(networks.values()))
    return cache.WRITTEN_ENDPOINTS.of(se, topology, lambda: tuple(_endpoint(ep, se, clusters, networks)
                                                                  for ep in se.spec.get("endpoints", [])))


def _services(se: SourceObject, workload_entries, listings: Listings, clusters, networks) -> list[Service]:
    spec = se.spec
    ports = tuple(Port(p["number"], p.get("name", str(p["number"])), protocols.of_service_entry_port(p.get("protocol")),
                       p.get("targetPort")) for p in spec.get("ports", []))
    sources: list[EndpointSource]
    if "workloadSelector" in spec:
        selector = spec["workloadSelector"].get("labels") or {}
        sources = [WrittenEndpoints(None, _selected(workload_entries, se.namespace, selector), clusters, networks)]
        # Istio's ServiceEntries select the running pods of their namespace too
        pods = _selected_pods(listings, se.namespace, selector)
        if pods:
            sources.append(SelectedPods(pods, listings, clusters, networks))
    else:
        sources = [WrittenEndpoints(se, [], clusters, networks)]
    scopes = export_scopes(se.namespace, spec.get("exportTo", ()))
    return [Service(fqdn(host, se.namespace), se.namespace, ports, spec.get("resolution", "NONE"),
                    spec.get("location", "MESH_EXTERNAL"), tuple(spec.get("addresses", [])), se, list(sources), scopes)
            for host in spec["hosts"]]


def _selected(workload_entries: list[SourceObject], namespace: str, selector: Mapping[str, str]) -> list[SourceObject]:
    """The WorkloadEntries of a namespace that a workload selector picks (an empty selector, all)."""
    wanted = selector.items()
    return [we for we in workload_entries if we.namespace == namespace and wanted <= (we.spec.get("labels") or {}).items()]


class EndpointSource:
    """Where some of a service's endpoints come from; they are built on first use."""

    def build(self) -> tuple[Endpoint, ...]:
        raise NotImplementedError

    def places_written(self) -> set[tuple[str, str | None]]:
        """The distinct (cluster name, locality) of its endpoints, as written (callers must not change it)."""
        raise NotImplementedError

    def objects(self) -> list[SourceObject]:
        """Every object its endpoints are made from (an incremental compile compares them)."""
        raise NotImplementedError


class WrittenEndpoints(EndpointSource):
    """A ServiceEntry's ``endpoints`` (``entry``), or the WorkloadEntries it selects."""

    def __init__(self, entry: SourceObject | None, selected: list[SourceObject], clusters: dict[str, MeshCluster],
                 networks: dict[str, Network]):
        self.entry, self.selected, self.clusters, self.networks = entry, selected, clusters, networks

    def build(self) -> tuple[Endpoint, ...]:
        if self.entry is not None:
            return _written_endpoints(self.entry, self.clusters, self.networks)
        return tuple(_endpoint(we.spec, we, self.clusters, self.networks) for we in self.selected)

    def places_written(self) -> set[tuple[str, str | None]]:
        if self.entry is None:
            return _places_written([we.spec for we in self.selected])
        entry = self.entry
        return cache.WRITTEN_PLACES.of(entry, (), lambda: _places_written(entry.spec.get("endpoints", [])))

    def objects(self) -> list[SourceObject]:
        return [self.entry] if self.entry is not None else self.selected




def _places_written(specs: list[dict]) -> set[tuple[str, str | None]]:
    """The distinct (cluster label, locality) written in endpoint specs (callers must not change it)."""
    return {((spec.get("labels") or {}).get(CLUSTER_LABEL, ""), spec.get("locality")) for spec in specs}


# --- Kubernetes Services ------------------------------------------------------------------------

# How a Kubernetes Service resolves (the ServiceEntry words for Istio's): a ClusterIP Service is
# balanced over its endpoints (EDS, even before it has any); a headless one passes connections to
# the address the client asked for.
CLUSTER_IP, HEADLESS = "STATIC", "PASSTHROUGH"
LOCALITY_LABELS = ("topology.istio.io/locality", "istio-locality")
NETWORK_LABEL = "topology.istio.io/network"


def _listings(by_kind: dict[str, list[SourceObject]], clusters: dict[str, MeshCluster]) -> Listings:
    """Index the EndpointSlices (and Endpoints), Pods and Nodes by the cluster their
    ``topology.istio.io/cluster`` label names (in a mesh of one cluster, that one)."""
    only = next(iter(clusters)) if len(clusters) == 1 else ""
    slice_services: dict[tuple[str, str, str], str] = {}
    listings = Listings(slice_services=slice_services)
    for kind in ("EndpointSlice", "Endpoints"):
        for obj in by_kind.get(kind, []):
            name = kube.endpoint_slice_service(obj) if kind == "EndpointSlice" else obj.name
            if name:
                by_cluster = listings.slices.setdefault((obj.namespace, name), {})
                cluster = obj.labels.get(CLUSTER_LABEL) or only
                # A cluster's EndpointSlices list its endpoints; legacy Endpoints only where it has none.
                if kind == "EndpointSlice" or not any(o.kind == "EndpointSlice" for o in by_cluster.get(cluster, ())):
                    by_cluster.setdefault(cluster, []).append(obj)
                if kind == "EndpointSlice":
                    slice_services[(cluster, obj.namespace, obj.name)] = name
    listings.pods = {(p.labels.get(CLUSTER_LABEL) or only, p.namespace, p.name): p for p in by_kind.get("Pod", [])}
    listings.nodes.update(((n.labels.get(CLUSTER_LABEL) or only, n.name), n) for n in by_kind.get(NODE, []))
    return listings


def _kubernetes_services(by_kind: dict[str, list[SourceObject]], listings: Listings, clusters: dict[str, MeshCluster],
                         networks: dict[str, Network]) -> tuple[dict[str, Service], dict[str, str]]:
    """The mesh's Kubernetes Services, by host, and its ExternalName Services (aliases of another host).
    A Service of one name and namespace in several clusters is one service (Istio's namespace
    sameness): the first by cluster gives the ports, every cluster its addresses and endpoints."""
    services: dict[str, Service] = {}
    aliases: dict[str, str] = {}
    for svc in by_kind.get(SERVICE, []):
        host = kube.service_host(svc)
        target = kube.external_name(svc)
        if target is not None:
            aliases.setdefault(host, target)
            continue
        existing = services.get(host)
        if existing is not None:
            existing.addresses += tuple(ip for ip in kube.cluster_ips(svc) if ip not in existing.addresses)
            continue
        ports = tuple(Port(p.number, p.name, p.protocol, p.target_port) for p in kube.service_ports(svc)
                      if p.protocol != protocols.UDP)  # proxies carry no UDP: Istio builds nothing for it
        selector = kube.selector(svc)
        # Istio: a ClusterIP Service with a selector also takes the WorkloadEntries it selects
        selected = _selected(by_kind.get("WorkloadEntry", []), svc.namespace, selector) \
            if selector and not kube.is_headless(svc) else []
        source = ListedEndpoints((svc.namespace, svc.name), listings, selected, clusters, networks)
        services[host] = Service(host, svc.namespace, ports, HEADLESS if kube.is_headless(svc) else CLUSTER_IP,
                                 "MESH_INTERNAL", kube.cluster_ips(svc), svc, [source],
                                 export_scopes(svc.namespace, kube.export_to(svc)))
    return services, aliases


def _pod_locality(cluster: MeshCluster | None, pod_labels: Mapping[str, str], node: SourceObject | None,
                  zone: str = "") -> Locality:
    """A pod's locality, as Istio finds it: its locality label (``a.b`` reads as ``a/b``, as Istio
    sanitizes it), else its Node's topology labels, else its cluster's region with the zone its
    EndpointSlice gives, else its cluster's."""
    for label in LOCALITY_LABELS:
        if pod_labels.get(label):
            written = pod_labels[label]
            return Locality.parse(written if "/" in written else written.replace(".", "/"))
    if node is not None:
        region, node_zone, subzone = kube.node_locality(node)
        if region or node_zone:
            return Locality(region, node_zone, subzone)
    home = cluster.locality if cluster else Locality()
    return Locality(home.region, zone, "") if zone and zone != home.zone else home


def _pod_network(cluster: MeshCluster | None, pod_labels: Mapping[str, str], address: str,
                 networks: dict[str, Network]) -> str:
    return pod_labels.get(NETWORK_LABEL) or (cluster.network if cluster else "") or _network_of(address, networks)


class ListedEndpoints(EndpointSource):
    """The endpoints of a Kubernetes Service (``service``: namespace, name): what its EndpointSlices
    (or Endpoints) list in each cluster, with the labels, service account and tlsMode of the Pods
    they name (Istio reads the pod) and the locality of their Nodes, and the WorkloadEntries its
    selector picks. An endpoint that is not ready, or terminating, is not an endpoint proxies get
    (Istio's default).

    The listings are read once, when its endpoints are first asked for, and then let go: each mesh
    ``relisted`` makes has listings of its own, and a service renewed in it would otherwise keep
    them, and every object they index, for as long as the service stays unchanged."""

    def __init__(self, service: tuple[str, str], listings: Listings, selected: list[SourceObject],
                 clusters: dict[str, MeshCluster], networks: dict[str, Network]):
        self.service, self.selected = service, selected
        self.clusters, self.networks = clusters, networks
        self._listings: Listings | None = listings
        # (its listed endpoints, the objects they are made from), once read
        self._read: tuple[tuple[Endpoint, ...], list[SourceObject]] | None = None

    def _listed(self) -> tuple[tuple[Endpoint, ...], list[SourceObject]]:
        read = self._read
        if read is None:
            listings = self._listings
            if listings is None:  # another thread read them meanwhile (it sets _read first)
                read = self._read
                assert read is not None
                return read
            read = self._read = self._read_listings(listings)
            self._listings = None
        return read

    def _read_listings(self, listings: Listings) -> tuple[tuple[Endpoint, ...], list[SourceObject]]:
        slices = sorted(listings.slices.get(self.service, {}).items())
        endpoints: list[Endpoint] = []
        pods: dict[tuple[str, str, str], SourceObject] = {}
        nodes: dict[tuple[str, str], SourceObject] = {}
        for cluster_name, objects in slices:
            for obj in objects:
                read = kube.slice_endpoints if obj.kind == "EndpointSlice" else kube.endpoints_endpoints
                for listed in read(obj):
                    if not listed.ready:
                        continue
                    key = (cluster_name, obj.namespace, listed.pod)
                    pod = listings.pods.get(key) if listed.pod else None
                    if pod is not None:
                        pods[key] = pod
                    node_name = listed.node or (kube.pod_node(pod) if pod is not None else "")
                    node = listings.nodes.get((cluster_name, node_name)) if node_name else None
                    if node is not None:
                        nodes[(cluster_name, node_name)] = node
                    endpoints.append(self._endpoint(cluster_name, obj, listed, pod, node))
        objects = ([obj for _, listed_objects in slices for obj in listed_objects]
                   + [pods[key] for key in sorted(pods)] + [nodes[key] for key in sorted(nodes)])
        return tuple(endpoints), objects

    def build(self) -> tuple[Endpoint, ...]:
        return self._listed()[0] + tuple(_endpoint(we.spec, we, self.clusters, self.networks) for we in self.selected)

    def _endpoint(self, cluster_name: str, obj: SourceObject, listed: kube.ListedEndpoint, pod: SourceObject | None,
                  node: SourceObject | None) -> Endpoint:
        cluster = self.clusters.get(cluster_name)
        pod_labels = pod.labels if pod is not None else {}
        labels = {**pod_labels, CLUSTER_LABEL: cluster_name} if cluster_name else dict(pod_labels)
        return Endpoint(listed.address, listed.ports, labels,
                        _pod_network(cluster, pod_labels, listed.address, self.networks),
                        _pod_locality(cluster, pod_labels, node, listed.zone),
                        cluster_name if cluster else "", 1, kube.workload_service_account(pod) if pod else "",
                        obj.namespace,
                        pod_labels.get(TLS_MODE_LABEL, NO_TLS_MODE), listed=True)

    def places_written(self) -> set[tuple[str, str | None]]:
        return {(ep.cluster, str(ep.locality)) for ep in self.build()} | _places_written(
            [we.spec for we in self.selected])

    def objects(self) -> list[SourceObject]:
        return self._listed()[1] + self.selected


def _selected_pods(listings: Listings, namespace: str, selector: Mapping[str, str]) -> list[SourceObject]:
    """The running, ready pods of a namespace, in any cluster, that a workload selector picks."""
    wanted = selector.items()
    return [pod for (_, ns, _), pod in sorted(listings.pods.items())
            if ns == namespace and wanted <= pod.labels.items() and kube.pod_ready(pod)]


class SelectedPods(EndpointSource):
    """The pods a ServiceEntry's ``workloadSelector`` picks: each its pod IP, serving the entry's
    ports on their target ports (Istio's workload instances)."""

    def __init__(self, pods: list[SourceObject], listings: Listings, clusters: dict[str, MeshCluster],
                 networks: dict[str, Network]):
        # (the Nodes alone of the listings: a relisted mesh's slices and Pods are its own, and shared by
        # none of the meshes after it; its Nodes are every mesh's since the last built anew)
        self.pods, self.nodes, self.clusters, self.networks = pods, listings.nodes, clusters, networks

    def build(self) -> tuple[Endpoint, ...]:
        return tuple(self._endpoint(pod) for pod in self.pods)

    def _endpoint(self, pod: SourceObject) -> Endpoint:
        cluster_name = pod.labels.get(CLUSTER_LABEL, "")
        cluster = self.clusters.get(cluster_name)
        address = kube.pod_ip(pod)
        node = self.nodes.get((cluster_name, kube.pod_node(pod)))
        return Endpoint(address, {}, dict(pod.labels), _pod_network(cluster, pod.labels, address, self.networks),
                        _pod_locality(cluster, pod.labels, node), cluster_name if cluster else "", 1,
                        kube.workload_service_account(pod), pod.namespace, pod.labels.get(TLS_MODE_LABEL, NO_TLS_MODE))

    def places_written(self) -> set[tuple[str, str | None]]:
        return {(ep.cluster, str(ep.locality)) for ep in self.build()}

    def objects(self) -> list[SourceObject]:
        nodes = [self.nodes.get((pod.labels.get(CLUSTER_LABEL, ""), kube.pod_node(pod))) for pod in self.pods]
        return self.pods + [node for node in nodes if node is not None]


# --- a live registry's endpoint changes ---------------------------------------------------------

@dataclass(frozen=True)
class Relisted:
    """A mesh after some EndpointSlices and Pods changed, and which services' endpoints that
    changed: ``endpoints_only`` when nothing but their assignments can differ (no cluster: their
    workloads' identities are the same), so only EDS need be built again."""

    mesh: Mesh
    hosts: frozenset[str]
    endpoints_only: bool


def relisted(mesh: Mesh, changed: Collection[SourceObject], gone: Collection[SourceObject]) -> Relisted:
    """``mesh`` with EndpointSlices and Pods ``changed`` (new or edited: they replace the objects of
    the same key) and ``gone`` (deleted), without building the rest again: the services they feed get
    new endpoint sources, every other service, and everything else, is shared. Equal to a mesh built
    from all the objects anew (``build_mesh``); that is what Services, Nodes and repository changes get."""
    slices = dict(mesh.listings.slices)
    pods: dict[tuple[str, str, str], SourceObject | None] = {}  # the batch's: None when deleted
    only = next(iter(mesh.clusters)) if len(mesh.clusters) == 1 else ""
    replaced: dict[int, SourceObject] = {}
    namespaces_pods: dict[str, list[Mapping[str, str]]] = {}  # a changed pod's labels, old and new
    listed: set[tuple[str, str]] = set()  # (namespace, Service name) whose listings changed

    slice_services: dict[tuple[str, str, str], str] = {}  # the batch's: "" when listed under none

    def place(obj: SourceObject, add: bool) -> None:
        cluster = obj.labels.get(CLUSTER_LABEL) or only
        key = (cluster, obj.namespace, obj.name)
        if obj.kind == "Pod":
            old = pods[key] if key in pods else mesh.listings.pods.get(key)
            if old is not None:
                replaced[id(old)] = old
                namespaces_pods.setdefault(obj.namespace, []).append(old.labels)
            pods[key] = obj if add else None
            namespaces_pods.setdefault(obj.namespace, []).append(obj.labels)
            return
        service = kube.endpoint_slice_service(obj) if obj.kind == "EndpointSlice" else obj.name
        if obj.kind == "EndpointSlice":
            held = slice_services[key] if key in slice_services else (mesh.listings.slice_services.get(key) or "")
            if held and held != service:  # edited to name another Service: it feeds the one it named no more
                replaced.update(_relist(slices, obj, cluster, held, add=False))
                listed.add((obj.namespace, held))
            slice_services[key] = (service or "") if add else ""
        if service:
            replaced.update(_relist(slices, obj, cluster, service, add))
            listed.add((obj.namespace, service))

    for obj in gone:
        place(obj, add=False)
    for obj in changed:
        place(obj, add=True)
    listings = Listings(slices, Overlay.of(mesh.listings.pods).changed(
        ((key, pod) for key, pod in pods.items() if pod is not None),
        (key for key, pod in pods.items() if pod is None)), mesh.listings.nodes,
        Overlay.of(mesh.listings.slice_services).changed(
            ((key, service) for key, service in slice_services.items() if service),
            (key for key, service in slice_services.items() if not service)))
    services = dict(mesh.services)
    hosts: set[str] = set()
    endpoints_only = True
    by_listing, selecting = _feeding(mesh)
    candidates: set[str] = set()  # the services the batch may feed: a superset, _renewed decides
    for key in listed:
        candidates |= by_listing.get(key, set())
    for namespace, label_sets in namespaces_pods.items():
        by_pair = selecting.get(namespace)
        if by_pair:
            candidates |= by_pair.get(None, set())
            for labels in label_sets:
                for pair in labels.items():
                    candidates |= by_pair.get(pair, set())
    for host in sorted(candidates):
        service = mesh.services[host]
        renewed = _renewed(service, listings, listed, namespaces_pods.get(service.namespace, ()))
        if renewed is None:
            continue
        services[host] = renewed
        hosts.add(host)
        # Read now, so that it lets go of this mesh's listings (ListedEndpoints), which no later mesh
        # shares: a service of no proxy's view would otherwise keep them until it is renewed again.
        renewed.endpoints  # noqa: B018
        # A NONE or DNS entry's clusters read its endpoints; every cluster names the identities an
        # mTLS peer must present.
        if service.resolution not in (CLUSTER_IP, HEADLESS) or _identities(service) != _identities(renewed):
            endpoints_only = False
    # (a live object's digest names its cluster and resourceVersion: no two share one)
    per_service = mesh.per_service_objects.changed(replaced.values(), changed)
    relisted_mesh = Mesh(mesh.revision, mesh.clusters, mesh.networks, services, mesh.destination_rules,
                         mesh.virtual_services, mesh.gateways, mesh.sidecars, mesh.settings, mesh.digest,
                         per_service, mesh.vips, mesh.aliases, listings)
    # (the services' sources read other listings now, but the same Services and selectors)
    cache.FEEDING.seed(relisted_mesh, (), (by_listing, selecting))
    return Relisted(relisted_mesh, frozenset(hosts), endpoints_only)


def _relist(slices: dict[tuple[str, str], dict[str, list[SourceObject]]], obj: SourceObject, cluster: str,
            service: str, add: bool) -> dict[int, SourceObject]:
    """``obj`` (an EndpointSlice or Endpoints) put into, or taken out of, ``service``'s listings in
    ``cluster``, replacing the one of its name; what it replaced, by id."""
    by_cluster = dict(slices.get((obj.namespace, service), {}))
    kept, replaced = [], {}
    for other in by_cluster.get(cluster, []):
        if (other.kind, other.name) == (obj.kind, obj.name):
            replaced[id(other)] = other
        else:
            kept.append(other)
    if add:
        kept.append(obj)
        kept.sort(key=lambda o: (o.kind, o.name))
    by_cluster[cluster] = kept
    slices[(obj.namespace, service)] = by_cluster
    return replaced


Selecting = dict[str, dict[tuple[str, str] | None, set[str]]]


def _feeding(mesh: Mesh) -> tuple[dict[tuple[str, str], set[str]], Selecting]:
    """The hosts whose endpoints each (namespace, Service name)'s listings feed; and by namespace, the
    hosts whose selector picks Pods there, under one (label, value) pair of the selector, which every Pod
    it picks carries (None: a ServiceEntry's selector without labels, which picks every Pod there)."""
    def index() -> tuple[dict[tuple[str, str], set[str]], Selecting]:
        by_listing: dict[tuple[str, str], set[str]] = {}
        selecting: Selecting = {}
        for host, service in mesh.services.items():
            entry = service.source
            for source in service.endpoint_sources:
                if isinstance(source, ListedEndpoints):
                    by_listing.setdefault(source.service, set()).add(host)
                    selector = kube.selector(entry) if entry.kind == SERVICE else {}
                    if selector:
                        selecting.setdefault(service.namespace, {}).setdefault(min(selector.items()), set()).add(host)
            if entry.kind == "ServiceEntry" and "workloadSelector" in entry.spec:
                labels = entry.spec["workloadSelector"].get("labels") or {}
                selecting.setdefault(service.namespace, {}).setdefault(
                    min(labels.items()) if labels else None, set()).add(host)
        return by_listing, selecting
    return cache.FEEDING.of(mesh, (), index)


def _renewed(service: Service, listings: Listings, listed: set[tuple[str, str]],
             pod_labels: Collection[Mapping[str, str]]) -> Service | None:
    """The service with endpoint sources reading ``listings``, when a change may feed it; else None."""
    if service.source.kind == SERVICE and (service.namespace, service.source.name) not in listed and not pod_labels:
        return None
    sources: list[EndpointSource] = []
    fed = False
    for source in service.endpoint_sources:
        if isinstance(source, ListedEndpoints):
            selector = kube.selector(service.source) if service.source.kind == SERVICE else {}
            fed = fed or source.service in listed or any(
                selector and selector.items() <= labels.items() for labels in pod_labels)
            sources.append(ListedEndpoints(source.service, listings, source.selected, source.clusters, source.networks))
        elif not isinstance(source, SelectedPods):
            sources.append(source)
    entry = service.source
    if entry.kind == "ServiceEntry" and "workloadSelector" in entry.spec:
        selector = entry.spec["workloadSelector"].get("labels") or {}
        if any(selector.items() <= labels.items() for labels in pod_labels):
            fed = True
            pods = _selected_pods(listings, service.namespace, selector)
            if pods:
                first = service.endpoint_sources[0]
                assert isinstance(first, WrittenEndpoints)
                sources.append(SelectedPods(pods, listings, first.clusters, first.networks))
    if not fed:
        return None
    return Service(service.host, service.namespace, service.ports, service.resolution, service.location,
                   service.addresses, service.source, sources, service.exported_to)


def _identities(service: Service) -> frozenset[tuple[str, str]]:
    return frozenset((ep.namespace, ep.service_account) for ep in service.endpoints if ep.service_account)
