"""Ports for the servers the tests start.

A port the kernel picks with ``bind(0)`` comes from the ephemeral range, the range every outgoing
connection also takes its local port from. Between the test closing its probe socket and Envoy
(or sshd, or a DNS server) binding the port, any connection on the machine may take it. Ports
below that range are never handed out to connections, so a port found free there stays free
until something binds it on purpose.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_LOWEST = 10000
_given: set[int] = set()


def _ephemeral_start() -> int:
    try:
        low, _high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low)
    except (OSError, ValueError):
        return 32768  # Linux's default


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):  # DNS servers take both
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A loopback port, TCP and UDP, free now, outside the ephemeral range and not given before in
    this process. Test processes running side by side start at different places in the range."""
    top = _ephemeral_start()
    span = range(_LOWEST, top)
    start = random.Random(os.getpid()).randrange(len(span))
    for step in range(len(span)):
        port = span[(start + step) % len(span)]
        if port not in _given and _free(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free loopback port between {_LOWEST} and {top}")
