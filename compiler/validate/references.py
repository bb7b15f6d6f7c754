"""Checks that what an object names exists: hosts, subsets, gateways, workloads."""
from __future__ import annotations

from ..findings import Level
from ..hosts import fqdn
from .framework import analyzer
from .index import Index, destinations

REFERENCE_NOT_FOUND = "IST0101"


@analyzer("destination-host-not-found", REFERENCE_NOT_FOUND, Level.ERROR,
          "a VirtualService destination or mirror names a host no ServiceEntry declares",
          local=("declared",), kinds=("VirtualService",))
def destination_host_not_found(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for path, dest, _ in destinations(vs):
            host = fqdn(dest["host"], vs.namespace)
            if not index.services(host):
                yield vs, path + ("host",), (f"Referenced host not found: {dest['host']!r}; "
                                             "declare it in a ServiceEntry or fix the name")


@analyzer("destination-rule-host-not-found", REFERENCE_NOT_FOUND, Level.ERROR,
          "a DestinationRule applies to a host no ServiceEntry declares",
          local=("declared",), kinds=("DestinationRule",))
def destination_rule_host_not_found(index: Index):
    for dr in index.by_kind["DestinationRule"]:
        host = fqdn(dr.spec["host"], dr.namespace)
        if not host.startswith("*") and not index.services(host):
            yield dr, ("spec", "host"), (f"Referenced host not found: {dr.spec['host']!r}; "
                                         "declare it in a ServiceEntry or fix the name")


@analyzer("subset-not-found", REFERENCE_NOT_FOUND, Level.ERROR,
          "a destination names a subset that no DestinationRule for its host defines",
          local=("declared", "subset_facts"), kinds=("VirtualService",))
def subset_not_found(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for path, dest, _ in destinations(vs):
            subset = dest.get("subset")
            host = fqdn(dest["host"], vs.namespace)
            if subset and index.services(host) and subset not in index.subsets(host):
                known = sorted(index.subsets(host))
                yield vs, path + ("subset",), (
                    f"Referenced subset not found: {subset!r} of host {dest['host']!r}; "
                    + (f"defined subsets: {', '.join(known)}" if known else
                       "no DestinationRule for this host defines subsets"))


@analyzer("gateway-not-found", REFERENCE_NOT_FOUND, Level.ERROR,
          "a VirtualService binds to a Gateway that does not exist", local=("gateways",), kinds=("VirtualService",))
def gateway_not_found(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for i, ref in enumerate(vs.spec.get("gateways", [])):
            if ref == "mesh":
                continue
            key = ref if "/" in ref else f"{vs.namespace}/{ref}"
            if key not in index.gateways:
                yield vs, ("spec", "gateways", i), (
                    f"Referenced gateway not found: {ref!r} (looked for Gateway {key}); "
                    "use NAMESPACE/NAME or 'mesh'")


@analyzer("gateway-selector-matches-nothing", REFERENCE_NOT_FOUND, Level.WARNING,
          "a Gateway's selector matches no WorkloadEntry or endpoint labels in the repository")
def gateway_selector_matches_nothing(index: Index):
    for gw in index.by_kind["Gateway"]:
        selector = gw.spec.get("selector") or {}
        if selector and not any(selector.items() <= labels.items() for labels in index.workload_labels()):
            shown = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            yield gw, ("spec", "selector"), (
                f"Referenced selector not found: {shown} matches no workload in the repository; "
                "only proxies started with these labels will get this Gateway")


@analyzer("destination-port-required", "IST0112", Level.ERROR,
          "a destination omits the port of a host that has several ports",
          local=("declared",), kinds=("VirtualService",))
def destination_port_required(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for path, dest, _ in destinations(vs):
            ports = index.ports(fqdn(dest["host"], vs.namespace))
            if len(ports) > 1 and "number" not in (dest.get("port") or {}):
                yield vs, path, (f"This VirtualService routes to a service with more than one port "
                                 f"({', '.join(map(str, sorted(ports)))}), but does not specify which "
                                 f"to use: set port.number for {dest['host']!r}")


@analyzer("destination-port-not-found", REFERENCE_NOT_FOUND, Level.ERROR,
          "a destination names a port its host does not declare", local=("declared",), kinds=("VirtualService",))
def destination_port_not_found(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for path, dest, _ in destinations(vs):
            ports = index.ports(fqdn(dest["host"], vs.namespace))
            number = (dest.get("port") or {}).get("number")
            if ports and number is not None and number not in ports:
                yield vs, path + ("port", "number"), (
                    f"Referenced port not found: {dest['host']!r} has no port {number}; "
                    f"declared: {', '.join(map(str, sorted(ports)))}")
