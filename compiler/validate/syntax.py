"""Istio's syntax rules for names, addresses, ports and labels, as its validating webhook applies them
(pkg/config/validation, pkg/config/labels): what each accepts, and Istio's message for what it
does not. Pure functions on strings; the analyzers say where and what to do.

Regexes are matched whole (``fullmatch``: ``$`` would also match before a final newline) and ASCII
only, as Go's RE2 patterns are.
"""
from __future__ import annotations

import functools
import re
import socket
from typing import Final, Iterable, Iterator, Mapping

_LABEL = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_WILDCARD_LABEL = re.compile(rf"\*|(?:\*|\*-)?{_LABEL}")
_QUALIFIED_NAME = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY = re.compile(rf"({_LABEL}(?:\.{_LABEL})*/)?({_QUALIFIED_NAME})")
_LABEL_VALUE = re.compile(f"(?:{_QUALIFIED_NAME})?")
_GO_INT = re.compile(r"[+-]?[0-9]+")
_PREFIX_BITS = re.compile(r"0|[1-9][0-9]*")

UNIX_PREFIX = "unix://"
MAX_LABEL = 63

# Istio's protocol names (pkg/config/protocol), lower-cased as it parses them.
PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "grpc": "GRPC", "grpc-web": "GRPC-Web", "http": "HTTP",
             "http_proxy": "HTTP_PROXY", "http2": "HTTP2", "https": "HTTPS", "tls": "TLS", "mongo": "Mongo",
             "redis": "Redis", "mysql": "MySQL"}
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web"})
TCP_PROTOCOLS = frozenset({"TCP", "HTTPS", "TLS", "Mongo", "Redis", "MySQL"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})


def protocol(name: str) -> str | None:
    """Istio's protocol of a port's ``protocol`` text; None when unsupported (``""`` included)."""
    return PROTOCOLS.get(name.lower())


def is_dns1123_label(text: str) -> bool:
    """A DNS-1123 label: letters (either case), digits and inner dashes, 1-63 characters."""
    return len(text) <= MAX_LABEL and _DNS1123_LABEL.fullmatch(text) is not None


def is_wildcard_label(text: str) -> bool:
    """A first label a wildcard host may have: ``*``, ``*foo``, ``*-foo`` or a DNS-1123 label."""
    return len(text) <= MAX_LABEL and _WILDCARD_LABEL.fullmatch(text) is not None


def _preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {name!r} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _labels_error(domain: str) -> str | None:
    """Istio's ValidateDNS1123Labels: every label DNS-1123 (a final empty one allowed: ``istio.io.``),
    the last not all-numeric."""
    parts = domain.split(".")
    if _GO_INT.fullmatch(parts[-1]) and -2 ** 63 <= int(parts[-1]) < 2 ** 63:  # Go's strconv.Atoi
        return f"domain name {domain!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None
        if not is_dns1123_label(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


@functools.lru_cache(maxsize=65536)  # a mesh names each host in several objects
def fqdn_error(name: str) -> str | None:
    """Istio's ValidateFQDN: a DNS name without wildcards (a single label is one: ``reviews``)."""
    return _preconditions(name) or _labels_error(name)


@functools.lru_cache(maxsize=65536)
def wildcard_domain_error(name: str) -> str | None:
    """Istio's ValidateWildcardDomain: a DNS name whose first label may be a wildcard label (``*``,
    ``*.example.com``, ``*example.com``, ``*-x.example.com``); short names are DNS names."""
    problem = _preconditions(name)
    if problem:
        return problem
    first, dot, rest = name.partition(".")
    if not is_wildcard_label(first):
        return f"domain name {name!r} invalid (label {first!r} invalid)"
    return _labels_error(rest) if dot else None


def is_partial_wildcard(host: str) -> bool:
    """Istio's ValidatePartialWildCard: a ``*`` other than a whole ``*`` or a leading ``*.``."""
    return "*" in host and len(host) != 1 and not host.startswith("*.")


def gateway_host_error(name: str, sni: bool) -> str | None:
    """Istio's host rule for a VirtualService bound to gateways only: a wildcard domain, or, for one
    matching SNI hosts, an SNI Istio generates (``outbound_.PORT_._.HOST``)."""
    problem = _preconditions(name)
    if problem:
        return problem
    if sni and name.startswith("outbound_"):
        parts = name.split("_")
        if len(parts) < 4:
            return f"domain name {name} invalid, should follow 'outbound_.<PORT>_._.<HOSTNAME>' format"
        port, host = parts[1].strip("."), parts[3].strip(".")
        for label, pattern in ((port, "[0-9]"), (host, "[a-zA-Z]")):
            if not re.search(pattern, label):
                return (f"domain name {name!r} invalid (label {label!r} invalid). should follow "
                        "outbound_.<PORT>_._.<HOSTNAME> format")
        return None
    return wildcard_domain_error(name)


def is_ip(text: str, zone: bool = True) -> bool:
    """Go's netip.ParseAddr: IPv4 as four decimal octets without leading zeros, IPv6 (with an
    embedded IPv4, or a non-empty zone; ``zone=False``: none, as Kubernetes takes them). inet_pton is
    as strict, and far cheaper than ipaddress, which matters at a large mesh's endpoints."""
    return is_ipv4(text) or is_ipv6(text, zone)


def is_ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)
        return True
    except (OSError, ValueError):
        return False


