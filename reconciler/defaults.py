"""Defaults the command line shows in its --help, apart from the modules that use them, so that
`galleon` starts without importing the compiler, the Kubernetes client or jinja2 (a command
imports what it runs: `galleon status` or `galleon diff --server` start in a fifth of a second)."""
from __future__ import annotations

PREVIEW_MAX_BYTES = 60_000  # GitHub refuses comments over 65,535 characters
PREVIEW_MIN_MAX_BYTES = 4_000
DNS_FORMATS = ("hosts", "zone", "corefile-block")
DNS_TTL = 30
# The zone file's name server; see reconciler/dns/render.py.
DNS_NS_ADDRESS = "127.0.0.1"
LOG_LEVELS = ("debug", "info", "warning", "error")
# galleon serve: a change is acted on once quiet this long, or at most this long after it came (seconds)
DEBOUNCE, DEBOUNCE_MAX = 0.1, 10.0  # a source's
REGISTRY_QUIET, REGISTRY_MAX_WAIT = 0.1, 1.0  # a registry object's
SDS_SOCKET = "./var/run/secrets/workload-spiffe-uds/socket"
GRPC_CERTIFICATE_DIR = "/var/lib/istio/data"


def split_address(text: str, what: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT -> (host, port); ValueError with a message a person can act on."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{what} {text!r} is not HOST:PORT")
    if int(port) > 65535:
        raise ValueError(f"{what} {text!r}: port {port} is out of range (1-65535, or 0 for any free port)")
    return host.strip("[]"), int(port)
