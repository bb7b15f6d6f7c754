"""`galleon serve --root-ca DIR --ca-target dir:PATH`: the daemon keeps its own cluster's cacerts right."""
from __future__ import annotations

import shutil

from tests.conftest import SAMPLE_REPO
from tests.e2e.daemon import Galleon
from tests.e2e.envoy import wait_for
from tests.test_cli import galleon


def test_the_daemon_issues_then_reissues_when_the_policy_changes(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, repo)
    assert galleon("ca", "init-root", tmp_path / "root").returncode == 0
    secret = tmp_path / "out" / "cluster-a" / "istio-system" / "Secret" / "cacerts.yaml"
    with Galleon(repo, "cluster-a", "--root-ca", str(tmp_path / "root"), "--ca-target",
                 f"dir:{tmp_path / 'out'}") as daemon:
        created = wait_for(lambda: daemon.event("CA reconciled"), 10, lambda: daemon.log())
        assert created["action"] == "create" and secret.exists()
        assert "cluster-a istio-system/cacerts: create" in daemon.json("/debug/configz")["ca_plan"]
        assert 'galleon_ca_reconciles_total{outcome="create"} 1.0' in daemon.get("/metrics")[1]
        first = secret.read_bytes()
        policy = repo / "mesh" / "ca.yaml"
        policy.write_text(policy.read_text().replace("lifetime: 8760h", "lifetime: 17520h"))
        reissued = wait_for(lambda: daemon.event("CA reconciled", action="reissue"), 10, lambda: daemon.log())
        assert any("policy changed" in reason for reason in reissued["reasons"])
        assert secret.read_bytes() != first
        assert not list((tmp_path / "out").glob("cluster-b/**/*.yaml"))  # only its own cluster


def test_the_ca_options_are_checked_at_start(tmp_path):
    for args, words in ((("--root-ca", str(tmp_path)), "go together"),
                        (("--root-ca", str(tmp_path / "none"), "--ca-target", "dir:x"), "galleon ca init-root")):
        result = galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--ads", "127.0.0.1:0", "--http",
                         "127.0.0.1:0", *args)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
