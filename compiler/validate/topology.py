"""Checks on the federation's shape: clusters, networks and addresses."""
from __future__ import annotations

import ipaddress
import re
import socket

from ..findings import Level
from .framework import analyzer
from ..kinds import CLUSTER_LABEL
from . import syntax
from .index import Index, destinations

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$",
                       re.IGNORECASE)


def is_ip(text: str) -> bool:
    # inet_pton is strict (no leading zeros, no short forms) and far cheaper than ipaddress
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except (OSError, ValueError):
            pass
    return False


def is_hostname(text: str) -> bool:
    return bool(_HOSTNAME.match(text)) and not text.replace(".", "").isdigit()


def is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _endpoints(index: Index):
    """(object, path of the endpoint, the endpoint) for ServiceEntry endpoints and WorkloadEntries."""
    for se in index.by_kind["ServiceEntry"]:
        for i, ep in enumerate(se.spec.get("endpoints", [])):
            yield se, ("spec", "endpoints", i), ep
    for we in index.by_kind["WorkloadEntry"]:
        yield we, ("spec",), we.spec


@analyzer("unknown-network", "GAL0109", Level.ERROR, "a Cluster or endpoint names a network MeshNetworks does not define",
          local=("networks",), kinds=("Cluster", "ServiceEntry", "WorkloadEntry"))
def unknown_network(index: Index):
    hint = (f"defined networks: {', '.join(sorted(index.networks))}" if index.networks
            else "no MeshNetworks object defines any network")
    for cluster in index.by_kind["Cluster"]:
        if cluster.spec["network"] not in index.networks:
            yield cluster, ("spec", "network"), f"network {cluster.spec['network']!r} is not in MeshNetworks; {hint}"
    for obj, path, ep in _endpoints(index):
        if ep.get("network") and ep["network"] not in index.networks:
            yield obj, path + ("network",), f"network {ep['network']!r} is not in MeshNetworks; {hint}"


@analyzer("unknown-cluster", "GAL0110", Level.ERROR, "an object names a Cluster the repository does not define",
          local=("clusters",), kinds=("MeshNetworks", "ServiceEntry", "WorkloadEntry", "CertificateAuthority"))
def unknown_cluster(index: Index):
    hint = (f"defined clusters: {', '.join(sorted(index.clusters))}" if index.clusters
            else "the repository defines no Cluster")
    for mn in index.by_kind["MeshNetworks"]:
        for network, spec in mn.spec["networks"].items():
            for i, ep in enumerate(spec["endpoints"]):
                if "fromRegistry" in ep and ep["fromRegistry"] not in index.clusters:
                    yield mn, ("spec", "networks", network, "endpoints", i, "fromRegistry"), (
                        f"fromRegistry {ep['fromRegistry']!r} is not a Cluster; {hint}")
    for obj, path, ep in _endpoints(index):
        cluster = (ep.get("labels") or {}).get(CLUSTER_LABEL)
        if cluster is not None and cluster not in index.clusters:
            yield obj, path + ("labels", CLUSTER_LABEL), f"label {CLUSTER_LABEL}={cluster!r} is not a Cluster; {hint}"
    for ca in index.by_kind["CertificateAuthority"]:
        for i, cluster in enumerate(ca.spec.get("clusters", [])):
            if cluster not in index.clusters:
                yield ca, ("spec", "clusters", i), f"cluster {cluster!r} is not a Cluster; {hint}"


@analyzer("invalid-address", "GAL0111", Level.ERROR,
          "a gateway, endpoint, CIDR or VIP address is not a valid IP, hostname or CIDR", local=(),
          kinds=("MeshNetworks", "MeshConfig", "ServiceEntry", "WorkloadEntry"))
def invalid_address(index: Index):
    for mn in index.by_kind["MeshNetworks"]:
        for network, spec in mn.spec["networks"].items():
            base = ("spec", "networks", network)
            for i, gw in enumerate(spec.get("gateways", [])):
                address = gw.get("address")
                if address is not None and not (is_ip(address) or is_hostname(address)):
                    yield mn, base + ("gateways", i, "address"), (
                        f"gateway address {address!r} is neither an IP address nor a hostname")
            for i, ep in enumerate(spec["endpoints"]):
                if "fromCidr" in ep and not is_cidr(ep["fromCidr"]):
                    yield mn, base + ("endpoints", i, "fromCidr"), f"fromCidr {ep['fromCidr']!r} is not a CIDR"
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
