"""The typed mesh: what a validated snapshot means, independent of any proxy.

Built once per snapshot from schema-valid objects; every xDS generator reads
this, never raw YAML. Istio's defaulting rules are applied here so the
generators stay simple.
"""
from __future__ import annotations

import hashlib
import ipaddress
import weakref
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

from . import cache, kube, meshnetworks, protocols
from .hosts import EVERYWHERE, export_scopes, fqdn, matches
from .kinds import CLUSTER_LABEL, ENDPOINT_KINDS, NAMESPACE, REFERENCE_ONLY_KINDS, SERVICE, WORKLOAD_KINDS
from .locality import Locality
from .parse import SourceObject
from .vips import DEFAULT_CIDR, DEFAULT_SUFFIX, Assignment, allocate, explicit_address, under_suffix


TLS_MODE_LABEL = "security.istio.io/tlsMode"
ISTIO_TLS_MODE, NO_TLS_MODE = "istio", "disabled"
DEFAULT_GATEWAY_PORT = 15443
ROOT_NAMESPACE = "istio-system"
# Kinds whose objects shape a service's clusters and endpoints (or its routes) rather than the whole
# mesh: a Pod's labels and service account are those of the endpoints that name it.
PER_SERVICE_KINDS = frozenset({"ServiceEntry", "WorkloadEntry", "DestinationRule", "VirtualService", SERVICE,
                               "Pod"}) | ENDPOINT_KINDS
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
    source: SourceObject = field(repr=False, compare=False)
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
    per_service_objects: tuple[SourceObject, ...] = field(default=(), repr=False)
    # Every cross-cluster name's VIP (vips.py), and the names the pool had no room for.
    vips: Assignment = field(default_factory=Assignment)
    # ExternalName Services: their host, and the host they stand for (Istio's aliases).
    aliases: dict[str, str] = field(default_factory=dict)
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
                                    Locality.parse(c.spec.get("locality")), c.spec.get("kubeContext"),
                                    c.spec.get("trustDomain"), c)
                for c in by_kind.get("Cluster", [])}
    workload_entries = by_kind.get("WorkloadEntry", [])
    services: dict[str, Service] = {}
    for se in by_kind.get("ServiceEntry", []):
        for service in _services(se, workload_entries, clusters, networks):
            # The same host in two ServiceEntries: Istio merges their endpoints; the first ports win.
            existing = services.get(service.host)
            if existing is None:
                services[service.host] = service
            else:
                existing.endpoint_sources += service.endpoint_sources
    # A Kubernetes Service wins over a ServiceEntry of the same host (Istio's rule against squatting).
    kubernetes, aliases = _kubernetes_services(by_kind, clusters, networks)
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
                tuple(obj for kind in sorted(PER_SERVICE_KINDS) for obj in by_kind.get(kind, [])), vips, aliases)


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
                    cluster.name if cluster else "", spec.get("weight") or 1, account, source, tls_mode)


# The endpoints a ServiceEntry writes depend on it and on the clusters and networks alone. An object
# shared by two revisions (parse's ``previous``: a preview reads two revisions, a daemon reads one
# after another) keeps them while those are unchanged: 150,000 endpoints take a second to build.
_written: "weakref.WeakKeyDictionary[SourceObject, tuple[tuple, tuple[Endpoint, ...]]]" = weakref.WeakKeyDictionary()


def _written_endpoints(se: SourceObject, clusters: dict[str, MeshCluster], networks: dict[str, Network]):
    topology = (tuple(clusters.values()), tuple(networks.values()))
    found = _written.get(se)
    if found is None or found[0] != topology:
        found = _written[se] = (topology, tuple(_endpoint(ep, se, clusters, networks)
                                                for ep in se.spec.get("endpoints", [])))
    return found[1]


