"""Real DNS servers for the end-to-end tests: start one on a free loopback port, ask it with dnspython."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from tests.e2e.envoy import wait_for
from tests.ports import free_port

START_TIMEOUT = 10  # seconds for a server to answer its first query
QUERY_TIMEOUT = 2


def binary(name: str, package: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found: install the Debian package {package} (make test installs it)")
    return path


def ask(port: int, name: str, rdtype: str, timeout: float = QUERY_TIMEOUT) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=timeout)


@contextmanager
def running(argv: list[str], log: Path, ready: Callable[[], bool]) -> Iterator[subprocess.Popen]:
    """``argv`` as a process writing to ``log``, once ``ready()``; stopped whatever happens, so a
    failed start or test leaves no server behind."""
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: process.poll() is not None or ready(), START_TIMEOUT,
                 lambda: f"{argv[0]} did not answer within {START_TIMEOUT} s; its log:\n{log.read_text()[-3000:]}")
        if process.poll() is not None:
            raise AssertionError(f"{argv[0]} exited with {process.returncode}; its log:\n{log.read_text()[-3000:]}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def replies(port: int, rdtype: str = "SOA", rcode: int | None = None) -> Callable[[], bool]:
    """A readiness check: the server answers a query for the zone apex (with ``rcode`` if given)."""
    def check() -> bool:
        try:
            reply = ask(port, "global", rdtype, timeout=0.2)
        except dns.exception.Timeout:
            return False
        return rcode is None or reply.rcode() == rcode
    return check


@contextmanager
def serving_hosts(hosts: Path, log: Path) -> Iterator[int]:
    """dnsmasq answering names under ``global`` from the hosts file ``hosts`` only; yields its port.


    Every flag is needed: --conf-file=/dev/null, --no-hosts and --no-resolv keep the machine's
    /etc/dnsmasq.conf, /etc/hosts and upstream servers out; --local=/global/ makes unknown names under
    the suffix NXDOMAIN (without it they are REFUSED, having no upstream); --listen-address with
    --bind-interfaces binds loopback only, not every address; --pid-file= writes no /run/dnsmasq.pid
    (as root) that a system dnsmasq may own; --log-facility=- logs to stderr (the log file) instead of
    syslog. --user is the current user because as root dnsmasq drops to `nobody` before it reads
    --addn-hosts, which then cannot read the file in pytest's private temporary directory: it logs
    "Permission denied" and answers NXDOMAIN for every name.
    """
    port = free_port()
    argv = [binary("dnsmasq", "dnsmasq-base"), "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts",
            "--no-resolv", f"--addn-hosts={hosts}", "--local=/global/", "--listen-address=127.0.0.1",
            "--bind-interfaces", f"--port={port}", "--pid-file=", "--log-facility=-",
            f"--user={pwd.getpwuid(os.geteuid()).pw_name}"]
    # dnsmasq reads its hosts files before it serves, so any reply means the entries are loaded.
    with running(argv, log, replies(port)):
        yield port
