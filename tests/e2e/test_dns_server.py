"""Rendered DNS data answers real queries: dnsmasq serves the hosts rendering, Knot DNS the zone file.

Each server runs on a free loopback port; dnspython asks it for every entry, an unknown name (which
must get NXDOMAIN, not a refusal or a forward) and, for Knot, the zone's SOA. A missing server fails
the test and names its Debian package: `make test` installs them (SYSTEM_TOOLS), so a skip would only
hide that the proof did not run.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.zone
import pytest

from reconciler.dns.render import render
from tests.e2e.envoy import free_port, wait_for

pytestmark = pytest.mark.e2e

START_TIMEOUT = 10  # seconds for a server to answer its first query
QUERY_TIMEOUT = 2
UNKNOWN = "nope.default.global"

# ~50 names over a few namespaces, and one IPv6 VIP to prove AAAA answers.
ENTRIES = {f"svc-{i:02d}.ns-{i % 4}.global": f"240.0.{i // 200}.{i % 200 + 1}" for i in range(49)}
ENTRIES["v6.default.global"] = "fd00:240::1"


def binary(name: str, package: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found: install the Debian package {package} (make test installs it)")
    return path


def ask(port: int, name: str, rdtype: str, timeout: float = QUERY_TIMEOUT) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=timeout)


def answer(port: int, name: str) -> tuple[str, set[str]]:
    """The rcode and the addresses the server gives for ``name`` (A, or AAAA for the IPv6 entry)."""
    rdtype = "AAAA" if ":" in ENTRIES.get(name, "") else "A"
    reply = ask(port, name, rdtype)
    return dns.rcode.to_text(reply.rcode()), {rdata.address for rrset in reply.answer for rdata in rrset}


def assert_answers_every_entry(port: int) -> None:
    got = {name: answer(port, name) for name in ENTRIES}
    wrong = {name: found for name, found in got.items() if found != ("NOERROR", {ENTRIES[name]})}
    assert not wrong, f"{len(wrong)} of {len(ENTRIES)} names answered wrong, e.g. {dict(list(wrong.items())[:5])}"


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


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory) -> Iterator[int]:
    """dnsmasq answering from the hosts rendering only; yields its port.

    Every flag is needed: --conf-file=/dev/null, --no-hosts and --no-resolv keep the machine's
    /etc/dnsmasq.conf, /etc/hosts and upstream servers out; --local=/global/ makes unknown names under
    the suffix NXDOMAIN (without it they are REFUSED, having no upstream); --listen-address with
    --bind-interfaces binds loopback only, not every address; --pid-file= writes no /run/dnsmasq.pid
    (as root) that a system dnsmasq may own; --log-facility=- logs to stderr (the log file) instead of
    syslog. --user is the current user because as root dnsmasq drops to `nobody` before it reads
    --addn-hosts, which then cannot read the file in pytest's private temporary directory: it logs
    "Permission denied" and answers NXDOMAIN for every name.
    """
    executable = binary("dnsmasq", "dnsmasq-base")
    base = tmp_path_factory.mktemp("dnsmasq")
    hosts = base / "hosts"
    hosts.write_text(render(ENTRIES, "hosts"))
    port = free_port()
    argv = [executable, "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
            f"--addn-hosts={hosts}", "--local=/global/", "--listen-address=127.0.0.1", "--bind-interfaces",
            f"--port={port}", "--pid-file=", "--log-facility=-", f"--user={pwd.getpwuid(os.geteuid()).pw_name}"]
    # dnsmasq reads its hosts files before it serves, so any reply means the entries are loaded.
    with running(argv, base / "dnsmasq.log", replies(port)):
        yield port


@pytest.fixture(scope="module")
def knot(tmp_path_factory) -> Iterator[tuple[int, str]]:
    """Knot DNS serving the zone rendering as the authoritative server for global.; yields its port
    and the zone file's text. The configuration keeps everything (control socket, timer database) in a
    temporary directory, and turns on Knot's optional semantic checks so a doubtful zone fails to load."""
    executable = binary("knotd", "knot")
    base = tmp_path_factory.mktemp("knot")
    zone = render(ENTRIES, "zone")
    (base / "global.zone").write_text(zone)
    port = free_port()
    (base / "knot.conf").write_text(f"""\
server:
    rundir: "{base}"
    listen: 127.0.0.1@{port}
database:
    storage: "{base}"
log:
  - target: stderr
    any: info
zone:
  - domain: global.
    file: "{base / 'global.zone'}"
    semantic-checks: on
""")
    # knotd (no -d: in the foreground) opens its port before it loads the zone, and refuses queries
    # for it until then: ready is the SOA answered.
    with running([executable, "-c", str(base / "knot.conf")], base / "knotd.log",
                 replies(port, rcode=dns.rcode.NOERROR)):
        yield port, zone


def test_dnsmasq_answers_every_entry_of_the_hosts_rendering(dnsmasq):
    assert_answers_every_entry(dnsmasq)


def test_dnsmasq_answers_nxdomain_for_an_unknown_name(dnsmasq):
    assert answer(dnsmasq, UNKNOWN) == ("NXDOMAIN", set())


def test_knot_answers_every_entry_of_the_zone_with_authority(knot):
    port, _ = knot
    assert_answers_every_entry(port)
    assert ask(port, "svc-00.ns-0.global", "A").flags & dns.flags.AA


def test_knot_answers_nxdomain_cached_no_longer_than_an_answer(knot):
    port, _ = knot
    reply = ask(port, UNKNOWN, "A")
    assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"
    # RFC 2308: resolvers cache the NXDOMAIN for min(SOA TTL, SOA minimum); both are the records' TTL.
    [soa] = reply.authority
    assert soa.ttl == ask(port, "svc-00.ns-0.global", "A").answer[0].ttl


def test_knot_serves_the_rendered_serial(knot):
    port, zone = knot
    rendered = dns.zone.from_text(zone, origin="global.", check_origin=True).find_rdataset("@", "SOA")[0]
    served = ask(port, "global", "SOA").answer[0][0]
    assert served.serial == rendered.serial


def test_kzonecheck_accepts_the_zone_rendering(tmp_path):
    kzonecheck = shutil.which("kzonecheck")
    assert kzonecheck, "kzonecheck is missing: install the Debian package knot-dnssecutils (make system-deps)"
    path = tmp_path / "global.zone"
    path.write_text(render(ENTRIES, "zone"))
    result = subprocess.run([kzonecheck, "--origin", "global.", str(path)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
