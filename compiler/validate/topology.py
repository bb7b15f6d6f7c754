"""Checks on the federation's shape: clusters, networks and addresses."""
from __future__ import annotations

import ipaddress
import re

from .. import meshnetworks
from ..findings import Level
from ..kinds import CLUSTER_LABEL, NETWORK_LABEL
from ..parse import Path, SourceObject
from ..kube import HEADLESS, endpoint_slice_service
from .framework import analyzer
from . import syntax
from .index import Index, destinations

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$",
                       re.IGNORECASE)


def is_hostname(text: str) -> bool:
    return bool(_HOSTNAME.match(text)) and not text.replace(".", "").isdigit()


def is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    return syntax.is_ip(text, zone=False)


# An EndpointSlice's addressType: what each of its addresses must be, and that said.
_SLICE_ADDRESSES = {"IPv4": (syntax.is_ipv4, "an IPv4 address (the slice's addressType)"),
                    "IPv6": (syntax.is_ipv6, "an IPv6 address (the slice's addressType)"),
                    "FQDN": (is_hostname, "a DNS name (the slice's addressType is FQDN)")}


def kubernetes_address_errors(obj: SourceObject) -> list[tuple[Path, str]]:
    """(path, message) for each address of a Kubernetes object that its API server would refuse and
    Envoy cannot use: an EndpointSlice's addresses (of its addressType), an Endpoints' ``ip``s, a
    Pod's ``status.podIP`` and ``podIPs``, a Service's ``clusterIP`` and ``clusterIPs`` (an IP, or
    None: headless). A live registry checks every object it reads: nothing is made for an address
    that is valid."""
    body, kind = obj.body, obj.kind
    errors: list[tuple[Path, str]] = []
    if kind == "EndpointSlice":
        valid, what = _SLICE_ADDRESSES.get(str(body.get("addressType")), (_is_ip, "an IP address"))
        for i, endpoint in enumerate(body.get("endpoints") or ()):
            for j, address in enumerate(endpoint.get("addresses") or ()):
                if not valid(address):
                    errors.append((("endpoints", i, "addresses", j), f"address {address!r} is not {what}"))
    elif kind == "Pod":
        status = body.get("status") or {}
        ip = status.get("podIP")
        if ip and not _is_ip(ip):
            errors.append((("status", "podIP"), f"podIP {ip!r} is not an IP address"))
        for i, entry in enumerate(status.get("podIPs") or ()):
            ip = entry.get("ip")
            if ip is not None and not _is_ip(ip):
                errors.append((("status", "podIPs", i, "ip"), f"podIPs ip {ip!r} is not an IP address"))
    elif kind == "Endpoints":
        for i, subset in enumerate(body.get("subsets") or ()):
            for field in ("addresses", "notReadyAddresses"):
                for j, address in enumerate(subset.get(field) or ()):
                    if not _is_ip(address["ip"]):
                        errors.append((("subsets", i, field, j, "ip"), f"ip {address['ip']!r} is not an IP address"))
    elif kind == "Service":
        spec = obj.spec
        written: list[tuple[Path, str, str | None]] = [(("spec", "clusterIP"), "clusterIP", spec.get("clusterIP"))]
        written += [(("spec", "clusterIPs", i), "clusterIPs", ip) for i, ip in enumerate(spec.get("clusterIPs") or ())]
        errors += [(path, f"{field} {ip!r} is not an IP address, nor None (headless)")
                   for path, field, ip in written if ip and ip != HEADLESS and not _is_ip(ip)]
    return errors


def _endpoints(index: Index):
    """(object, path of the endpoint, the endpoint) for ServiceEntry endpoints and WorkloadEntries."""
    for se in index.by_kind["ServiceEntry"]:
        for i, ep in enumerate(se.spec.get("endpoints", [])):
            yield se, ("spec", "endpoints", i), ep
    for we in index.by_kind["WorkloadEntry"]:
        yield we, ("spec",), we.spec


@analyzer("unknown-network", "GAL0109", Level.WARNING,
          "in a mesh of several networks, a Cluster or endpoint is on a network MeshNetworks does not list, or on none",
          local=("networks", "named_networks", "registries"), kinds=("Cluster", "ServiceEntry", "WorkloadEntry", "Pod"))
