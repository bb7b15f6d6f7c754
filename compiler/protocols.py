"""Istio's port protocols: their names, the families listeners and clusters treat alike, and how a
Kubernetes Service port's protocol is chosen (Istio's protocol selection)."""
from __future__ import annotations

HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC_WEB = "HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"
HTTPS, TLS, TCP, UDP = "HTTPS", "TLS", "TCP", "UDP"
MONGO, REDIS, MYSQL = "MONGO", "REDIS", "MYSQL"
# No protocol Istio knows was declared: the proxy detects HTTP on the connection (protocol sniffing).
AUTO = "AUTO"

KNOWN = (TCP, UDP, GRPC, GRPC_WEB, HTTP, HTTP_PROXY, HTTP2, HTTPS, TLS, MONGO, REDIS, MYSQL)
HTTP_FAMILY = frozenset({HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC_WEB})
HTTP2_FAMILY = frozenset({HTTP2, GRPC, GRPC_WEB})
TCP_FAMILY = frozenset({TCP, HTTPS, TLS, MONGO, REDIS, MYSQL})
TLS_FAMILY = frozenset({HTTPS, TLS})

# Server-first protocols on their well-known ports are never sniffed: a client waits for the server.
SERVER_FIRST_PORTS = frozenset({25, 53, 3306, 27017})
# appProtocol values Kubernetes defines, as Istio reads them.
KUBERNETES_APP_PROTOCOLS = {"kubernetes.io/h2c": HTTP2, "kubernetes.io/ws": HTTP, "kubernetes.io/wss": HTTPS}


def parse(name: str) -> str:
    """Istio's name of a protocol, case-insensitive (``grpc`` -> GRPC); AUTO for any other name."""
    upper = name.upper()
    return upper if upper in KNOWN else AUTO


def of_service_entry_port(protocol: str | None) -> str:
    """A ServiceEntry port's protocol: as written, else detected (Istio sniffs an undeclared one)."""
    return parse(protocol or "")


def of_kubernetes_port(number: int, name: str, protocol: str | None = None, app_protocol: str | None = None) -> str:
    """Istio's protocol selection for a Kubernetes Service port: UDP as Kubernetes says; else the
    ``appProtocol`` when given (the name is not read then); else the port name's prefix before its
    first dash (``http-web``, ``grpc-web`` whole); else AUTO, but for server-first well-known ports."""
    if protocol == "UDP":
        return UDP
    text = name
    if app_protocol is not None:
        if app_protocol in KUBERNETES_APP_PROTOCOLS:
            return KUBERNETES_APP_PROTOCOLS[app_protocol]
        text = app_protocol
    if text[:8].lower() == "grpc-web":
        return GRPC_WEB
    found = parse(text.partition("-")[0])
    if found == AUTO and number in SERVER_FIRST_PORTS:
        return TCP
    return found


def is_http(protocol: str) -> bool:
    return protocol in HTTP_FAMILY


def routes_http(protocol: str) -> bool:
    """Whether requests on the port are routed as HTTP: an HTTP protocol, or one detected on the
    connection (HTTP when the proxy finds it, TCP otherwise)."""
    return protocol in HTTP_FAMILY or protocol == AUTO
