"""Checks on WorkloadEntries, and the rules they share with a STATIC ServiceEntry's endpoints (Istio's
validateWorkloadEntry): errors as IST0106 and warnings as IST0133, as ``istioctl analyze`` reports
them. An address that is neither an IP nor a DNS name is GAL0111's (topology.py), a port number out
of range GAL0115's (service_entries.py).
"""
from __future__ import annotations

from typing import Collection, Iterator

from ..findings import Level
from ..parse import Path
from .framework import analyzer
from .index import Index
from .syntax import UNIX_PREFIX, is_dns1123_label, label_errors, unix_address_error

SCHEMA_ERROR, SCHEMA_WARNING = "IST0106", "IST0133"
_KEY_RULE = ("a label key is a name of letters, digits, '-', '_' and '.' (at most 63, starting and ending with a "
             "letter or digit), optionally after a DNS prefix and '/'")
_VALUE_RULE = ("a label value is empty, or letters, digits, '-', '_' and '.' starting and ending with a letter or "
               "digit")


def entry_errors(entry: dict, path: Path, service_ports: Collection[str] | None = None,
                 addresses: bool = True) -> Iterator[tuple[Path, str]]:
    """(path, message) for the errors of a WorkloadEntry spec or a ServiceEntry endpoint (``service_ports``:
    the entry's port names). ``addresses=False`` (DNS endpoints): the address is GAL0111's alone."""
    address = entry.get("address", "")
    unix = address.startswith(UNIX_PREFIX)
    if addresses:
        if not address and not entry.get("network"):
            yield path + ("address",), ("address is required: set the workload's IP address or DNS name (or its "
                                        "network, for a workload reached only through that network's gateway)")
            return  # Istio checks nothing else of such an entry
        if unix:
            problem = unix_address_error(address)
            if problem:
                yield path + ("address",), (f"{problem}: a unix:// address names a socket by absolute path "
                                            "(unix:///var/run/app.sock) or by abstract name (unix://@app)")
            if entry.get("ports"):
                yield path + ("ports",), (f"unix endpoint {address} must not include ports: a socket has none; "
                                          "remove them")
    if not (addresses and unix and entry.get("ports")):
        for name, number in (entry.get("ports") or {}).items():
            if service_ports is not None:
                if name not in service_ports:
                    yield path + ("ports", name), (
                        f"endpoint port {number} is not defined by the service entry: it has no port named {name!r}; "
                        f"name one of its ports: {', '.join(sorted(service_ports)) or 'none declared'}")
            elif not is_dns1123_label(name):
                yield path + ("ports", name), (f"invalid port name: {name!r}; a port name is a DNS label: letters, "
                                               "digits and inner dashes, at most 63 characters")
    for key, message in label_errors(entry.get("labels") or {}):
        rule = _VALUE_RULE if message.startswith("invalid tag value") else _KEY_RULE
        yield path + ("labels", key), f"{message}; {rule}"
    if addresses and unix and service_ports is not None and len(set(service_ports)) != 1:
        yield path + ("address",), (f"exactly 1 service port required for unix endpoints, but the ServiceEntry "
                                    f"declares {len(set(service_ports))}: a socket serves one port; give the socket's "
                                    "service its own ServiceEntry")


def entry_warnings(entry: dict, path: Path) -> Iterator[tuple[Path, str]]:
    """(path, message) for the warnings of a WorkloadEntry spec or a STATIC ServiceEntry endpoint."""
    if not entry.get("address") and entry.get("network"):
        yield path + ("network",), (f"address is unset with network {entry['network']!r}: the workload is reached "
                                    "only through that network's gateway; set its address if it has one")


@analyzer("invalid-workload-entry", SCHEMA_ERROR, Level.ERROR,
          "a WorkloadEntry breaks a rule of Istio's validation a schema cannot express", local=(),
          kinds=("WorkloadEntry",))
def invalid_workload_entry(index: Index):
    for we in index.by_kind["WorkloadEntry"]:
        for path, message in entry_errors(we.spec, ("spec",)):
            yield we, path, message


@analyzer("workload-entry-warning", SCHEMA_WARNING, Level.WARNING,
          "a WorkloadEntry is accepted by Istio's validation with a warning", local=(), kinds=("WorkloadEntry",))
def workload_entry_warning(index: Index):
    for we in index.by_kind["WorkloadEntry"]:
        for path, message in entry_warnings(we.spec, ("spec",)):
            yield we, path, message
