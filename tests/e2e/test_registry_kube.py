"""`galleon serve --registry kube` against the Kubernetes API stand-in (tests/kube/standin.py: no
kube-apiserver can be installed here; the stand-in serves list, watch, bookmarks, 410 and TokenReview
as the API documents them, over real HTTP, to the official client): a cluster's pods reach the proxies
once it is listed, follow its watch, stay (marked stale) when its API server goes away, and proxies
authenticated by service-account tokens get only their namespace's view."""
from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from compiler.xds_types import ENDPOINT
from envoy.config.endpoint.v3 import endpoint_pb2
from tests.e2e.daemon import Galleon
from tests.e2e.envoy import wait_for
from tests.test_live import endpoint_slice, node, pod

pytestmark = pytest.mark.e2e

REPO = """\
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: east, namespace: istio-system}
spec: {network: net-1, locality: us-east/us-east-1a, kubeContext: east}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""
NODE = "sidecar~10.0.0.50~client.shop~shop.svc.cluster.local"
WEB = "outbound|80||web.shop.svc.cluster.local"


@pytest.fixture
def setup(tmp_path, standin):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "mesh.yaml").write_text(REPO)
    for body in (pod("web-1", "10.0.0.1"), endpoint_slice("web-abc", [("web-1", "10.0.0.1", True)]),
                 node("node-1", "us-east", "us-east-1c")):
        standin.put(json.loads(json.dumps(body)))
    return tmp_path / "repo", standin.write_kubeconfig(tmp_path / "kubeconfig", contexts=("east",))


def endpoints(galleon, token: str | None = None, node_id: str = NODE):
    """The addresses of web's assignment, as a proxy of shop asking for it gets them (or the error)."""
    with grpc.insecure_channel(galleon.ads) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        node = base_pb2.Node(id=node_id)
        node.metadata.fields["CLUSTER_ID"].CopyFrom(struct_pb2.Value(string_value="east"))
        request = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=[WEB], node=node)
        metadata = [("authorization", f"Bearer {token}")] if token else None
        try:
            response = next(iter(stub.StreamAggregatedResources(iter([request]), timeout=10, metadata=metadata)))
        except grpc.RpcError as exc:
            return exc
    found = set()
    for resource in response.resources:
        cla = endpoint_pb2.ClusterLoadAssignment.FromString(resource.value)
        found |= {lb.endpoint.address.socket_address.address for group in cla.endpoints for lb in group.lb_endpoints}
    return found


def registry(galleon) -> dict:
    return json.loads(galleon.get("/debug/registryz")[1])["clusters"][0]


def test_a_clusters_pods_follow_its_api_server_and_stay_when_it_goes_away(setup, standin):
    repo, kubeconfig = setup
    with Galleon(repo, "east", "--registry", "kube", "--kubeconfig", str(kubeconfig), "--kube-context", "east") as g:
        wait_for(lambda: registry(g)["synced"], 10, g.log)
        assert wait_for(lambda: endpoints(g) == {"10.0.0.1"}, 10, g.log)
        standin.put(json.loads(json.dumps(pod("web-2", "10.0.0.2"))))
        standin.put(json.loads(json.dumps(endpoint_slice("web-abc", [("web-1", "10.0.0.1", True),
                                                                    ("web-2", "10.0.0.2", True)], rv="2"))))
        wait_for(lambda: endpoints(g) == {"10.0.0.1", "10.0.0.2"}, 5, g.log)

        standin.stop_serving()
        wait_for(lambda: registry(g)["stale"], 10, g.log)
        assert "unreachable" in registry(g)["last_error"]
        assert endpoints(g) == {"10.0.0.1", "10.0.0.2"}  # kept while the API server is away
        assert "stale" in g.get("/readyz")[1]
        standin.resume()
        wait_for(lambda: not registry(g)["stale"], 40, g.log)
        assert 'galleon_registry_synced{cluster="east"} 1.0' in g.get("/metrics")[1]


