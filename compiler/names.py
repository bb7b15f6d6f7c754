"""Envoy resource names, Istio-compatible so `istioctl proxy-config` habits carry over."""
from __future__ import annotations

# What a proxy's listeners bind (with iptables capture), and the prefix of their names (0.0.0.0_PORT).
ANY_ADDRESS = "0.0.0.0"


def cluster_name(port: int, subset: str | None, host: str) -> str:
    return f"outbound|{port}|{subset or ''}|{host}"


def parse_cluster_name(name: str) -> tuple[int, str, str]:
    """``outbound|9080|v1|reviews...`` -> (9080, 'v1', 'reviews...')."""
    _, port, subset, host = name.split("|", 3)
    return int(port), subset, host


def sni(port: int, subset: str | None, host: str) -> str:
    return f"outbound_.{port}_.{subset or ''}_.{host}"


def parse_sni(name: str) -> tuple[int, str, str]:
    """``outbound_.9080_.v1_.reviews...`` -> (9080, 'v1', 'reviews...')."""
    _, port, subset, host = name.split("_.", 3)
    return int(port), subset, host


def parse_eds_name(name: str) -> tuple[int, str, str]:
    """An EDS cluster's name, outbound or SNI-DNAT, as (port, subset, host)."""
    return parse_sni(name) if name.startswith("outbound_.") else parse_cluster_name(name)


def listener_name(port: int) -> str:
    return f"0.0.0.0_{port}"


def sidecar_route_name(port: int) -> str:
    return str(port)


def gateway_route_name(port: int) -> str:
    return f"http.{port}"


def virtual_host_name(host: str, port: int) -> str:
    return f"{host}:{port}"
