"""Checks on ServiceEntries and on port numbers everywhere.

Istio's webhook rules for a ServiceEntry that its JSON Schema cannot express (ValidateServiceEntry)
are reported as ``istioctl analyze`` reports them, errors as IST0106 and warnings as IST0133, but
for the mistakes Galleon had a code of its own for (GAL0111-GAL0115, GAL0117), which keep it. Each
mistake is reported once, where it is written.
"""
from __future__ import annotations

from collections import defaultdict

from ..findings import Level
from ..hosts import fqdn
from ..parse import SourceObject
from ..vips import under_suffix
from .framework import analyzer
from .index import Index, destinations, export_scopes
from .syntax import (HTTP_PROTOCOLS, PROTOCOLS, TCP_PROTOCOLS, TLS_PROTOCOLS, UNIX_PREFIX, export_to_errors,
                     fqdn_error, is_dns1123_label, is_ip, is_partial_wildcard, labels_valid, protocol,
                     selector_errors, wildcard_domain_error)
from .workload_entries import entry_errors, entry_warnings

SCHEMA_ERROR, SCHEMA_WARNING = "IST0106", "IST0133"
DNS_RESOLUTIONS = ("DNS", "DNS_ROUND_ROBIN")
DYNAMIC_DNS = "DYNAMIC_DNS"
DYNAMIC_DNS_PROTOCOLS = ("HTTP", "TLS", "GRPC", "HTTP2")
WAYPOINT_LABEL = "istio.io/use-waypoint"
SUPPORTED = ", ".join(sorted(PROTOCOLS.values()))


def resolution(se) -> str:
    return se.spec.get("resolution", "NONE")


def _port_protocol(port: dict) -> str | None:
    """Istio's protocol of a ServiceEntry port; None when unset or unsupported."""
    return protocol(port.get("protocol", ""))


def _written_protocol_invalid(port: dict) -> bool:
    return bool(port.get("protocol")) and _port_protocol(port) is None


def _multiple_hosts_offender(spec: dict) -> int | None:
    """The first port that makes several hosts ambiguous (Istio): with resolution other than NONE,
    a port neither HTTP nor TLS cannot tell the hosts apart. An unsupported protocol, reported as
    such, is not counted again."""
    if spec.get("resolution", "NONE") == "NONE" or len(spec.get("hosts", [])) < 2:
        return None
    for i, port in enumerate(spec.get("ports", [])):
        if _written_protocol_invalid(port):
            continue
        if _port_protocol(port) not in HTTP_PROTOCOLS | TLS_PROTOCOLS:
            return i
    return None


@analyzer("invalid-service-entry", SCHEMA_ERROR, Level.ERROR,
          "a ServiceEntry breaks a rule of Istio's validation a schema cannot express", local=(),
          kinds=("ServiceEntry",))
def invalid_service_entry(index: Index):
    for se in index.by_kind["ServiceEntry"]:
        for path, message in _service_entry_errors(se):
            yield se, path, message


def _service_entry_errors(se):
    spec = se.spec
    res = resolution(se)
    hosts = spec.get("hosts", [])
    ports = spec.get("ports", [])
    endpoints = spec.get("endpoints") or []
    addresses = spec.get("addresses") or []
    if "workloadSelector" in spec:
        for key, message in selector_errors((spec["workloadSelector"] or {}).get("labels") or {}):
            yield ("spec", "workloadSelector", "labels", key), (
                f"{message}; a selector matches exact label values: name the label and its value")
    for i, host in enumerate(hosts):
        if host == "*":
            yield ("spec", "hosts", i), ("invalid host *: a ServiceEntry cannot declare every host; list the hosts "
                                         "it serves (a wildcard such as *.example.com is allowed)")
    if res not in ("NONE", "STATIC"):
        cidr = next((i for i, a in enumerate(addresses) if "/" in a), None)
        if cidr is not None:
            yield ("spec", "addresses", cidr), (
                f"CIDR addresses are allowed only for NONE/STATIC resolution types, not {res}: "
                f"{addresses[cidr]!r} is a range; give single IP addresses or use resolution NONE or STATIC")
    yield from _port_errors(ports)
    declared = {port["name"] for port in ports}
    if res == "NONE":
        if endpoints:
            yield ("spec", "resolution") if "resolution" in spec else ("spec", "endpoints"), (
                "no endpoints should be provided for resolution type NONE (the default): set resolution STATIC "
                "for IP endpoints or DNS for hostnames, or remove the endpoints")
    elif res == "STATIC":
        yield from _endpoint_errors(endpoints, declared)
    elif res in DNS_RESOLUTIONS:
        if res == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            yield ("spec", "endpoints", 1), (
                f"there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN, not {len(endpoints)}; "
                "use resolution DNS to balance over several")
        yield from _endpoint_errors(endpoints, declared, addresses=False)
    elif res == DYNAMIC_DNS:
        yield from _dynamic_dns_errors(se)
    offender = _multiple_hosts_offender(spec)
    if offender is not None:
        port = ports[offender]
        yield ("spec", "ports", offender, "protocol"), (
            f"multiple hosts provided with non-HTTP, non-TLS ports: port {port['number']} is "
            f"{port.get('protocol') or 'unset (detected)'}, where a connection does not say which host it is for; "
            "give each host its own ServiceEntry, declare the port HTTP or TLS, or use resolution NONE")
    for i, message in export_to_errors(se.namespace, spec.get("exportTo", ()), service_entry=True):
        yield ("spec", "exportTo") + (() if i is None else (i,)), message