def unknown_network(index: Index):
    # Istio sends traffic for an endpoint of a network without gateways straight to its address (its
    # split horizon only replaces endpoints of networks that have gateways): valid, and all a mesh of
    # one network needs; in a mesh of several, worth saying.
    if len(index.named_networks) < 2:
        return

    def problem(network: str) -> str:
        listed = (f"MeshNetworks lists {', '.join(sorted(index.networks))}" if index.networks
                  else "no MeshNetworks lists any network")
        return (f"network {network!r} is in no MeshNetworks ({listed}), in a mesh of networks "
                f"{', '.join(sorted(index.named_networks))}: Istio sends traffic to its endpoints directly, "
                f"without an east-west gateway, so they must be reachable from every other network; if they "
                f"are not, list {network!r} in MeshNetworks with its gateway")

    for cluster in index.by_kind["Cluster"]:
        network = cluster.spec.get("network")
        if network and network not in index.networks:
            yield cluster, ("spec", "network"), problem(network)
        elif not network and cluster.name not in index.registries:
            yield cluster, ("spec",), (
                f"Cluster {cluster.name!r} names no network and no MeshNetworks fromRegistry lists it, in a mesh of "
                f"networks {', '.join(sorted(index.named_networks))}: its endpoints are on no network, which Istio "
                "reaches directly from every network; set spec.network, or list it in a MeshNetworks fromRegistry")
    for obj, path, ep in _endpoints(index):
        if ep.get("network") and ep["network"] not in index.networks:
            yield obj, path + ("network",), problem(ep["network"])
    for pod in index.by_kind["Pod"]:
        network = pod.labels.get(NETWORK_LABEL)
        if network and network not in index.networks:
            yield pod, ("metadata", "labels", NETWORK_LABEL), problem(network)


# Registries Istio knows beside its remote clusters' ids, which mean nothing in Galleon.
ISTIO_REGISTRIES = {"Kubernetes": "Istio's default name for its own cluster, which Galleon names by its Cluster",
                    "External": "Istio's registry of ServiceEntries, whose endpoints Galleon places by their own "
                                "network, cluster or fromCidr"}


@analyzer("unknown-mesh-networks-registry", "IST0126", Level.ERROR,
          "a MeshNetworks fromRegistry names no Cluster (Galleon's registries are its Clusters)",
          local=("clusters",), kinds=("MeshNetworks",))
def unknown_mesh_networks_registry(index: Index):
    known = (f"defined clusters: {', '.join(sorted(index.clusters))}" if index.clusters
             else "the repository defines no Cluster")
    for mn in index.by_kind["MeshNetworks"]:
        for network, spec in sorted(mn.spec["networks"].items()):
            for i, ep in enumerate(spec["endpoints"]):
                field = meshnetworks.key(ep, "fromRegistry")
                registry = ep[field] if field is not None else None
                if registry is None or registry in index.clusters:
                    continue
                hint = f"; {registry!r} is {ISTIO_REGISTRIES[registry]}" if registry in ISTIO_REGISTRIES else ""
                yield mn, ("spec", "networks", network, "endpoints", i, field), (
                    f"Unknown service registry {registry} in network {network}: a registry is a Cluster of the "
                    f"repository ({known}){hint}")


@analyzer("unknown-cluster", "GAL0110", Level.ERROR, "an object names a Cluster the repository does not define",
          local=("clusters",), kinds=("ServiceEntry", "WorkloadEntry", "CertificateAuthority", "EndpointSlice",
                                      "Endpoints"))
def unknown_cluster(index: Index):
    hint = (f"defined clusters: {', '.join(sorted(index.clusters))}" if index.clusters
            else "the repository defines no Cluster")
    for obj, path, ep in _endpoints(index):
        cluster = (ep.get("labels") or {}).get(CLUSTER_LABEL)
        if cluster is not None and cluster not in index.clusters:
            yield obj, path + ("labels", CLUSTER_LABEL), f"label {CLUSTER_LABEL}={cluster!r} is not a Cluster; {hint}"
    for kind in ("EndpointSlice", "Endpoints"):
        for listing in index.by_kind[kind]:
            cluster = listing.labels.get(CLUSTER_LABEL)
            if cluster is not None and cluster not in index.clusters:
                yield listing, ("metadata", "labels", CLUSTER_LABEL), (
                    f"label {CLUSTER_LABEL}={cluster!r} is not a Cluster, so its endpoints are in none; {hint}")
    for ca in index.by_kind["CertificateAuthority"]:
        for i, cluster in enumerate(ca.spec.get("clusters", [])):
            if cluster not in index.clusters:
                yield ca, ("spec", "clusters", i), f"cluster {cluster!r} is not a Cluster; {hint}"


@analyzer("endpoints-in-no-cluster", "GAL0120", Level.WARNING,
          "in a mesh of several Clusters, an EndpointSlice or Endpoints has no topology.istio.io/cluster label",
          local=("clusters",), kinds=("EndpointSlice", "Endpoints"))
def endpoints_in_no_cluster(index: Index):
    if len(index.clusters) < 2:
        return  # one Cluster (or none): its listings are that cluster's
    for kind in ("EndpointSlice", "Endpoints"):
        for listing in index.by_kind[kind]:
            # a slice of no Service is ignored whatever its cluster (endpoint-slice-without-service)
            if kind == "EndpointSlice" and endpoint_slice_service(listing) is None:
                continue
            if not listing.labels.get(CLUSTER_LABEL):
                yield listing, ("metadata", "labels"), (
                    f"this {kind} does not say which cluster it was read from, in a mesh of Clusters "
                    f"{', '.join(sorted(index.clusters))}: its endpoints are placed in none (no cluster's network, "
                    f"locality or cluster name); add the label {CLUSTER_LABEL} with its Cluster's name")


