"""Cross-cluster DNS entries (``<name>.<namespace>.<suffix>`` -> VIP) in the formats DNS servers read.

- ``hosts``: an /etc/hosts file, for dnsmasq's ``--addn-hosts`` or CoreDNS's ``hosts FILE``;
- ``zone``: an RFC 1035 master file for ``<suffix>.``, for authoritative servers (Knot, NSD, BIND)
  and CoreDNS's ``file`` plugin;
- ``corefile-block``: the CoreDNS server block with the entries inline in its ``hosts`` plugin,
  without the marker comments that reconciler.dns.corefile puts around it.

Python checks the input and works out everything (order, relative names, serial); the templates in
``templates/dns/`` only lay it out. The output is a function of the input alone, so a reconciler can
compare a fresh rendering with what is deployed, byte for byte, to find that nothing changed.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import jinja2

from reconciler import defaults
from reconciler.templating import environment

FORMATS, DEFAULT_TTL = defaults.DNS_FORMATS, defaults.DNS_TTL
# The CoreDNS hosts plugin's bounds. Every format takes the same ones, so entries and a TTL that
# render in one format render in all of them.
MIN_TTL, MAX_TTL = 1, 65535

# The zone's name server is ns.<suffix>., with an address record in the zone itself, so the file is
# complete on its own (RFC 1035 wants an SOA and an NS at the apex; Knot and `check_origin` refuse a
# zone without them). The zone is never delegated from the root: each resolver that serves it
# answers from its own copy and nobody follows the NS record, so the default address is loopback,
# "the server you are already asking". Pass the real address when secondaries transfer the zone.
NS_LABEL = "ns"
DEFAULT_NS_ADDRESS = defaults.DNS_NS_ADDRESS
# SOA timers for secondaries: check for changes every 5 minutes, retry a failed check after one, and
# keep answering for a week without the primary (VIPs are stable once given, so stale is still right).
# The SOA minimum, the negative-caching TTL (RFC 2308), is the records' TTL, so a name that appears
# is not hidden by a cached NXDOMAIN longer than a changed address would be by a cached answer.
REFRESH, RETRY, EXPIRE = 300, 60, 604_800
MAX_SERIAL = 2**32 - 1  # RFC 1035: an unsigned 32-bit number
DERIVED_SERIAL_MODULUS = 2**31 - 1  # derived serials fall in 1..2^31-1, positive even as signed 32-bit

# RFC 1123 host name labels, lower case only: DNS names compare case-insensitively, so two entries
# differing only in case would be one name with two addresses. Kubernetes names are lower case anyway.
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_NAME_LENGTH = 253  # without the root's trailing dot


@dataclass(frozen=True)
class _Record:
    """One address record as the templates lay it out."""
    name: str  # fully qualified, without the trailing dot
    relative: str  # relative to the zone's origin
    type: str  # "A" or "AAAA"
    address: str  # canonical text form, e.g. "fd00::1" for "FD00:0:0::1"


def render(entries: Mapping[str, str], format: str, *, suffix: str = "global", ttl: int = DEFAULT_TTL,
           serial: int | None = None, port: int = 53, ns_address: str = DEFAULT_NS_ADDRESS) -> str:
    """``entries`` (fully qualified names without the trailing dot, e.g. 'reviews.default.global',
    -> IPv4 or IPv6 address) in one of FORMATS.

    Deterministic: entries are sorted by name; the same input gives the same bytes. ``ttl`` is the
    records' TTL (checked for ``hosts`` too, which has none). ``serial`` is the zone's SOA serial; when
    None it is derived from the zone's content (a hash folded into 1..2^31-1), so an unchanged zone
    keeps its serial, but a changed one gets an unrelated, not a larger, serial: pass an increasing
    one when secondaries transfer the zone. ``port`` is the Corefile server block's, ``ns_address``
    the zone's name server's (see DEFAULT_NS_ADDRESS).

    Raises ValueError, saying what is wrong, for an unknown format, a name not under ``suffix`` or not
    a valid lower-case host name, ``ns.<suffix>`` (the zone's name server), an invalid address, or a
    ``ttl``, ``serial`` or ``port`` out of range, whatever the format.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown DNS format {format!r}; formats: {', '.join(FORMATS)}")
    _check_name(suffix, "suffix")
    _check_range("ttl", ttl, MIN_TTL, MAX_TTL)
    _check_range("port", port, 1, 65535)
    if serial is not None:
        _check_range("serial", serial, 0, MAX_SERIAL)
    records = sorted((_record(name, address, suffix) for name, address in entries.items()),
                     key=lambda record: record.name)
    ns = _record(f"{NS_LABEL}.{suffix}", ns_address, suffix, reserved_ok=True)
    templates = _environment()
    if format == "hosts":
        return templates.get_template("dns/hosts.j2").render(suffix=suffix, records=records)
    if format == "zone":
        if serial is None:
            serial = _derived_serial(records, suffix, ttl, ns)
        return templates.get_template("dns/zone.j2").render(
            origin=f"{suffix}.", ttl=ttl, serial=serial, refresh=REFRESH, retry=RETRY, expire=EXPIRE,
            minimum=ttl, ns=ns, records=records)
    return templates.get_template("dns/corefile-block.j2").render(suffix=suffix, port=port, ttl=ttl, records=records)


def _derived_serial(records: list[_Record], suffix: str, ttl: int, ns: _Record) -> int:
    """A serial that changes with anything in the zone (not only the entries: a new TTL must reach
    secondaries too) and with nothing else; in 1..2^31-1."""
    content = "\n".join([suffix, str(ttl), ns.address, *(f"{r.name} {r.address}" for r in records)])
    digest = hashlib.sha256(content.encode()).digest()
    return int.from_bytes(digest[:8], "big") % DERIVED_SERIAL_MODULUS + 1


def _record(name: str, address: str, suffix: str, reserved_ok: bool = False) -> _Record:
    _check_name(name, "name")
    if not name.endswith(f".{suffix}"):
        raise ValueError(f"{name!r} is not under {suffix!r}: cross-cluster names are <name>.<namespace>.{suffix}")
    relative = name[:-len(suffix) - 1]
    if relative == NS_LABEL and not reserved_ok:
        raise ValueError(f"{name!r} is reserved for the {suffix}. zone's name server")
    if not isinstance(address, str):
        raise ValueError(f"{name!r}: address {address!r} is not a string")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{name!r}: {address!r} is not an IPv4 or IPv6 address") from None
    if getattr(ip, "scope_id", None):
        # "fe80::1%eth0" parses, but a scope means nothing to other hosts and breaks zone files.
        raise ValueError(f"{name!r}: {address!r} has a scope; DNS data has no use for one")
    return _Record(name, relative, "A" if ip.version == 4 else "AAAA", str(ip))


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} {name!r} is not a DNS name")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} {name[:40]!r}... is {len(name)} characters long; DNS names have at most "
                         f"{MAX_NAME_LENGTH}")
    bad = [label for label in name.split(".") if not _LABEL.fullmatch(label)]
    if bad:
        raise ValueError(f"{what} {name!r}: {bad[0]!r} is not a DNS label (lower-case letters, digits and "
                         "inner hyphens, 1-63 of them; no trailing dot)")


def _check_range(what: str, value: int, low: int, high: int) -> None:
    # bool is an int, but True as a TTL or port is a mistake upstream, not a 1.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{what} {value!r} is not an integer in {low}..{high}")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return environment(trim_blocks=True, lstrip_blocks=True)