def is_ipv6(text: str, zone: bool = False) -> bool:
    address, percent, after = text.partition("%")
    if percent and (not zone or not after):
        return False
    try:
        socket.inet_pton(socket.AF_INET6, address)
        return True
    except (OSError, ValueError):
        return False


def ip_or_subnet_error(text: str) -> str | None:
    """Istio's ValidateIPSubnet: with one ``/``, a CIDR block (host bits may be set; no zone, no
    netmask, the prefix length in plain decimal); else an IP address."""
    if text.count("/") != 1:
        return None if is_ip(text) else f"{text} is not a valid IP"
    address, _, bits = text.partition("/")
    if "%" in address or not is_ip(address) or not _PREFIX_BITS.fullmatch(bits) \
            or int(bits) > (32 if ":" not in address else 128):
        return f"{text} is not a valid CIDR block"
    return None


def unix_address_error(address: str) -> str | None:
    """Istio's ValidateUnixAddress of a ``unix://`` address: an absolute path to a file, or an
    abstract socket (``@name``)."""
    path = address[len(UNIX_PREFIX):]
    if not path:
        return "unix address must not be empty"
    if path.startswith("@"):
        return None
    if not path.startswith("/") or path.endswith("/"):
        return f"{path} is not an absolute path to a file"
    return None


@functools.lru_cache(maxsize=65536)  # a mesh repeats its label keys and values on every endpoint
def _label_key_error(key: str) -> str | None:
    match = _LABEL_KEY.fullmatch(key)
    if match is None:
        return f"invalid tag key: {key!r}"
    if match.group(1) and len(match.group(1)) - 1 > 253:
        return f"invalid tag key: {key!r} (DNS prefix is too long)"
    if len(match.group(2)) > MAX_LABEL:
        return f"invalid tag key: {key!r} (name is too long)"
    return None


@functools.lru_cache(maxsize=65536)
def _label_value_ok(value: str) -> bool:
    return _LABEL_VALUE.fullmatch(value) is not None


_VALID_KEYS: Final[set[str]] = set()
_VALID_VALUES: Final[set[str]] = set()


def labels_valid(labels: Mapping[str, str]) -> bool:
    """Whether every key and value of a label map is a Kubernetes label's: the common answer, found by
    two set comparisons for labels met before (a mesh repeats them on 150,000 endpoints)."""
    if _VALID_KEYS.issuperset(labels) and _VALID_VALUES.issuperset(labels.values()):
        return True
    if not all(_label_key_error(k) is None and _label_value_ok(v) for k, v in labels.items()):
        return False
    if len(_VALID_VALUES) > 100_000:  # a bound, for a daemon reading revision after revision
        _VALID_KEYS.clear()
        _VALID_VALUES.clear()
    _VALID_KEYS.update(labels)
    _VALID_VALUES.update(labels.values())
    return True


def label_errors(labels: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(key, Istio's message) for each Kubernetes-invalid key and value of a label map."""
    for key, value in labels.items():
        problem = _label_key_error(key)
        if problem:
            yield key, problem
        if not _label_value_ok(value):
            yield key, f"invalid tag value: {value!r}"


def selector_errors(labels: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(key, Istio's message) for each label of a workload selector Istio rejects: an empty key, a
    ``*`` in a key or value (selectors match exact values)."""
    for key, value in labels.items():
        if key == "":
            yield key, f"empty key is not supported in selector: {f'{key}={value}'!r}"
        if "*" in key or "*" in value:
            yield key, f"wildcard is not supported in selector: {f'{key}={value}'!r}"


def export_to_errors(namespace: str, export_to: Iterable[str], service_entry: bool = False,
                     rule_with_selector: bool = False) -> Iterator[tuple[int | None, str]]:
    """(index of the entry or None for the list, Istio's message) for Istio's exportTo rules:
    ``.``, ``*``, namespace names (and ``~``, no one, for a ServiceEntry), each once; ``*`` or
    ``~`` alone."""
    export_to = list(export_to)
    seen: set[str] = set()
    for i, entry in enumerate(export_to):
        key = namespace if entry == "." else entry
        if key in seen:
            yield i, (f"duplicate entries in exportTo: . and current namespace {namespace}" if key != entry
                      else f"duplicate entries in exportTo for entry {entry}")
            continue
        if service_entry and entry == "~":
            seen.add(key)
        elif key == "~":
            yield i, "exportTo ~ (none) is not allowed for Istio configuration objects"
        elif key not in (".", "*") and not is_dns1123_label(key):
            yield i, "only .,*, or a valid DNS 1123 label is allowed as exportTo entry"
        else:
            seen.add(key)
    if rule_with_selector and seen:
        if namespace not in seen:
            yield None, "destination rule with workload selector cannot have exportTo beyond current namespace"
        elif len(seen) > 1:
            yield None, "destination rule with workload selector cannot have multiple entries in exportTo"
    if "*" in seen and len(export_to) > 1:
        yield None, "cannot have both public (*) and non-public exportTo values for a resource"
    if "~" in seen and len(export_to) > 1:
        yield None, "cannot export service entry to no one (~) and someone"
