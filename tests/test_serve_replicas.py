"""Replicas of `galleon serve --leader-elect`: real daemon processes electing a leader through a
coordination.k8s.io/v1 Lease. The Kubernetes API is tests/kube/standin.py, a stand-in for
kube-apiserver (which cannot be installed on these machines) that enforces resourceVersion."""
from __future__ import annotations

import grpc

from reconciler.api import reconciler_pb2 as pb
from reconciler.api import reconciler_pb2_grpc as pb_grpc
from tests.conftest import SAMPLE_REPO
from tests.e2e.daemon import Galleon
from tests.e2e.envoy import wait_for
from tests.kube.standin import KubeStandIn


def leader(daemon: Galleon) -> bool:
    with grpc.insecure_channel(daemon.ads) as channel:
        return pb_grpc.ReconcilerStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10).leader


def test_one_replica_leads_and_hands_over_when_it_stops(tmp_path):
    with KubeStandIn() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        replica = ["--leader-elect", "--kubeconfig", str(kubeconfig), "--lease-namespace", "istio-system"]
        with Galleon(SAMPLE_REPO, "cluster-a", *replica, "--lease-identity", "one") as one:
            wait_for(lambda: leader(one), 10, lambda: one.log())
            assert "galleon_leader 1.0" in one.get("/metrics")[1]
            with Galleon(SAMPLE_REPO, "cluster-a", *replica, "--lease-identity", "two") as two:
                assert two.get("/readyz")[0] == 200  # every replica serves ADS
                assert not leader(two) and "galleon_leader 0.0" in two.get("/metrics")[1]
                assert kube.get("leases", "istio-system", "galleon-cluster-a")["spec"]["holderIdentity"] == "one"
                assert one.stop() == 0  # releases the lease on its way out
                wait_for(lambda: leader(two), 10, lambda: two.log())
                assert two.event("became the leader")
                assert kube.get("leases", "istio-system", "galleon-cluster-a")["spec"]["holderIdentity"] == "two"


def test_a_kubeconfig_that_does_not_work_is_one_line_at_start(tmp_path):
    from tests.test_cli import galleon
    result = galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--ads", "127.0.0.1:0", "--http", "127.0.0.1:0",
                     "--leader-elect", "--kubeconfig", tmp_path / "missing")
    assert result.returncode == 2 and "--leader-elect" in result.stderr and "Traceback" not in result.stderr
