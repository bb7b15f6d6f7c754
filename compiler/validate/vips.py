"""Checks on cross-cluster names' addresses: what DNS would answer must be one name per address."""
from __future__ import annotations

from collections import defaultdict

from ..findings import Level
from ..hosts import fqdn
from ..model import mesh_settings
from ..vips import Pool, explicit_address, under_suffix
from .framework import analyzer
from .index import Index
from .topology import is_cidr


def _settings(index: Index) -> tuple[str, str]:
    """The suffix and range the model will use (the same MeshConfig, the same defaults)."""
    settings = mesh_settings(index.by_kind["MeshConfig"])
    return settings.dns_suffix, settings.vip_cidr


def _names(index: Index, suffix: str):
    """(name, the ServiceEntry the model takes it from, the position of the host) per cross-cluster name."""
    for host, entries in sorted(index.hosts.items()):
        if under_suffix(host, suffix):
            # The model builds a host from the first ServiceEntry by namespace and name.
            se = min(entries, key=lambda e: (e.namespace, e.name))
            position = next(i for i, h in enumerate(se.spec["hosts"]) if fqdn(h, se.namespace) == host)
            yield host, se, position


@analyzer("duplicate-vip", "GAL0118", Level.ERROR,
          "two cross-cluster names claim the same address, or differ only by case")
def duplicate_vip(index: Index):
    suffix, _ = _settings(index)
    yield from _same_name(index, suffix)
    claims = defaultdict(list)
    for name, se, _ in _names(index, suffix):
        addresses = se.spec.get("addresses", [])
        address = explicit_address(addresses)
        if address is not None:
            position = next(i for i, a in enumerate(addresses) if explicit_address([a]) == address)
            claims[address].append((name, se, position))
    for address, named in sorted(claims.items()):
        named.sort(key=lambda claim: (claim[1].namespace, claim[1].name, claim[0]))
        first_name, first, _ = named[0]
        for name, se, position in named[1:]:
            where = "the same ServiceEntry" if se is first else f"ServiceEntry {first.namespace}/{first.name}"
            yield se, ("spec", "addresses", position), (
                f"{name} and {first_name} ({where}) both claim {address}, and DNS can answer one name per "
                f"address; give each name its own address, or leave addresses out to have one allocated")


def _same_name(index: Index, suffix: str):
    """Hosts that DNS, comparing without case, takes for one name."""
    seen: dict[str, str] = {}
    # The spelling in lower case, when there is one, is the one kept: the others are reported.
    for name, se, position in sorted(_names(index, suffix), key=lambda n: (n[0].lower(), n[0] != n[0].lower())):
        first = seen.setdefault(name.lower(), name)
        if first != name:
            yield se, ("spec", "hosts", position), (
                f"{name} and {first} are one DNS name (DNS ignores case), so they cannot have an address each; "
                f"spell them the same, in lower case")


@analyzer("vip-pool-too-small", "GAL0119", Level.ERROR, "vipCidr has fewer addresses than the names needing one")
def vip_pool_too_small(index: Index):
    suffix, cidr = _settings(index)
    if not is_cidr(cidr):
        return  # invalid-address reports it
    pool = Pool(cidr)
    needing, reserved = [], set()
    for name, se, position in _names(index, suffix):
        address = explicit_address(se.spec.get("addresses", []))
        if address is None:
            needing.append((name, se, position))
        elif address in pool:
            reserved.add(address)
    room = pool.size - len(reserved)
    if len(needing) > room:
        name, se, position = needing[room]
        others = len(needing) - room - 1
        left_out = f"{name} and {others} more" if others else name
        yield se, ("spec", "hosts", position), (
            f"{len(needing)} cross-cluster names need a VIP but vipCidr {cidr} has room for {room}, so "
            f"{left_out} would get none; widen MeshConfig spec.vipCidr")