def _services(se: SourceObject, workload_entries, clusters, networks) -> list[Service]:
    spec = se.spec
    ports = tuple(Port(p["number"], p.get("name", str(p["number"])), protocols.of_service_entry_port(p.get("protocol")),
                       p.get("targetPort")) for p in spec.get("ports", []))
    if "workloadSelector" in spec:
        source: EndpointSource = WrittenEndpoints(None, _selected(workload_entries, se.namespace,
                                                                  spec["workloadSelector"].get("labels") or {}),
                                                  clusters, networks)
    else:
        source = WrittenEndpoints(se, [], clusters, networks)
    scopes = export_scopes(se.namespace, spec.get("exportTo", ()))
    return [Service(fqdn(host, se.namespace), se.namespace, ports, spec.get("resolution", "NONE"),
                    spec.get("location", "MESH_EXTERNAL"), tuple(spec.get("addresses", [])), se, [source], scopes)
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
        written = _written_places.get(self.entry)
        if written is None:  # as _written: an entry shared by two revisions is read once
            written = _written_places[self.entry] = _places_written(self.entry.spec.get("endpoints", []))
        return written

    def objects(self) -> list[SourceObject]:
        return [self.entry] if self.entry is not None else self.selected


_written_places: "weakref.WeakKeyDictionary[SourceObject, set[tuple[str, str | None]]]" = \
    weakref.WeakKeyDictionary()


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


def _kubernetes_services(by_kind: dict[str, list[SourceObject]], clusters: dict[str, MeshCluster],
                         networks: dict[str, Network]) -> tuple[dict[str, Service], dict[str, str]]:
    """The mesh's Kubernetes Services, by host, and its ExternalName Services (aliases of another host).
    A Service of one name and namespace in several clusters is one service (Istio's namespace
    sameness): the first by cluster gives the ports, every cluster its addresses and endpoints."""
    only = next(iter(clusters)) if len(clusters) == 1 else ""
    listings: dict[tuple[str, str], dict[str, list[SourceObject]]] = {}
    for kind in ("EndpointSlice", "Endpoints"):
        for obj in by_kind.get(kind, []):
            name = kube.endpoint_slice_service(obj) if kind == "EndpointSlice" else obj.name
            if name:
                by_cluster = listings.setdefault((obj.namespace, name), {})
                cluster = obj.labels.get(CLUSTER_LABEL) or only
                # A cluster's EndpointSlices list its endpoints; legacy Endpoints only where it has none.
                if kind == "EndpointSlice" or not any(o.kind == "EndpointSlice" for o in by_cluster.get(cluster, ())):
                    by_cluster.setdefault(cluster, []).append(obj)
    pods = {(p.labels.get(CLUSTER_LABEL) or only, p.namespace, p.name): p for p in by_kind.get("Pod", [])}
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
        source = ListedEndpoints(listings.get((svc.namespace, svc.name), {}), pods, selected, clusters, networks)
        services[host] = Service(host, svc.namespace, ports, HEADLESS if kube.is_headless(svc) else CLUSTER_IP,
                                 "MESH_INTERNAL", kube.cluster_ips(svc), svc, [source],
                                 export_scopes(svc.namespace, kube.export_to(svc)))
    return services, aliases


class ListedEndpoints(EndpointSource):
    """The endpoints of a Kubernetes Service: what its EndpointSlices (or Endpoints) list in each
    cluster, with the labels, service account and tlsMode of the Pods they name (Istio reads the pod),
    and the WorkloadEntries its selector picks. An endpoint that is not ready, or terminating, is not
    an endpoint proxies get (Istio's default)."""

    def __init__(self, listings: dict[str, list[SourceObject]], pods: dict[tuple[str, str, str], SourceObject],
                 selected: list[SourceObject], clusters: dict[str, MeshCluster], networks: dict[str, Network]):
        self.listings, self.pods, self.selected = listings, pods, selected
        self.clusters, self.networks = clusters, networks

    def _listed(self):
        for cluster, objects in sorted(self.listings.items()):
            for obj in objects:
                read = kube.slice_endpoints if obj.kind == "EndpointSlice" else kube.endpoints_endpoints
                for listed in read(obj):
                    if listed.ready:
                        yield cluster, obj, listed

    def build(self) -> tuple[Endpoint, ...]:
        listed = [self._endpoint(cluster, obj, ep) for cluster, obj, ep in self._listed()]
        return tuple(listed) + tuple(_endpoint(we.spec, we, self.clusters, self.networks) for we in self.selected)

    def _endpoint(self, cluster_name: str, obj: SourceObject, listed: kube.ListedEndpoint) -> Endpoint:
        pod = self.pods.get((cluster_name, obj.namespace, listed.pod)) if listed.pod else None
        cluster = self.clusters.get(cluster_name)
        pod_labels = pod.labels if pod is not None else {}
        labels = {**pod_labels, CLUSTER_LABEL: cluster_name} if cluster_name else dict(pod_labels)
        network = pod_labels.get(NETWORK_LABEL) or (cluster.network if cluster else "") \
            or _network_of(listed.address, self.networks)
        return Endpoint(listed.address, listed.ports, labels, network, self._locality(cluster, pod_labels, listed),
                        cluster_name if cluster else "", 1, kube.workload_service_account(pod) if pod else "", obj,
                        pod_labels.get(TLS_MODE_LABEL, NO_TLS_MODE), listed=True)

    @staticmethod
    def _locality(cluster: MeshCluster | None, pod_labels: Mapping[str, str], listed: kube.ListedEndpoint) -> Locality:
        """The pod's locality label (``a.b`` reads as ``a/b``, as Istio sanitizes it), else its cluster's
        region with the zone its EndpointSlice gives (the Node's, which a repository does not hold)."""
        for label in LOCALITY_LABELS:
            if pod_labels.get(label):
                written = pod_labels[label]
                return Locality.parse(written if "/" in written else written.replace(".", "/"))
        home = cluster.locality if cluster else Locality()
        return Locality(home.region, listed.zone, "") if listed.zone and listed.zone != home.zone else home

    def places_written(self) -> set[tuple[str, str | None]]:
        return {(ep.cluster, str(ep.locality)) for ep in self.build()} | _places_written(
            [we.spec for we in self.selected])

    def objects(self) -> list[SourceObject]:
        named = {(cluster, obj.namespace, ep.pod) for cluster, obj, ep in self._listed() if ep.pod}
        return ([obj for objects in self.listings.values() for obj in objects]
                + [self.pods[key] for key in sorted(named) if key in self.pods] + self.selected)
