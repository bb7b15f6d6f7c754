"""A cross-cluster name, end to end: the name resolves through a real DNS server to the VIP the
daemon allocated, and a real Envoy sidecar routes requests for that VIP to the service.

`galleon serve --dns-target dir:PATH` writes its cluster's CoreDNS block; CoreDNS itself is not in
Debian, so dnsmasq answers from `galleon dns render --target dir:PATH --cluster ...` (the same
entries, as a hosts file). Envoy binds loopback, so the request carries the VIP as its Host, as a
client that resolved the name sends it.
"""
from __future__ import annotations

import subprocess

import dns.rcode
import pytest
import yaml

from reconciler.dns.corefile import hosts_entries
from tests.e2e.daemon import GALLEON, Galleon
from tests.e2e.dnsservers import ask, serving_hosts
from tests.e2e.envoy import Envoy, answers, wait_for
from tests.e2e.test_ads_envoy import SIDECAR, bootstrap, write_dir

pytestmark = pytest.mark.e2e

NAME = "web.default.global"


def global_service(port: int, backends: dict[str, int]) -> str:
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "web-global", "namespace": "default"},
        "spec": {"hosts": [NAME], "location": "MESH_INTERNAL", "resolution": "STATIC",
                 "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
                 "endpoints": [{"address": "127.0.0.1", "ports": {"http": backend}, "labels": {"version": v},
                                "network": "network-1"} for v, backend in sorted(backends.items())]}})


def test_a_global_name_resolves_to_its_vip_and_envoy_routes_the_vip(tmp_path, sds, mesh):
    repo, out = tmp_path / "repo", tmp_path / "out"
    repo.mkdir()
    files = mesh.files()
    files["global.yaml"] = global_service(mesh.port, {v: b.port for v, b in mesh.backends.items()})
    write_dir(repo, files)
    with Galleon(repo, "cluster-a", "--dns-target", f"dir:{out}", "--dns-create") as galleon, \
            Envoy(bootstrap(galleon, sds, "cluster-a", SIDECAR), tmp_path) as envoy:
        envoy.wait_live()
        wait_for(lambda: galleon.event("DNS reconciled"), 10, lambda: galleon.log())
        manifest = yaml.safe_load((out / "cluster-a/kube-system/ConfigMap/coredns.yaml").read_text())
        vip = hosts_entries(manifest["data"]["Corefile"])[NAME]
        assert vip.startswith("240.0.") and galleon.json("/debug/configz")["vips"] == {NAME: vip}

        hosts = tmp_path / "hosts"
        hosts.write_text(subprocess.run([*GALLEON, "dns", "render", str(repo), "--target", f"dir:{out}",
                                         "--cluster", "cluster-a"], check=True, capture_output=True,
                                        text=True).stdout)
        with serving_hosts(hosts, tmp_path / "dnsmasq.log") as port:
            reply = ask(port, NAME, "A")
            assert [rdata.address for rrset in reply.answer for rdata in rrset] == [vip]
            assert ask(port, "nope.default.global", "A").rcode() == dns.rcode.NXDOMAIN

        # The sidecar's route for the name also answers its VIP, with and without the port.
        for host in (f"{vip}:{mesh.port}", vip):
            wait_for(lambda: "HTTP 404" not in answers(mesh.port, host, 1), 5,
                     lambda: f"no route for {host}: {answers(mesh.port, host, 1)}")
            seen = answers(mesh.port, host, 20)
            assert sum(seen.values()) == 20 and set(seen) <= set(mesh.backends), seen
        assert answers(mesh.port, "240.0.0.1", 1) == {"HTTP 404": 1}  # a VIP nobody has
