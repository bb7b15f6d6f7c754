"""Rendered DNS data answers real queries: dnsmasq serves the hosts rendering, Knot DNS the zone file.

Each server runs on a free loopback port; dnspython asks it for every entry, an unknown name (which
must get NXDOMAIN, not a refusal or a forward) and, for Knot, the zone's SOA. A missing server fails
the test and names its Debian package: `make test` installs them (SYSTEM_TOOLS), so a skip would only
hide that the proof did not run.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.zone
import pytest

from reconciler.dns.render import render
from tests.e2e.dnsservers import ask, binary, replies, running, serving_hosts
from tests.ports import free_port

pytestmark = pytest.mark.e2e

UNKNOWN = "nope.default.global"

# ~50 names over a few namespaces, and one IPv6 VIP to prove AAAA answers.
ENTRIES = {f"svc-{i:02d}.ns-{i % 4}.global": f"240.0.{i // 200}.{i % 200 + 1}" for i in range(49)}
ENTRIES["v6.default.global"] = "fd00:240::1"


def answer(port: int, name: str) -> tuple[str, set[str]]:
    """The rcode and the addresses the server gives for ``name`` (A, or AAAA for the IPv6 entry)."""
    rdtype = "AAAA" if ":" in ENTRIES.get(name, "") else "A"
    reply = ask(port, name, rdtype)
    return dns.rcode.to_text(reply.rcode()), {rdata.address for rrset in reply.answer for rdata in rrset}


def assert_answers_every_entry(port: int) -> None:
    got = {name: answer(port, name) for name in ENTRIES}
    wrong = {name: found for name, found in got.items() if found != ("NOERROR", {ENTRIES[name]})}
    assert not wrong, f"{len(wrong)} of {len(ENTRIES)} names answered wrong, e.g. {dict(list(wrong.items())[:5])}"


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory) -> Iterator[int]:
    """dnsmasq answering from the hosts rendering only; yields its port."""
    base = tmp_path_factory.mktemp("dnsmasq")
    hosts = base / "hosts"
    hosts.write_text(render(ENTRIES, "hosts"))
    with serving_hosts(hosts, base / "dnsmasq.log") as port:
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