def _endpoint_errors(endpoints: list[dict], declared: set[str], addresses: bool = True):
    """``entry_errors`` of each endpoint that is not plainly valid: an address that is no unix socket
    (GAL0111/GAL0112 judge it), only declared port names, valid labels. A plain loop, no call for those:
    a large mesh has 150,000 endpoints."""
    for i, ep in enumerate(endpoints):
        address, ports, labels = ep.get("address"), ep.get("ports"), ep.get("labels")
        if address and not address.startswith(UNIX_PREFIX) and (not ports or declared.issuperset(ports)) \
                and (not labels or labels_valid(labels)):
            continue
        yield from entry_errors(ep, ("spec", "endpoints", i), declared, addresses=addresses)


def _port_errors(ports: list[dict]):
    names: dict[str, int] = {}
    numbers: dict[int, int] = {}
    for i, port in enumerate(ports):
        name, number = port["name"], port["number"]
        if name in names:
            yield ("spec", "ports", i, "name"), (f"service entry port name {name!r} already defined "
                                                 f"(ports[{names[name]}]); give each port its own name")
        elif not is_dns1123_label(name):
            yield ("spec", "ports", i, "name"), (f"invalid port name: {name!r}; a port name is a DNS label: letters, "
                                                 "digits and inner dashes, at most 63 characters")
        names.setdefault(name, i)
        if number in numbers:
            yield ("spec", "ports", i, "number"), (f"service entry port {number} already defined "
                                                   f"(ports[{numbers[number]}]); list each port number once")
        numbers.setdefault(number, i)
        if _written_protocol_invalid(port):
            yield ("spec", "ports", i, "protocol"), (f"unsupported protocol: {port['protocol']!r}; use one of "
                                                     f"{SUPPORTED}, or leave it out to have it detected")


def _dynamic_dns_errors(se):
    spec = se.spec
    for i, host in enumerate(spec.get("hosts", [])):
        if not host.startswith("*"):
            yield ("spec", "hosts", i), (f"host must be wildcarded for resolution mode DYNAMIC_DNS: {host!r} is not; "
                                         "use *.DOMAIN, or resolution DNS for a single name")
    if spec.get("addresses"):
        yield ("spec", "addresses"), ("addresses cannot be set for resolution type DYNAMIC_DNS: HTTP route domains "
                                      "are only generated from the hosts; remove them")
    if spec.get("endpoints"):
        yield ("spec", "endpoints"), ("endpoints cannot be set for resolution type DYNAMIC_DNS: the destination "
                                      "address is resolved from the requested host; remove them")
    for i, port in enumerate(spec.get("ports", [])):
        if not _written_protocol_invalid(port) and _port_protocol(port) not in DYNAMIC_DNS_PROTOCOLS:
            yield ("spec", "ports", i, "protocol"), (
                f"only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS, not "
                f"{port.get('protocol') or 'an unset (detected) protocol'}; declare one of them")
    waypoint = se.labels.get(WAYPOINT_LABEL, "")
    if spec.get("location") == "MESH_INTERNAL" and waypoint and waypoint.lower() != "none":
        yield ("spec", "location"), (f"location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when "
                                     f"using waypoints (label {WAYPOINT_LABEL}={waypoint}); use MESH_EXTERNAL")


