"""Checks on the federation's shape: clusters, networks and addresses."""
from __future__ import annotations

import ipaddress
import re
import socket

from ..findings import Level
from .framework import analyzer
from ..kinds import CLUSTER_LABEL
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
    for obj, path, ep in _endpoints(index):
        address = ep.get("address")
        if address is None or address.startswith("unix://"):
            continue
        if not (is_ip(address) or is_hostname(address)):
            yield obj, path + ("address",), f"endpoint address {address!r} is neither an IP address nor a hostname"
    for se in index.by_kind["ServiceEntry"]:
        for i, address in enumerate(se.spec.get("addresses", [])):
            if not is_cidr(address):
                yield se, ("spec", "addresses", i), f"address {address!r} is not an IP address or CIDR"


def is_host(text: str) -> bool:
    """Istio's host syntax: ``*``, or a DNS name optionally led by a ``*.`` wildcard."""
    return text == "*" or is_hostname(text.removeprefix("*.")) or is_ip(text)


@analyzer("invalid-host", "GAL0117", Level.ERROR, "a host name is not a valid DNS name or wildcard", local=(),
          kinds=("ServiceEntry", "DestinationRule", "VirtualService"))
def invalid_host(index: Index):
    def hosts():
        for se in index.by_kind["ServiceEntry"]:
            for i, host in enumerate(se.spec.get("hosts", [])):
                yield se, ("spec", "hosts", i), host
        for dr in index.by_kind["DestinationRule"]:
            yield dr, ("spec", "host"), dr.spec["host"]
        for vs in index.by_kind["VirtualService"]:
            for i, host in enumerate(vs.spec.get("hosts", [])):
                yield vs, ("spec", "hosts", i), host
            for path, dest, _ in destinations(vs):
                yield vs, path + ("host",), dest["host"]

    for obj, path, host in hosts():
        if not is_host(host):
            yield obj, path, (f"host {host!r} is not a DNS name such as reviews.bookinfo.svc.cluster.local "
                              "or *.example.com (a list item indented wrongly can join two hosts)")
