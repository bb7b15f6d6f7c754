"""Istio host names: short-name expansion and wildcard matching."""
from __future__ import annotations

CLUSTER_DOMAIN = "svc.cluster.local"


def fqdn(host: str, namespace: str) -> str:
    """Istio's rule: a name without a dot is a Kubernetes service in the object's namespace."""
    if "." in host or host.startswith("*"):
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def matches(pattern: str, host: str) -> bool:
    """Whether ``pattern`` (``*``, ``*.example.com`` or exact) covers ``host``."""
    if pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*") and host.endswith(pattern[1:])
