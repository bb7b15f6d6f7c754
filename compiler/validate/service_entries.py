"""Checks on ServiceEntries and on port numbers everywhere."""
from __future__ import annotations

from ..findings import Level
from ..hosts import fqdn
from .framework import analyzer
from .index import Index, destinations
from .topology import is_ip

DNS_RESOLUTIONS = ("DNS", "DNS_ROUND_ROBIN")


@analyzer("static-hostname-endpoint", "GAL0112", Level.ERROR,
          "a STATIC ServiceEntry has an endpoint address that is a hostname", local=(), kinds=("ServiceEntry",))
def static_hostname_endpoint(index: Index):
    for se in index.by_kind["ServiceEntry"]:
        if se.spec.get("resolution") != "STATIC":
            continue
        for i, ep in enumerate(se.spec.get("endpoints", [])):
            address = ep.get("address", "")
            if address and not is_ip(address) and not address.startswith("unix://"):
                yield se, ("spec", "endpoints", i, "address"), (
                    f"resolution STATIC needs IP addresses, but {address!r} is a hostname; "
                    "use resolution DNS or give the IP")


@analyzer("endpoints-with-workload-selector", "GAL0113", Level.ERROR,
          "a ServiceEntry has both endpoints and a workloadSelector", local=(), kinds=("ServiceEntry",))
def endpoints_with_workload_selector(index: Index):
    for se in index.by_kind["ServiceEntry"]:
        if se.spec.get("endpoints") and se.spec.get("workloadSelector"):
            yield se, ("spec", "workloadSelector"), (
                "endpoints and workloadSelector cannot be used together; list endpoints or select "
                "WorkloadEntries, not both")


@analyzer("wildcard-host-with-dns", "GAL0114", Level.ERROR,
          "a ServiceEntry with DNS resolution declares a wildcard host", local=(), kinds=("ServiceEntry",))
def wildcard_host_with_dns(index: Index):
    for se in index.by_kind["ServiceEntry"]:
        if se.spec.get("resolution") not in DNS_RESOLUTIONS or se.spec.get("endpoints"):
            continue
        for i, host in enumerate(se.spec.get("hosts", [])):
            if host.startswith("*"):
                yield se, ("spec", "hosts", i), (
                    f"wildcard host {host!r} cannot be resolved with {se.spec['resolution']}; "
                    "list concrete hosts or use resolution NONE")


def _ports(index: Index):
    """(object, path, port number) for every port number the repository writes."""
    for se in index.by_kind["ServiceEntry"]:
        for i, port in enumerate(se.spec.get("ports", [])):
            yield se, ("spec", "ports", i, "number"), port["number"]
            if "targetPort" in port:
                yield se, ("spec", "ports", i, "targetPort"), port["targetPort"]
        for i, ep in enumerate(se.spec.get("endpoints", [])):
            for name, number in (ep.get("ports") or {}).items():
                yield se, ("spec", "endpoints", i, "ports", name), number
    for we in index.by_kind["WorkloadEntry"]:
        for name, number in (we.spec.get("ports") or {}).items():
            yield we, ("spec", "ports", name), number
    for gw in index.by_kind["Gateway"]:
        for i, server in enumerate(gw.spec.get("servers", [])):
            yield gw, ("spec", "servers", i, "port", "number"), server["port"]["number"]
    for vs in index.by_kind["VirtualService"]:
        for path, dest, _ in destinations(vs):
            number = (dest.get("port") or {}).get("number")
            if number is not None:
                yield vs, path + ("port", "number"), number


@analyzer("port-out-of-range", "GAL0115", Level.ERROR, "a port number is outside 1-65535", local=(),
          kinds=("ServiceEntry", "WorkloadEntry", "Gateway", "VirtualService"))
def port_out_of_range(index: Index):
    for obj, path, number in _ports(index):
        if not 1 <= number <= 65535:
            yield obj, path, f"port {number} is outside 1-65535"


@analyzer("conflicting-port-protocol", "GAL0116", Level.WARNING,
          "the same host and port are declared with different protocols")
def conflicting_port_protocol(index: Index):
    first: dict[tuple[str, int], tuple] = {}
    for se in index.by_kind["ServiceEntry"]:
        for host in se.spec.get("hosts", []):
            host = fqdn(host, se.namespace)
            for i, port in enumerate(se.spec.get("ports", [])):
                protocol = port.get("protocol", "TCP").upper()
                seen = first.setdefault((host, port["number"]), (protocol, se, i))
                if seen[0] != protocol:
                    yield se, ("spec", "ports", i, "protocol"), (
                        f"{host}:{port['number']} is {protocol} here but {seen[0]} in "
                        f"{seen[1].ref} ({seen[1].file}:{seen[1].line_of(('spec', 'ports', seen[2]))}); "
                        "one protocol wins unpredictably")