@analyzer("service-entry-warning", SCHEMA_WARNING, Level.WARNING,
          "a ServiceEntry is accepted by Istio's validation with a warning", local=(), kinds=("ServiceEntry",))
def service_entry_warning(index: Index):
    for se in index.by_kind["ServiceEntry"]:
        spec = se.spec
        res = resolution(se)
        if "workloadSelector" in spec and not (spec["workloadSelector"] or {}).get("labels"):
            yield se, ("spec", "workloadSelector"), (
                "service entry: workload selector specified without labels, will be applied to all services in "
                "namespace: it selects every WorkloadEntry of the namespace; give it labels")
        if res != DYNAMIC_DNS:
            for i, host in enumerate(spec.get("hosts", [])):
                if host != "*" and wildcard_domain_error(host) is None and is_partial_wildcard(host):
                    yield se, ("spec", "hosts", i), (
                        f"partial wildcard {host!r} not allowed: a wildcard stands for whole labels, yet this one "
                        f"matches any name ending in {host[1:]!r}; write '*.' and a domain, such as *.example.com")
        if res == "NONE" and "workloadSelector" in spec:
            yield se, ("spec", "workloadSelector"), (
                "workloadSelector should not be set when resolution mode is NONE: traffic goes to the address "
                "the caller asked for, not to the selected workloads; use resolution STATIC")
        if res == "STATIC":
            for i, ep in enumerate(spec.get("endpoints") or []):
                if "network" in ep and not ep.get("address"):  # the rare case, before asking (150,000 endpoints)
                    for path, message in entry_warnings(ep, ("spec", "endpoints", i)):
                        yield se, path, message
        if res in DNS_RESOLUTIONS and spec.get("addresses") and len(spec.get("hosts", [])) > 1 \
                and _multiple_hosts_offender(spec) is None:
            first_tcp = next((i for i, port in enumerate(spec.get("ports", []))
                              if _port_protocol(port) in TCP_PROTOCOLS), None)
            if first_tcp is not None:
                yield se, ("spec", "ports", first_tcp, "protocol"), (
                    "service entry can not have more than one host specified simultaneously with address and tcp "
                    f"port: port {spec['ports'][first_tcp]['number']} is {spec['ports'][first_tcp]['protocol']}, so "
                    "the hosts share the addresses; give each host its own ServiceEntry")


@analyzer("static-hostname-endpoint", "GAL0112", Level.ERROR,
          "a STATIC ServiceEntry has an endpoint address that is not an IP address", local=(),
          kinds=("ServiceEntry",))
def static_hostname_endpoint(index: Index):
    for se in index.by_kind["ServiceEntry"]:
        if resolution(se) != "STATIC":
            continue
        for i, ep in enumerate(se.spec.get("endpoints") or []):
            address = ep.get("address", "")
            if address and not address.startswith(UNIX_PREFIX) and not is_ip(address):
                yield se, ("spec", "endpoints", i, "address"), (
                    f"endpoint address {address!r} is not a valid IP address: resolution STATIC needs IP addresses "
                    "(or unix:// sockets); use resolution DNS for hostnames, or give the IP")


@analyzer("endpoints-with-workload-selector", "GAL0113", Level.ERROR,
          "a ServiceEntry has both endpoints and a workloadSelector", local=(), kinds=("ServiceEntry",))
def endpoints_with_workload_selector(index: Index):
    for se in index.by_kind["ServiceEntry"]:
        # Istio's rule: a workloadSelector written at all, even {}, with endpoints listed
        if se.spec.get("endpoints") and "workloadSelector" in se.spec:
            yield se, ("spec", "workloadSelector"), (
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry; list endpoints or select "
                "WorkloadEntries, not both")


@analyzer("wildcard-host-with-dns", "GAL0114", Level.ERROR,
          "a ServiceEntry with DNS resolution and no endpoints declares a host DNS cannot resolve (a wildcard)",
          local=(), kinds=("ServiceEntry",))