def test_service_account_tokens_are_checked_with_tokenreview(setup, standin):
    repo, kubeconfig = setup
    standin.add_service_account_token("shop-token", "shop", "client")
    standin.add_service_account_token("other-audience", "shop", "client", audiences=("vault",))
    standin.add_service_account_token("default-token", "default", "client")
    with Galleon(repo, "east", "--registry", "kube", "--kubeconfig", str(kubeconfig), "--kube-context", "east",
                 "--token-review") as g:
        wait_for(lambda: registry(g)["synced"], 10, g.log)
        assert wait_for(lambda: endpoints(g, "shop-token") == {"10.0.0.1"}, 10, g.log)
        for token, code in (("other-audience", grpc.StatusCode.UNAUTHENTICATED),
                            ("nobody", grpc.StatusCode.UNAUTHENTICATED),
                            (None, grpc.StatusCode.UNAUTHENTICATED),
                            ("default-token", grpc.StatusCode.PERMISSION_DENIED)):
            refused = endpoints(g, token)
            assert isinstance(refused, grpc.RpcError) and refused.code() == code, (token, refused)
        assert "namespace 'default' only" in endpoints(g, "default-token").details()


def first_answer_once_back(galleon, api_server):
    """A proxy asks while ``api_server`` is away: it is not answered; once the API server is back, the
    addresses of web's assignment in the first answer it gets."""
    import threading
    answers: list = []
    asking = threading.Thread(target=lambda: answers.append(endpoints(galleon)))
    asking.start()
    asking.join(1.5)
    assert asking.is_alive(), f"a proxy was answered before the cluster was listed: {answers}"
    api_server.resume()
    asking.join(20)
    assert len(answers) == 1, galleon.log()
    return answers[0]


def test_no_proxy_is_served_before_the_cluster_is_listed(setup, standin):
    """As Istio's istiod serves no proxy before its caches have synced: a proxy that connects while this
    cluster's API server is away at start waits, and its first answer holds the cluster's pods, not
    an empty assignment (what a proxy reconnecting after a restart would otherwise be sent, and drop
    its endpoints for). /readyz says what the daemon waits for."""
    repo, kubeconfig = setup
    standin.stop_serving()
    g = Galleon(repo, "east", "--registry", "kube", "--kubeconfig", str(kubeconfig), "--kube-context", "east",
                "--registry-sync-timeout", "60").start(wait_ready=False)
    try:
        assert wait_for(lambda: "waiting for the registry's first complete list of east" in g.get("/readyz")[1],
                        10, g.log)
        code, body = g.get("/readyz")
        assert code == 503 and "registry east: not synced yet (" in body, body  # (and why: its last error)
        assert first_answer_once_back(g, standin) == {"10.0.0.1"}
        assert g.get("/readyz")[0] == 200
        assert g.event("registry listed; serving") is not None
    finally:
        g.stop()


def test_a_cluster_not_listed_in_time_is_served_without_until_it_is(setup, standin):
    repo, kubeconfig = setup
    standin.stop_serving()
    with Galleon(repo, "east", "--registry", "kube", "--kubeconfig", str(kubeconfig), "--kube-context", "east",
                 "--registry-sync-timeout", "1") as g:  # (ready once the second has passed)
        assert g.event("registry clusters not listed in time; serving without their endpoints until they are",
                       clusters=["east"]) is not None
        assert endpoints(g) == set()
        standin.resume()
        assert wait_for(lambda: endpoints(g) == {"10.0.0.1"}, 20, g.log)


def test_a_daemon_waiting_for_the_registry_stops_when_asked(setup, standin):
    """SIGTERM while the first publish waits for a cluster's first list: the daemon stops at once, as
    Kubernetes expects of a pod within its grace period, rather than at the end of the wait."""
    import signal
    import time
    repo, kubeconfig = setup
    standin.stop_serving()
    g = Galleon(repo, "east", "--registry", "kube", "--kubeconfig", str(kubeconfig), "--kube-context", "east",
                "--registry-sync-timeout", "60").start(wait_ready=False)
    try:
        assert wait_for(lambda: g.event("waiting for the registry's first list before serving"), 10, g.log)
        asked = time.monotonic()
        g.signal(signal.SIGTERM)
        assert g.process.wait(15) == 0
        assert time.monotonic() - asked < 10
        assert g.event("configuration published") is None, "nothing was published"
    finally:
        g.stop()


