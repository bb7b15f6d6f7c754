"""Virtual IPs for cross-cluster names (``<name>.<namespace>.global``).

Every ServiceEntry host under the mesh's ``dnsSuffix`` needs an address that CoreDNS answers and
the sidecars listen for. A host's own ``addresses`` win; the others get one from ``vipCidr``.

A VIP must never move while callers may hold it (cached DNS answers, open connections), so
allocation is sticky: assignments a cluster already serves (its CoreDNS block, the daemon's
state, or the BASE of a preview) are passed in as ``keep`` and kept. A new name starts probing at a
hash of itself, so independent runs agree without sharing state, and skips every address still
``held`` anywhere under another name: a released VIP is not reused while any cluster serves it.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping

DEFAULT_SUFFIX = "global"
DEFAULT_CIDR = "240.0.0.0/16"


@dataclass(frozen=True)
class Assignment:
    """Each name's VIP, and the names the pool had no room for (they get no DNS entry)."""

    addresses: dict[str, str] = field(default_factory=dict)
    unassigned: tuple[str, ...] = ()
    explicit: frozenset[str] = frozenset()  # the names whose address is their own, not allocated

    def again(self, cidr: str, keep: Mapping[str, str] | None = None, prefer: Mapping[str, str] | None = None,
              held: Collection[str] = ()) -> Assignment:
        """The same names allocated against another history (see ``allocate``)."""
        return allocate([*self.addresses, *self.unassigned], cidr, keep=keep, prefer=prefer, held=held,
                        explicit={name: self.addresses[name] for name in self.explicit})


def under_suffix(host: str, suffix: str) -> bool:
    """Whether ``host`` is a cross-cluster name: exactly under the suffix, not a wildcard."""
    suffix = suffix.strip(".").lower()
    return not host.startswith("*") and host.lower().endswith("." + suffix)


def explicit_address(addresses: Iterable[str]) -> str | None:
    """The address DNS should answer for a host's own ``addresses``: the first single IP (a CIDR of
    one address counts); None when it lists only ranges, which no A record can hold."""
    for address in addresses:
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            continue
        if network.num_addresses == 1:
            return str(network.network_address)
    return None


class Pool:
    """The usable addresses of ``vipCidr``, by position (a /16 is not worth listing)."""

    def __init__(self, cidr: str):
        self.network = ipaddress.ip_network(cidr, strict=False)
        # An IPv4 network's first and last addresses are its own and its broadcast address.
        self.skip_ends = self.network.version == 4 and self.network.num_addresses > 2
        self.size = self.network.num_addresses - (2 if self.skip_ends else 0)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip not in self.network:
            return False
        return not self.skip_ends or ip not in (self.network.network_address, self.network.broadcast_address)

    def at(self, position: int) -> str:
        return str(self.network.network_address + position + (1 if self.skip_ends else 0))

    def start(self, name: str) -> int:
        return int.from_bytes(hashlib.sha256(name.encode()).digest()[:16], "big") % self.size


def allocate(names: Iterable[str], cidr: str = DEFAULT_CIDR, *, explicit: Mapping[str, str] | None = None,
             keep: Mapping[str, str] | None = None, prefer: Mapping[str, str] | None = None,
             held: Collection[str] = ()) -> Assignment:
    """VIPs for ``names`` (in lower case, as DNS answers them).

    ``explicit``: names with their own address (used as is). ``keep``: assignments to keep when
    still valid (in the pool, not taken by an explicit address or an earlier kept name).
    ``prefer``: addresses to give names ``keep`` does not place (what other clusters answer), when
    still free once ``keep`` is placed. ``held``: addresses in use somewhere under names not known
    here; never given to a new name. Addresses in ``keep`` whose name is gone are held too. Same
    arguments, same result.
    """
    # DNS names compare without case, and CoreDNS's block holds them in lower case.
    names = sorted({name.lower() for name in names})
    explicit, keep, prefer = (_folded(m) for m in (explicit, keep, prefer))
    pool = Pool(cidr)
    result = {name: explicit[name] for name in names if name in explicit}
    taken = set(result.values())
    fresh = [name for name in names if name not in result]
    for tier, blocked in ((keep, set()), (prefer, set(keep.values()))):
        unplaced = []
        for name in fresh:
            address = tier.get(name)
            if address is not None and address in pool and address not in taken and address not in blocked:
                result[name] = address
                taken.add(address)
            else:
                unplaced.append(name)
        fresh = unplaced
    reserved = taken | set(held) | set(keep.values())
    unassigned = []
    for name in fresh:
        address = _probe(pool, name, reserved)
        if address is None:
            unassigned.append(name)
        else:
            result[name] = address
            reserved.add(address)
    return Assignment(dict(sorted(result.items())), tuple(unassigned), frozenset(explicit) & set(result))


def _folded(mapping: Mapping[str, str] | None) -> dict[str, str]:
    return {name.lower(): address for name, address in (mapping or {}).items()}


def _probe(pool: Pool, name: str, reserved: set[str]) -> str | None:
    """The first free address from the name's hash on, wrapping around; None when the pool is full."""
    start = pool.start(name)
    for step in range(pool.size):
        address = pool.at((start + step) % pool.size)
        if address not in reserved:
            return address
    return None