def wildcard_host_with_dns(index: Index):
    for se in index.by_kind["ServiceEntry"]:
        res = resolution(se)
        if res not in DNS_RESOLUTIONS or se.spec.get("endpoints"):
            continue  # with endpoints, those are resolved instead of the hosts: any host is fine (Istio)
        for i, host in enumerate(se.spec.get("hosts", [])):
            # "*" (IST0106) and hosts that are not names at all (GAL0117) are reported as such
            if host == "*" or wildcard_domain_error(host):
                continue
            problem = fqdn_error(host)
            if problem:
                yield se, ("spec", "hosts", i), (
                    f"hosts must be FQDN if no endpoints are provided for resolution mode {res}, and {problem}: "
                    f"{host!r} cannot be resolved; list concrete hosts, give endpoints to resolve instead, "
                    "or use resolution NONE")


def _ports(index: Index):
    """(object, path, port number) for every port number the repository writes."""
    for se in index.by_kind["ServiceEntry"]:
        for i, port in enumerate(se.spec.get("ports", [])):
            yield se, ("spec", "ports", i, "number"), port["number"]
            if "targetPort" in port:
                yield se, ("spec", "ports", i, "targetPort"), port["targetPort"]
        for i, ep in enumerate(se.spec.get("endpoints") or []):
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
            yield obj, path, f"port number {number} must be in the range 1..65535"


@analyzer("service-entry-addresses-required", "IST0134", Level.WARNING,
          "a ServiceEntry port of TCP (or unset) protocol has no address to tell its traffic apart",
          local=("vip_suffix",), kinds=("ServiceEntry",))
def service_entry_addresses_required(index: Index):
    (suffix,) = index.vip_suffix
    for se in index.by_kind["ServiceEntry"]:
        spec = se.spec
        if spec.get("addresses") or _status_addresses(se):
            continue
        # Galleon gives every cross-cluster name a VIP of its own (compiler/vips.py)
        if all(under_suffix(fqdn(host, se.namespace), suffix) for host in spec.get("hosts", [])):
            continue
        for i, port in enumerate(spec.get("ports", [])):
            if port.get("protocol", "").lower() in ("", "tcp"):
                yield se, ("spec", "ports", i, "name"), (
                    f"ServiceEntry addresses are required for this protocol: port {port['number']} is "
                    f"{port.get('protocol') or 'unset (detected)'} and the entry has no address, so its listener "
                    f"takes port {port['number']} for every address; add addresses, or declare an HTTP or TLS "
                    "protocol")


def _status_addresses(se) -> bool:
    """Whether Istio allocated the entry addresses (``status.addresses``, which it writes)."""
    status = se.body.get("status")
    return isinstance(status, dict) and isinstance(status.get("addresses"), list) and bool(status["addresses"])


@analyzer("conflicting-service-entry-protocol", "IST0177", Level.WARNING,
          "ServiceEntries visible in one namespace declare the same host and port with different protocols")
def conflicting_service_entry_protocol(index: Index):
    # (scope, host, port number) -> [(protocol, ServiceEntry, port index)], in a fixed order
    declared: dict[tuple[str, str, int], list[tuple[str, SourceObject, int]]] = defaultdict(list)
    for se in sorted(index.by_kind["ServiceEntry"], key=lambda o: (o.namespace, o.name)):
        scopes = sorted(export_scopes(se.namespace, se.spec.get("exportTo", ())))
        hosts = dict.fromkeys(fqdn(host, se.namespace) for host in se.spec.get("hosts", []))
        for scope in scopes:
            for host in hosts:
                for i, port in enumerate(se.spec.get("ports", [])):
                    declared[(scope, host, port["number"])].append((port.get("protocol", "").upper(), se, i))
    reported = set()
    for key in sorted(declared):
        scope, host, number = key
        entries = declared[key] + (declared.get(("*", host, number), []) if scope != "*" else [])
        protocols = sorted({p for p, _, _ in entries})
        owners = {se.key: se for _, se, _ in entries}
        # One entry repeating a port number is reported as that (IST0106), not as a conflict with itself
        if len(protocols) < 2 or len(owners) < 2:
            continue
        names = ", ".join(sorted(f"{se.namespace}/{se.name}" for se in owners.values()))
        shown = ", ".join(p or '""' for p in protocols)
        for proto, se, i in entries:
            if se.key in reported:
                continue
            reported.add(se.key)
            yield se, ("spec", "ports", i, "protocol"), (
                f"Multiple ServiceEntries ({names}) define the same host {host!r} and port {number} with conflicting "
                f"protocols ({shown}); proxies take one of them unpredictably: declare one protocol in all")