def started_waiting(repo: Path, kubeconfig: Path) -> Galleon:
    """``galleon serve`` of ``repo`` in east, started but not waited for: its first publish waits up to
    60 s for the registry."""
    return Galleon(repo, "east", "--registry", "kube", "--kubeconfig", str(kubeconfig), "--kube-context", "east",
                   "--registry-sync-timeout", "60").start(wait_ready=False)


def east_and_west(tmp_path: Path, east, west, west_spec: str = "") -> Path:
    """The source (its folder) of REPO's east and a Cluster west (``west_spec`` added to its spec), and
    the API servers of both running a pod of web: east 10.0.0.1, west 10.1.0.1."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "mesh.yaml").write_text(REPO + f"""\
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {{name: west, namespace: istio-system}}
spec: {{network: net-1, locality: us-west/us-west-1a{", " + west_spec if west_spec else ""}}}
""")
    for api_server, name, ip, slice_name, region in ((east, "web-1", "10.0.0.1", "web-abc", "us-east"),
                                                     (west, "web-2", "10.1.0.1", "web-xyz", "us-west")):
        for body in (pod(name, ip), endpoint_slice(slice_name, [(name, ip, True)]),
                     node("node-1", region, f"{region}-1a")):
            api_server.put(json.loads(json.dumps(body)))
    return tmp_path / "repo"


def test_the_first_publish_waits_for_a_cluster_the_source_names_by_its_kube_context(tmp_path, standin):
    """A Cluster of the source with a kubeContext is followed before the first publish, and waited for
    as this cluster is: the first answer a proxy gets holds both clusters' pods."""
    from tests.kube.standin import KubeStandIn, write_kubeconfig
    with KubeStandIn() as west:
        repo = east_and_west(tmp_path, standin, west, "kubeContext: west")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"east": standin, "west": west})
        west.stop_serving()
        g = started_waiting(repo, kubeconfig)
        try:
            # (east, listed at once, is no longer waited for)
            assert wait_for(lambda: "first complete list of west (" in g.get("/readyz")[1], 10, g.log)
            assert first_answer_once_back(g, west) == {"10.0.0.1", "10.1.0.1"}
        finally:
            g.stop()


def secret_for(cluster: str, api_server, token: str) -> dict:
    """Istio's remote secret for ``cluster``, as ``istioctl create-remote-secret`` makes it."""
    import base64

    import yaml
    from tests.kube.standin import kubeconfig
    config = yaml.safe_dump(kubeconfig({cluster: api_server}, token=token))
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": f"istio-remote-secret-{cluster}", "namespace": "istio-system",
        "labels": {"istio/multiCluster": "true"}, "annotations": {"networking.istio.io/cluster": cluster}},
        "data": {cluster: base64.b64encode(config.encode()).decode()}}


