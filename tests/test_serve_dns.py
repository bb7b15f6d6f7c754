"""`galleon serve --dns-target dir:PATH`: the daemon keeps its own cluster's CoreDNS block answering
the VIPs it serves, and a restart gives no name another address."""
from __future__ import annotations

import json
import shutil

import yaml

from compiler.vips import Pool
from reconciler.dns.corefile import apply_block, hosts_entries
from reconciler.dns.render import render
from tests.conftest import SAMPLE_REPO
from tests.e2e.daemon import Galleon
from tests.e2e.envoy import wait_for
from tests.test_cli import galleon

RATINGS = "ratings.bookinfo.global"


def corefile(out, cluster="cluster-a") -> str:
    manifest = out / cluster / "kube-system" / "ConfigMap" / "coredns.yaml"
    return yaml.safe_load(manifest.read_text())["data"]["Corefile"]


def set_entries(out, entries: dict[str, str], cluster="cluster-a") -> None:
    """Edit the managed block by hand, as another Galleon (or a person) might have left it."""
    manifest = out / cluster / "kube-system" / "ConfigMap" / "coredns.yaml"
    document = yaml.safe_load(manifest.read_text())
    document["data"]["Corefile"] = apply_block(document["data"]["Corefile"], render(entries, "corefile-block"))
    manifest.write_text(yaml.safe_dump(document))


def test_the_daemon_writes_its_block_follows_new_names_and_keeps_vips_across_restarts(tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    shutil.copytree(SAMPLE_REPO, repo)
    options = ("--dns-target", f"dir:{out}", "--dns-create")
    with Galleon(repo, "cluster-a", *options) as daemon:
        created = wait_for(lambda: daemon.event("DNS reconciled"), 10, lambda: daemon.log())
        served = daemon.json("/debug/configz")["vips"]
        assert created["action"] == "create" and created["added"] == 1
        assert hosts_entries(corefile(out)) == served and served[RATINGS].startswith("240.0.")
        assert 'galleon_dns_reconciles_total{outcome="create"} 1.0' in daemon.get("/metrics")[1]
        assert not (out / "cluster-b").exists()  # only its own cluster

        details = (repo / "global" / "ratings-global.yaml").read_text().replace("ratings", "details")
        (repo / "global" / "details-global.yaml").write_text(details)
        wait_for(lambda: daemon.event("DNS reconciled", action="update"), 10, lambda: daemon.log())
        entries = hosts_entries(corefile(out))
        assert sorted(entries) == ["details.bookinfo.global", RATINGS]
        assert entries[RATINGS] == served[RATINGS]  # the old name kept its address
        assert daemon.json("/debug/configz")["vips"] == entries

    # Another writer left ratings at another address: a restarted daemon (new state directory) serves
    # that one rather than move the name, and has nothing to write.
    set_entries(out, {**entries, RATINGS: "240.0.1.2"})
    with Galleon(repo, "cluster-a", *options) as daemon:
        unchanged = wait_for(lambda: daemon.event("DNS reconciled"), 10, lambda: daemon.log())
        assert unchanged["action"] == "none", daemon.log()
        assert daemon.json("/debug/configz")["vips"][RATINGS] == "240.0.1.2"


def test_without_dns_the_state_directory_keeps_the_vips(tmp_path):
    state = tmp_path / "state"
    with Galleon(SAMPLE_REPO, "cluster-a", state_dir=state) as daemon:
        first = daemon.json("/debug/configz")["vips"]
    stored = state / "last-good" / "cluster-a.vips.json"
    assert json.loads(stored.read_text())["vips"] == first
    stored.write_text(json.dumps({"format": 1, "vips": {RATINGS: "240.0.3.4"}}))
    with Galleon(SAMPLE_REPO, "cluster-a", state_dir=state) as daemon:
        assert daemon.json("/debug/configz")["vips"] == {RATINGS: "240.0.3.4"}
        config = daemon.json("/debug/configz")
        assert config["dns"] is None  # no --dns-target: nothing reconciled


def test_the_dns_options_are_checked_at_start(tmp_path):
    for args, words in ((("--dns-target", "nowhere"), "use dir:PATH or kube"),
                        (("--dns-target", "dir:x", "--dns-ttl", "0"), "--dns-ttl"),
                        (("--dns-target", "dir:x", "--dns-interval", "0"), "--dns-interval")):
        result = galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--ads", "127.0.0.1:0", "--http",
                         "127.0.0.1:0", *args)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr


def test_a_released_vip_is_not_given_to_the_next_new_name(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, repo)
    meshconfig = repo / "mesh" / "meshconfig.yaml"
    meshconfig.write_text(meshconfig.read_text().replace("vipCidr: 240.0.0.0/16", "vipCidr: 240.0.0.0/29"))
    pool = Pool("240.0.0.0/29")
    with Galleon(repo, "cluster-a") as daemon:
        released = daemon.json("/debug/configz")["vips"][RATINGS]
        # A name whose hash starts at the address ratings gives up: without the quarantine it would take it.
        name = next(f"svc{i}.bookinfo.global" for i in range(1000)
                    if pool.at(pool.start(f"svc{i}.bookinfo.global")) == released)
        entry = repo / "global" / "ratings-global.yaml"
        text = entry.read_text()
        entry.unlink()  # one revision without the name, then one with another name
        wait_for(lambda: daemon.json("/debug/configz")["vips"] == {}, 10, lambda: daemon.log())
        entry.write_text(text.replace(f"- {RATINGS}", f"- {name}"))
        vips = wait_for(lambda: v if name in (v := daemon.json("/debug/configz")["vips"]) else None, 10,
                        lambda: daemon.log())
        assert RATINGS not in vips and vips[name] != released


def test_through_the_kube_target_the_daemon_serves_while_the_api_fails_then_writes(tmp_path, standin):
    """The Kubernetes API is tests/kube/standin.py, a stand-in that enforces the API's rules (no API
    server can be installed here). It fails every request at first: the daemon still serves at once,
    and writes the ConfigMap (with the read resourceVersion) once the API answers."""
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, repo)
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
    standin.put({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "coredns", "namespace": "kube-system"},
                 "data": {"Corefile": ".:53 {\n    forward . /etc/resolv.conf\n    reload\n}\n"}})
    standin.fail(status=503, times=None)
    with Galleon(repo, "cluster-a", "--dns-target", "kube", "--kubeconfig", str(kubeconfig),
                 "--dns-interval", "1") as daemon:
        assert daemon.get("/readyz")[0] == 200
        failed = wait_for(lambda: daemon.event("DNS reconcile failed"), 30, lambda: daemon.log())
        assert "HTTP 503" in failed["error"] and "cluster-a" in failed["error"]
        standin.clear_faults()
        done = wait_for(lambda: daemon.event("DNS reconciled"), 15, lambda: daemon.log())
        assert done["action"] == "update" and done["added"] == 1
    corefile = standin.get("configmaps", "kube-system", "coredns")["data"]["Corefile"]
    assert corefile.startswith(".:53 {\n    forward . /etc/resolv.conf\n    reload\n}\n")
    (name, address), = hosts_entries(corefile).items()
    assert name == RATINGS and address.startswith("240.0.")
    assert any(r.method == "PUT" and r.status == 200 for r in standin.requests)