@analyzer("invalid-address", "GAL0111", Level.ERROR,
          "a gateway, endpoint, CIDR, VIP, pod or Service address is not a valid IP, hostname or CIDR", local=(),
          kinds=("MeshNetworks", "MeshConfig", "ServiceEntry", "WorkloadEntry", "EndpointSlice", "Endpoints", "Pod",
                 "Service"))
def invalid_address(index: Index):
    for mn in index.by_kind["MeshNetworks"]:
        for network, spec in mn.spec["networks"].items():
            base = ("spec", "networks", network)
            for i, gw in enumerate(spec.get("gateways", [])):
                address = gw.get("address")
                if address is not None and not (syntax.is_ip(address) or is_hostname(address)):
                    yield mn, base + ("gateways", i, "address"), (
                        f"gateway address {address!r} is neither an IP address nor a hostname")
            for i, ep in enumerate(spec["endpoints"]):
                field = meshnetworks.key(ep, "fromCidr")
                if field is not None and not is_cidr(ep[field]):
                    yield mn, base + ("endpoints", i, field), f"{field} {ep[field]!r} is not a CIDR"
    for mesh in index.by_kind["MeshConfig"]:
        cidr = mesh.spec.get("vipCidr")
        if cidr is not None and not is_cidr(cidr):
            yield mesh, ("spec", "vipCidr"), f"vipCidr {cidr!r} is not a CIDR such as 240.0.0.0/16"
    # Istio's rules: a DNS endpoint's and a WorkloadEntry's address is an IP or a DNS name; a STATIC
    # endpoint's an IP (GAL0112 says so); NONE and DYNAMIC_DNS endpoints are errors whatever they hold.
    for se in index.by_kind["ServiceEntry"]:
        if se.spec.get("resolution") in ("DNS", "DNS_ROUND_ROBIN"):
            for i, ep in enumerate(se.spec.get("endpoints") or []):
                address = ep.get("address", "")
                if not syntax.is_ip(address) and syntax.fqdn_error(address):
                    yield se, ("spec", "endpoints", i, "address"), (
                        f"endpoint address {address!r} is not a valid FQDN or an IP address; resolution "
                        f"{se.spec['resolution']} resolves a DNS name (a unix:// socket needs resolution STATIC)")
    for we in index.by_kind["WorkloadEntry"]:
        address = we.spec.get("address", "")
        if address and not address.startswith(syntax.UNIX_PREFIX) and not syntax.is_ip(address) \
                and syntax.fqdn_error(address):
            yield we, ("spec", "address"), (f"endpoint address {address!r} is not a valid FQDN or an IP address: "
                                            f"{syntax.fqdn_error(address)}")
    for se in index.by_kind["ServiceEntry"]:
        for i, address in enumerate(se.spec.get("addresses", [])):
            problem = syntax.ip_or_subnet_error(address)
            if problem:
                yield se, ("spec", "addresses", i), (f"{problem}; give an IP address or a CIDR block such as "
                                                     "10.0.0.0/24")
    for kind in ("EndpointSlice", "Endpoints", "Pod", "Service"):
        for obj in index.by_kind[kind]:
            for path, message in kubernetes_address_errors(obj):
                yield obj, path, message


@analyzer("invalid-host", "GAL0117", Level.ERROR, "a host name is not a DNS name or wildcard Istio accepts", local=(),
          kinds=("ServiceEntry", "DestinationRule", "VirtualService"))
def invalid_host(index: Index):
    """Istio's host rules: a DNS name whose first label may be a wildcard (``*``, ``*.x``, ``*x``, short
    names); a ServiceEntry's ``*`` is IST0106's; a VirtualService may also name an IP, and one bound to
    gateways only the SNI Istio generates; a destination is never ``*``."""
    domain_error = syntax.wildcard_domain_error

    def hosts():
        for se in index.by_kind["ServiceEntry"]:
            for i, host in enumerate(se.spec.get("hosts", [])):
                if host != "*":
                    yield se, ("spec", "hosts", i), host, domain_error(host)
        for dr in index.by_kind["DestinationRule"]:
            yield dr, ("spec", "host"), dr.spec["host"], domain_error(dr.spec["host"])
        for vs in index.by_kind["VirtualService"]:
            gateways = vs.spec.get("gateways") or []
            sni = any(match.get("sniHosts") for rule in vs.spec.get("tls", []) for match in rule.get("match") or [])
            for i, host in enumerate(vs.spec.get("hosts", [])):
                problem = (syntax.gateway_host_error(host, sni) if gateways and "mesh" not in gateways
                           else domain_error(host))
                yield vs, ("spec", "hosts", i), host, None if syntax.is_ip(host) else problem
            for path, dest, _ in destinations(vs):
                host = dest["host"]
                yield vs, path + ("host",), host, (
                    "invalid destination host *: a destination is one service" if host == "*" else domain_error(host))

    for obj, path, host, problem in hosts():
        if problem:
            hint = "; a list item indented wrongly can join two hosts" if " " in host else ""
            yield obj, path, (f"host {host!r} is not a DNS name such as reviews.bookinfo.svc.cluster.local "
                              f"or *.example.com ({problem}{hint})")
