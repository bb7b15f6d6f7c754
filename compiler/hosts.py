"""Istio host names: short-name expansion, wildcard matching, and where an object's hosts are seen."""
from __future__ import annotations

from typing import Iterable

CLUSTER_DOMAIN = "svc.cluster.local"


def fqdn(host: str, namespace: str) -> str:
    """Istio's rule: a name without a dot is a Kubernetes service in the object's namespace."""
    if "." in host or host.startswith("*"):
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def service_namespace(host: str) -> str | None:
    """The namespace of a Kubernetes Service's host (``NAME.NAMESPACE.svc.cluster.local``), else None."""
    name, dot, domain = host.partition(".")
    namespace, dot, domain = domain.partition(".")
    return namespace if name and not name.startswith("*") and namespace and domain == CLUSTER_DOMAIN else None


def matches(pattern: str, host: str) -> bool:
    """Whether ``pattern`` (``*``, ``*.example.com`` or exact) covers ``host``."""
    if pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*") and host.endswith(pattern[1:])


EVERYWHERE = "*"  # the scope of what is exported to every namespace


def export_scopes(namespace: str, export_to: Iterable[str]) -> frozenset[str]:
    """The namespaces an object is exported to, as Istio reads ``exportTo``: every one (``*``) when it
    is empty or holds ``*``; ``.`` is the object's own namespace; ``~`` (no one) matches none."""
    export_to = list(export_to)
    if not export_to or EVERYWHERE in export_to:
        return frozenset({EVERYWHERE})
    return frozenset(namespace if e == "." else e for e in export_to)


def exported(scopes: frozenset[str], namespace: str) -> bool:
    """Whether an object exported to ``scopes`` is seen from ``namespace``."""
    return EVERYWHERE in scopes or namespace in scopes