def test_remote_secrets_are_followed_while_the_daemon_runs(tmp_path, standin):
    """A cluster given by a remote secret (no kubeContext) is waited for at start even when this
    cluster's API server is away then (the secrets are read once it is back); a rotated token in the
    secret reconnects the cluster; the secret deleted removes its pods from what proxies get, and
    created again brings them back, with no restart."""
    from tests.kube.standin import KubeStandIn
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig", contexts=("east",))
    with KubeStandIn() as west:
        west.require_token("west-1")
        repo = east_and_west(tmp_path, standin, west)
        standin.put(secret_for("west", west, "west-1"))
        standin.stop_serving()
        g = started_waiting(repo, kubeconfig)
        try:
            assert wait_for(lambda: "Istio's remote secrets (istio-system)" in g.get("/readyz")[1], 10, g.log)
            assert first_answer_once_back(g, standin) == {"10.0.0.1", "10.1.0.1"}

            def west_state() -> dict | None:
                registryz = json.loads(g.get("/debug/registryz")[1])
                return next((c for c in registryz["clusters"] if c["cluster"] == "west"), None)

            west.require_token("west-2")  # the remote cluster's token rotated...
            west.drop_watches()
            assert wait_for(lambda: west_state()["stale"], 10, g.log)
            assert "credentials refused" in west_state()["last_error"]
            assert endpoints(g) == {"10.0.0.1", "10.1.0.1"}  # kept, stale
            standin.put(secret_for("west", west, "west-2"))  # ...and its secret with it
            assert wait_for(lambda: not west_state()["stale"], 10, g.log)
            assert g.event("remote secret changed: reading the cluster with its new kubeconfig", cluster="west")

            standin.delete("secrets", "istio-system", "istio-remote-secret-west")
            assert wait_for(lambda: endpoints(g) == {"10.0.0.1"}, 10, g.log)
            registryz = json.loads(g.get("/debug/registryz")[1])
            assert [c["cluster"] for c in registryz["clusters"]] == ["east"]
            assert registryz["remote_secrets"]["clusters"] == {}
            standin.put(secret_for("west", west, "west-2"))
            assert wait_for(lambda: endpoints(g) == {"10.0.0.1", "10.1.0.1"}, 10, g.log)
            assert json.loads(g.get("/debug/registryz")[1])["remote_secrets"]["clusters"] == {
                "west": "istio-system/istio-remote-secret-west"}
            # a secret for this cluster is not used (it is read through --kube-context): said so, not listed
            standin.put(secret_for("east", standin, "any"))
            ignored = ("remote secret istio-system/istio-remote-secret-east, cluster east: ignored, the cluster is "
                       "read otherwise (--cluster, a dir: registry or its kubeContext)")
            assert wait_for(lambda: ignored in g.json("/debug/registryz")["remote_secrets"]["errors"], 10, g.log)
            assert g.json("/debug/registryz")["remote_secrets"]["clusters"] == {
                "west": "istio-system/istio-remote-secret-west"}
        finally:
            g.stop()


def test_clusters_named_by_kube_context_are_read_while_this_clusters_api_server_is_away(tmp_path, standin):
    """With this cluster's API server away at start, Istio's remote secrets cannot be listed, but the
    Clusters the source names by kubeContext are followed at once, not after --registry-sync-timeout;
    and a Cluster whose kubeContext the kubeconfig lacks is shown (registryz, /readyz), refused, and not
    waited for: only a changed kubeconfig or Cluster mends it."""
    from tests.kube.standin import KubeStandIn, write_kubeconfig
    with KubeStandIn() as west:
        repo = east_and_west(tmp_path, standin, west, "kubeContext: west")
        with (repo / "mesh.yaml").open("a") as mesh:
            mesh.write("---\napiVersion: galleon.io/v1alpha1\nkind: Cluster\n"
                       "metadata: {name: north, namespace: istio-system}\n"
                       "spec: {network: net-1, locality: eu-north/eu-north-1a, kubeContext: north}\n")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"east": standin, "west": west})
        standin.stop_serving()
        g = started_waiting(repo, kubeconfig)
        try:
            def read() -> dict | None:
                clusters = {c["cluster"]: c for c in g.json("/debug/registryz")["clusters"]}
                return clusters if clusters.get("west", {}).get("synced") and "north" in clusters else None
            clusters = wait_for(read, 10, g.log)
            assert clusters["north"]["refused"] and not clusters["north"]["synced"]
            assert "has no context 'north'" in clusters["north"]["last_error"], clusters["north"]
            waiting = g.get("/readyz")[1].splitlines()[0]
            assert "east" in waiting and "north" not in waiting and "west" not in waiting, waiting
            assert "registry north: refused (not waited for): cannot follow it through its kubeContext" in g.get("/readyz")[1]
            # once served, its Cluster removed from the source: no longer shown, as a cluster no source names
            standin.resume()
            assert wait_for(lambda: g.get("/readyz")[0] == 200, 10, g.log)
            (repo / "mesh.yaml").write_text((repo / "mesh.yaml").read_text().split("\n---\napiVersion: galleon.io/v1alpha1"
                                                                                 "\nkind: Cluster\nmetadata: {name: north")[0])
            assert wait_for(lambda: "north" not in {c["cluster"] for c in g.json("/debug/registryz")["clusters"]},
                            10, g.log)
            assert "north" not in g.get("/readyz")[1]
        finally:
            g.stop()


