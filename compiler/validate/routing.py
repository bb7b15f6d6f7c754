"""Checks on VirtualServices and Gateways as routing tables."""
from __future__ import annotations

from collections import defaultdict

from ..findings import Level
from ..hosts import fqdn
from .framework import analyzer, repeats
from .index import Index


def _routes(vs):
    for section in ("http", "tcp", "tls"):
        for i, rule in enumerate(vs.spec.get(section, [])):
            if rule.get("route"):
                yield ("spec", section, i, "route"), rule["route"]


@analyzer("duplicate-virtual-service-host", "GAL0101", Level.ERROR,
          "a VirtualService lists the same host twice", local=(), kinds=("VirtualService",))
def duplicate_virtual_service_host(index: Index):
    for vs in index.by_kind["VirtualService"]:
        hosts = vs.spec.get("hosts", [])
        for i, first in repeats(fqdn(host, vs.namespace) for host in hosts):
            yield vs, ("spec", "hosts", i), f"host {hosts[i]!r} is listed twice (also hosts[{first}]); remove one"


@analyzer("negative-weight", "GAL0103", Level.ERROR, "a route destination has a negative weight",
          local=(), kinds=("VirtualService",))
def negative_weight(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for path, route in _routes(vs):
            for j, dest in enumerate(route):
                if dest.get("weight", 0) < 0:
                    yield vs, path + (j, "weight"), f"weight {dest['weight']} is negative; use 0 or more"


@analyzer("all-weights-zero", "GAL0104", Level.ERROR,
          "every destination of a route has weight 0, so the route sends traffic nowhere",
          local=(), kinds=("VirtualService",))
def all_weights_zero(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for path, route in _routes(vs):
            if all("weight" in d for d in route) and not any(d["weight"] for d in route):
                yield vs, path, "every destination has weight 0; give at least one a positive weight"


@analyzer("conflicting-mesh-virtual-service-hosts", "IST0109", Level.ERROR,
          "two VirtualServices bound to the mesh claim the same host")
def conflicting_mesh_virtual_service_hosts(index: Index):
    claims = defaultdict(list)
    for vs in index.by_kind["VirtualService"]:
        if "mesh" not in vs.spec.get("gateways", ["mesh"]):
            continue
        for i, host in enumerate(vs.spec.get("hosts", [])):
            claims[fqdn(host, vs.namespace)].append((vs, i))
    for host, owners in claims.items():
        if len({vs.key for vs, _ in owners}) < 2:
            continue
        names = ", ".join(sorted(f"{vs.namespace}/{vs.name}" for vs, _ in owners))
        for vs, i in owners:
            yield vs, ("spec", "hosts", i), (f"The VirtualServices {names} associated with mesh define "
                                             f"the same host {host!r}, which can lead to undefined "
                                             "behavior; merge them into one")


@analyzer("duplicate-gateway-port-name", "GAL0106", Level.ERROR,
          "two servers of one Gateway use the same port name")
def duplicate_gateway_port_name(index: Index):
    for gw in index.by_kind["Gateway"]:
        servers = gw.spec.get("servers", [])
        # an unnamed port gets a unique placeholder: only names can clash
        names = [(server.get("port") or {}).get("name") or object() for server in servers]
        for i, first in repeats(names):
            yield gw, ("spec", "servers", i, "port", "name"), (
                f"port name {names[i]!r} is already used by servers[{first}]; port names must be unique")
