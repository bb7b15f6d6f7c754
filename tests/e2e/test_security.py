"""The gRPC port as nobody can abuse it: TLS, proxies authenticated by their mTLS certificate (issued
under the root `galleon ca init-root` makes), each given only its own namespace's view, and the status
API's Sync and Preview for admin identities only. A real Envoy and gRPC's own xDS client connect over
mutual TLS; Python gRPC clients play the proxies that must be refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from compiler.xds_types import CLUSTER, ENDPOINT
from reconciler.api import reconciler_pb2, reconciler_pb2_grpc
from reconciler.bootstrap import BootstrapOptions, XdsTls, bootstrap_yaml, grpc_bootstrap_json
from tests.certs import issue, root_in
from tests.conftest import SAMPLE_REPO
from tests.e2e.daemon import GALLEON, Galleon
from tests.e2e.envoy import Envoy, wait_for

pytestmark = pytest.mark.e2e

TRUST = "spiffe://cluster.local"
BOOKINFO_NODE = "sidecar~10.1.1.9~productpage-v1-x.bookinfo~bookinfo.svc.cluster.local"
DEFAULT_NODE = "sidecar~10.1.1.9~productpage-v1-x.bookinfo~default.svc.cluster.local"
ADMIN = f"{TRUST}/ns/istio-system/sa/galleon-admin"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The mesh's root and what is issued under it, plus a stranger's root."""
    where = tmp_path_factory.mktemp("pki")
    root = root_in(where / "root")
    other = root_in(where / "other")
    made = {"root": where / "root" / "root-cert.pem",
            "server": issue(root, where, "server", dns=("localhost",), ips=("127.0.0.1",)),
            "bookinfo": issue(root, where, "bookinfo", spiffe=f"{TRUST}/ns/bookinfo/sa/bookinfo-productpage"),
            "admin": issue(root, where, "admin", spiffe=ADMIN),
            "expired": issue(root, where, "expired", spiffe=f"{TRUST}/ns/bookinfo/sa/x", expired=True),
            "stranger": issue(other, where, "stranger", spiffe=f"{TRUST}/ns/bookinfo/sa/bookinfo-productpage"),
            "nospiffe": issue(root, where, "nospiffe", dns=("client.example",))}
    return made


@pytest.fixture(scope="module")
def galleon(pki):
    cert, key = pki["server"]
    with Galleon(SAMPLE_REPO, "cluster-a", "--tls-cert", str(cert), "--tls-key", str(key),
                 "--client-ca", str(pki["root"]), "--admin-identity", ADMIN,
                 "--preview-refs", "refs/heads/main") as running:
        yield running


def channel(galleon, pki, who: str | None):
    cert, key = pki[who] if who else (None, None)
    credentials = grpc.ssl_channel_credentials(pki["root"].read_bytes(), key.read_bytes() if key else None,
                                               cert.read_bytes() if cert else None)
    return grpc.secure_channel(galleon.ads, credentials)


def ask_clusters(galleon, pki, who: str | None, node_id: str):
    """One SotW request for every cluster, as a proxy with ``who``'s certificate: the response, or the error."""
    with channel(galleon, pki, who) as ch:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch)
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=base_pb2.Node(id=node_id))
        try:
            return next(iter(stub.StreamAggregatedResources(iter([request]), timeout=10)))
        except grpc.RpcError as exc:
            return exc


def test_a_real_envoy_gets_its_configuration_over_mutual_tls(tmp_path, galleon, pki):
    cert, key = pki["bookinfo"]
    boot = bootstrap_yaml(BootstrapOptions(cluster="cluster-a", node_id=BOOKINFO_NODE, ads=galleon.ads,
                                           admin="127.0.0.1:0", listen_address="127.0.0.1",
                                           xds_tls=XdsTls(str(pki["root"]), str(cert), str(key))))
    with Envoy(boot, tmp_path) as envoy:
        # ACKed, not warmed: the Istio-mTLS clusters then wait for workload certificates from SDS, which
        # this test does not serve (the xDS connection's own certificate is a file).
        def acked():
            (proxy,) = [p for p in json.loads(galleon.get("/debug/syncz")[1]) if p["node"] == BOOKINFO_NODE]
            return all(proxy["types"][t]["acked"] and proxy["types"][t]["acked"] == proxy["types"][t]["sent"]
                       for t in (CLUSTER, ENDPOINT))
        wait_for(acked, 10, lambda: f"Envoy ACKed no configuration over mTLS:\n{envoy.log.read_text()[-3000:]}\n"
                                    f"{galleon.get('/debug/syncz')[1]}\n{galleon.log()}")
        assert envoy.stats().get("cluster_manager.cds.update_success", 0) >= 1
        connected = galleon.event("proxy connected", node=BOOKINFO_NODE)
        assert connected["identity"] == f"{TRUST}/ns/bookinfo/sa/bookinfo-productpage"