def test_this_cluster_read_from_another_api_server_than_its_cluster_names_is_said(tmp_path, standin):
    """This cluster is read through --kube-context (else the kubeconfig's current context): when its
    Cluster's kubeContext leads to another API server, every proxy would be sent another cluster's pods
    as this one's. Said once, with what to give."""
    from tests.kube.standin import KubeStandIn, write_kubeconfig
    with KubeStandIn() as west:
        repo = east_and_west(tmp_path, standin, west)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"east": standin, "west": west})
        g = Galleon(repo, "east", "--registry", "kube", "--kubeconfig", str(kubeconfig), "--kube-context", "west")
        with g:
            said = wait_for(lambda: g.event("registry reads this cluster from another API server than its Cluster "
                                            "names"), 10, g.log)
            assert said["error"] == (f"cluster east is read from {west.url}, but its Cluster's kubeContext 'east' is "
                                     f"{standin.url}; give --kube-context east")


def test_the_same_api_server_written_with_a_trailing_slash_is_not_another(tmp_path, standin):
    """A kubeconfig may write a server either way: https://host:port and https://host:port/ are one API
    server (the comparison relies on the kubernetes client dropping the trailing slash as it reads)."""
    import yaml
    from tests.kube.standin import KubeStandIn, write_kubeconfig
    with KubeStandIn() as west:
        repo = east_and_west(tmp_path, standin, west)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"east": standin, "east-slash": standin, "west": west})
        config = yaml.safe_load(kubeconfig.read_text())
        cluster_of = {c["name"]: c["context"]["cluster"] for c in config["contexts"]}
        for cluster in config["clusters"]:
            if cluster["name"] == cluster_of["east-slash"]:
                cluster["cluster"]["server"] = standin.url + "/"
        assert {c["cluster"]["server"] for c in config["clusters"]} >= {standin.url, standin.url + "/"}
        kubeconfig.write_text(yaml.safe_dump(config))
        g = Galleon(repo, "east", "--registry", "kube", "--kubeconfig", str(kubeconfig), "--kube-context",
                    "east-slash")
        with g:
            assert wait_for(lambda: registry(g)["synced"], 10, g.log)
            assert g.event("registry reads this cluster from another API server than its Cluster names") is None


def test_a_remote_secret_takes_over_a_cluster_read_through_its_kube_context_while_it_could_not_be_read(
        tmp_path, standin):
    """With this cluster's API server away at start, west is read through its kubeContext at once; once
    the remote secrets can be read, the one that gives west takes it over, as it would have at start
    (which source reads a cluster does not depend on what was up first)."""
    from tests.kube.standin import KubeStandIn, write_kubeconfig
    with KubeStandIn() as west:
        west.require_token("west-secret")
        repo = east_and_west(tmp_path, standin, west, "kubeContext: west")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"east": standin, "west": west})
        standin.put(secret_for("west", west, "west-secret"))
        standin.stop_serving()
        g = started_waiting(repo, kubeconfig)
        try:
            assert wait_for(lambda: g.event("registry following", cluster="west"), 10, g.log)
            standin.resume()
            said = wait_for(lambda: g.event("remote secret gives the cluster read through its kubeContext: reading "
                                            "it through the secret", cluster="west"), 20, g.log)
            assert said["remote_secret"] == "istio-system/istio-remote-secret-west"
            assert wait_for(lambda: endpoints(g) == {"10.0.0.1", "10.1.0.1"}, 20, g.log)
            assert g.json("/debug/registryz")["remote_secrets"]["clusters"] == {
                "west": "istio-system/istio-remote-secret-west"}
        finally:
            g.stop()