def test_grpcs_xds_client_gets_its_configuration_over_mutual_tls(tmp_path, galleon, pki):
    cert, key = pki["bookinfo"]
    boot = grpc_bootstrap_json(BootstrapOptions(cluster="cluster-a", node_id=BOOKINFO_NODE, ads=galleon.ads,
                                                xds_tls=XdsTls(str(pki["root"]), str(cert), str(key))))
    assert json.loads(boot)["xds_servers"][0]["channel_creds"][0]["type"] == "tls"
    # The client resolves the name through Galleon (listener, route, cluster, endpoints); connecting to the
    # sample's 10.x pods cannot succeed here, so it never becomes ready: what is checked is the xDS exchange.
    script = ("import grpc\n"
              "channel = grpc.insecure_channel('xds:///reviews.bookinfo.svc.cluster.local:9080')\n"
              "try:\n    grpc.channel_ready_future(channel).result(timeout=5)\nexcept grpc.FutureTimeoutError:\n"
              "    pass\n")
    subprocess.run([sys.executable, "-c", script], env={"GRPC_XDS_BOOTSTRAP_CONFIG": boot}, timeout=60)
    wait_for(lambda: galleon.event("view compiled", role="grpc", namespace="bookinfo"), 10, galleon.log)
    assert galleon.event("proxy connected", node=BOOKINFO_NODE)["identity"].endswith("/sa/bookinfo-productpage")


def test_a_certificate_of_one_namespace_claiming_another_gets_nothing(galleon, pki):
    answer = ask_clusters(galleon, pki, "bookinfo", DEFAULT_NODE)
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "namespace 'bookinfo' only" in answer.details() and "'default'" in answer.details()
    router = "router~10.1.100.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
    answer = ask_clusters(galleon, pki, "bookinfo", router)
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "galleon_denied_total{reason=\"namespace\"} 2.0" in galleon.get("/metrics")[1]
    assert ask_clusters(galleon, pki, "bookinfo", BOOKINFO_NODE).resources  # its own: served


@pytest.mark.parametrize("who", [None, "stranger", "expired"])
def test_no_certificate_another_roots_or_an_expired_one_is_refused_at_the_handshake(galleon, pki, who):
    answer = ask_clusters(galleon, pki, who, BOOKINFO_NODE)
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.UNAVAILABLE, answer


def test_a_certificate_without_a_spiffe_id_is_unauthenticated(galleon, pki):
    answer = ask_clusters(galleon, pki, "nospiffe", BOOKINFO_NODE)
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "SPIFFE" in answer.details()


def test_status_is_for_authenticated_peers_sync_and_preview_for_admins_of_allowed_refs(galleon, pki):
    with channel(galleon, pki, "bookinfo") as ch:
        stub = reconciler_pb2_grpc.ReconcilerStub(ch)
        assert stub.GetStatus(reconciler_pb2.GetStatusRequest(), timeout=10).cluster == "cluster-a"
        with pytest.raises(grpc.RpcError) as refused:
            stub.Sync(reconciler_pb2.SyncRequest(wait=True), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not an --admin-identity" in refused.value.details()
    with channel(galleon, pki, "admin") as ch:
        stub = reconciler_pb2_grpc.ReconcilerStub(ch)
        assert stub.Sync(reconciler_pb2.SyncRequest(wait=True), timeout=30).status.served_revision
        with pytest.raises(grpc.RpcError) as refused:
            stub.Preview(reconciler_pb2.PreviewRequest(rev="private-wip"), timeout=30)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not allowed here" in refused.value.details() and "--preview-refs" in refused.value.details()


def test_plaintext_off_loopback_is_refused_at_start(tmp_path):
    done = subprocess.run([*GALLEON, "serve", str(SAMPLE_REPO), "--cluster", "cluster-a", "--ads", "0.0.0.0:0",
                           "--http", "127.0.0.1:0", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tls-cert/--tls-key and --client-ca or --token-review" in lines[0], done.stderr


def test_galleon_status_over_tls_with_the_servers_ca_and_a_hint_without(galleon, pki):
    """`galleon status` reads a daemon serving TLS with --server-ca (and, the status API needing an
    authenticated peer, a client certificate); without --server-ca it says to give one, not that no
    daemon runs."""
    cert, key = pki["admin"]
    run = [*GALLEON, "status", "--server", galleon.ads, "--timeout", "5"]
    shown = subprocess.run([*run, "--server-ca", str(pki["root"]), "--server-cert", str(cert), "--server-key", str(key)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "cluster cluster-a" in shown.stdout, shown.stdout + shown.stderr
    plain = subprocess.run(run, capture_output=True, text=True, timeout=60)
    last = plain.stderr.strip().splitlines()[-1]
    assert plain.returncode == 2 and last.startswith(f"galleon: error: cannot reach galleon serve at {galleon.ads} "
                                                     "(if it serves TLS, give --server-ca)"), plain.stderr
