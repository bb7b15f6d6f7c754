"""The ``kube`` registry feed (reconciler/registry/kube.py) against an API server.

No kube-apiserver can be installed on these machines, so the API server is tests/kube/standin.py:
a real HTTP server that the official client talks to unchanged, with the API server's list,
watch, 410 Gone and bookmark rules (pinned down by tests/test_kube_standin.py), and hooks to drop
watches, compact its history, go away and come back. The sink is a recording one that holds what
a store would and checks, at every call, that nothing a test says must stay was ever missing.
"""
from __future__ import annotations

import base64
import copy
import threading
import time
from urllib.parse import parse_qs

import pytest
import yaml
from kubernetes.client import Configuration
from kubernetes.config import kube_config

from reconciler.kube.client import KubeError
from reconciler.registry.kube import KubeFeed, cluster_clients
from reconciler.registry.remote_secrets import RemoteSecrets, client_from_kubeconfig, remote_secret_kind
from reconciler.registry.sink import KIND_NAMES
from tests.kube.standin import KubeStandIn, kubeconfig

CLUSTER = "cluster-a"


class RecordingSink:
    """A Sink holding what a store would (kind -> (namespace, name) -> object) and every call made."""

    def __init__(self) -> None:
        self.held: dict[str, dict[tuple[str, str], dict]] = {kind: {} for kind in KIND_NAMES}
        self.calls: list[tuple] = []
        self.must_stay: set[tuple[str, str, str]] = set()  # (kind, namespace, name) never to be missing
        self.missing: list[tuple] = []  # (call, what was missing after it)
        self._changed = threading.Condition()

    def listed(self, cluster: str, kind: str, objects: list[dict]) -> None:
        self._record(("listed", cluster, kind, sorted(name_of(o) for o in objects)),
                     lambda: self.held.__setitem__(kind, {name_of(o): o for o in objects}))

    def event(self, cluster: str, kind: str, type: str, obj: dict) -> None:
        def apply():
            if type == "DELETED":
                self.held[kind].pop(name_of(obj), None)
            else:
                self.held[kind][name_of(obj)] = obj
        self._record(("event", cluster, kind, type, name_of(obj)), apply)

    def failed(self, cluster: str, kind: str | None, error: str, refused: bool = False) -> None:
        self._record(("failed", cluster, kind, error), lambda: None)

    def _record(self, call: tuple, apply) -> None:
        with self._changed:
            apply()
            self.calls.append(call)
            gone = {m for m in self.must_stay if (m[1], m[2]) not in self.held[m[0]]}
            if gone:
                self.missing.append((call, gone))
            self._changed.notify_all()

    def wait_for(self, condition, timeout: float = 5) -> None:
        """Until ``condition(sink)`` holds; it may also look at the stand-in, so it is polled too."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"not met; calls: {self.calls}"
                self._changed.wait(min(remaining, 0.01))

    def names(self, kind: str) -> list[str]:
        with self._changed:
            return sorted(self.held[kind])

    def of(self, what: str, kind: str | None = None) -> list[tuple]:
        with self._changed:
            return [c for c in self.calls if c[0] == what and (kind is None or c[2] == kind)]


def name_of(obj: dict) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def pod(name: str, namespace: str = "shop", **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "status": {"podIP": "10.0.0.1"}}


def service(name: str, namespace: str = "shop") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": 80}]}}


def endpoint_slice(name: str, service: str, namespace: str = "shop") -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]}


def node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def all_listed(sink: RecordingSink) -> bool:
    return {c[2] for c in sink.of("listed")} == set(KIND_NAMES)


def watches(standin: KubeStandIn, resource: str) -> list[dict[str, str]]:
    """The query of each watch of ``resource`` the stand-in served."""
    return [{k: v[0] for k, v in parse_qs(r.query).items()} for r in standin.requests
            if r.path.endswith("/" + resource) and "watch=true" in r.query]


@pytest.fixture
def kubeconfig_file(standin, tmp_path):
    return standin.write_kubeconfig(tmp_path / "kubeconfig", contexts=("ctx-a",))


@pytest.fixture
def run(standin, kubeconfig_file):
    """Start a feed of CLUSTER (through its kubeContext) on a new recording sink; stopped at the end,
    where every thread must end promptly."""
    feeds = []

    def start(page_size: int = 2, watch_timeout: float = 300) -> tuple[KubeFeed, RecordingSink]:
        clients = cluster_clients({CLUSTER: "ctx-a"}, kubeconfig_file)
        sink, stop = RecordingSink(), threading.Event()
        feed = KubeFeed(CLUSTER, clients.clients[CLUSTER], sink, stop, page_size=page_size,
                        watch_timeout=watch_timeout, backoff=(0.05, 0.2))
        feed.start()
        feeds.append((feed, stop))
        return feed, sink
    yield start
    for feed, stop in feeds:
        stop.set()
    started = time.monotonic()
    assert all(feed.join(2) for feed, _ in feeds) and time.monotonic() - started < 1


def test_the_first_list_of_every_kind_reaches_the_sink_in_pages(standin, run):
    for i in range(5):
        standin.put(pod(f"p{i}", "shop" if i % 2 else "other"))
    standin.put(service("cart"))
    standin.put(endpoint_slice("cart-x1", "cart"))
    standin.put(node("node-1"))
    _, sink = run(page_size=2)
    sink.wait_for(all_listed)
    assert sink.names("Pod") == [("other", "p0"), ("other", "p2"), ("other", "p4"), ("shop", "p1"), ("shop", "p3")]
    assert sink.names("Node") == [("", "node-1")]
    # List items come without kind and apiVersion: the feed sets them, as the contract says.
    held = sink.held["EndpointSlice"][("shop", "cart-x1")]
    assert (held["apiVersion"], held["kind"]) == ("discovery.k8s.io/v1", "EndpointSlice")
    assert held["endpoints"][0]["addresses"] == ["10.0.0.1"]
    assert sink.held["Pod"][("shop", "p1")]["kind"] == "Pod"
    pages = [parse_qs(r.query) for r in standin.requests if r.path == "/api/v1/pods" and "watch" not in r.query]
    assert [p["limit"] for p in pages] == [["2"]] * 3 and [("continue" in p) for p in pages] == [False, True, True]
    assert sink.of("failed") == [] and len(sink.of("listed")) == 4


def test_watch_events_reach_the_sink(standin, run):
    standin.put(pod("a"))
    feed, sink = run()
    sink.wait_for(all_listed)
    standin.put(pod("b"))
    standin.edit("pods", "shop", "a", lambda p: p["status"].update(podIP="10.0.0.9"))
    standin.delete("pods", "shop", "b")
    standin.put(node("node-2"))
    sink.wait_for(lambda s: len(s.of("event", "Pod")) == 3 and s.of("event", "Node"))
    assert [c[3:] for c in sink.of("event", "Pod")] == [
        ("ADDED", ("shop", "b")), ("MODIFIED", ("shop", "a")), ("DELETED", ("shop", "b"))]
    assert sink.held["Pod"][("shop", "a")]["status"]["podIP"] == "10.0.0.9"
    assert sink.held["Pod"][("shop", "a")]["apiVersion"] == "v1" and sink.names("Node") == [("", "node-2")]
    assert feed.versions["Pod"] == "4"  # the deletion's
    [first_watch] = watches(standin, "pods")
    assert first_watch["resourceVersion"] == "1" and first_watch["allowWatchBookmarks"] == "true"
    assert 270 <= int(first_watch["timeoutSeconds"]) <= 330  # five minutes, jittered


def test_bookmarks_advance_the_version_the_next_watch_starts_from(standin, run):
    standin.put(pod("a"))
    feed, sink = run()
    sink.wait_for(lambda s: watches(standin, "pods"))
    standin.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "shop"}})
    standin.bookmark()
    sink.wait_for(lambda s: feed.versions["Pod"] == "2")
    standin.drop_watches()
    sink.wait_for(lambda s: len(watches(standin, "pods")) == 2)
    assert [w["resourceVersion"] for w in watches(standin, "pods")] == ["1", "2"]
    assert len(sink.of("listed", "Pod")) == 1 and sink.of("event") == []


def test_a_watch_that_ends_at_its_timeout_is_opened_again_from_the_last_version(standin, run):
    standin.put(pod("a"))
    _, sink = run(watch_timeout=1)
    sink.wait_for(all_listed)
    standin.put(pod("b"))
    sink.wait_for(lambda s: len(watches(standin, "pods")) == 2, timeout=3)
    assert watches(standin, "pods")[1]["resourceVersion"] == "2"
    assert len(sink.of("listed", "Pod")) == 1 and sink.of("failed") == []


def test_a_compacted_history_relists_and_nothing_is_missing_meanwhile(standin, run):
    for name in ("keep", "goes"):
        standin.put(pod(name))
    _, sink = run()
    sink.wait_for(all_listed)
    sink.must_stay = {("Pod", "shop", "keep")}
    # The watches reconnect while the history no longer reaches their version: 410 in the stream.
    standin.delay(0.3, path_contains="watch=true", times=None)
    standin.drop_watches()
    standin.delete("pods", "shop", "goes")
    standin.put(pod("new"))
    standin.compact()
    standin.clear_faults()
    sink.wait_for(lambda s: len(s.of("listed", "Pod")) == 2)
    assert sink.names("Pod") == [("shop", "keep"), ("shop", "new")]
    assert sink.missing == [] and sink.of("failed") == []
    assert [c[0] for c in sink.calls if c[2] == "Pod"] == ["listed", "listed"]  # no event was lost or made up


def test_a_watch_answered_410_gone_relists(standin, run):
    standin.put(pod("a"))
    _, sink = run()
    sink.wait_for(lambda s: watches(standin, "pods"))
    standin.fail(path_contains="/pods?allowWatchBookmarks", status=410)
    standin.drop_watches()
    sink.wait_for(lambda s: len(s.of("listed", "Pod")) == 2)
    assert [w.status for w in standin.requests if "/pods?allowWatchBookmarks" in f"{w.path}?{w.query}"][:2] == [200, 410]
    assert sink.of("failed") == [] and sink.of("event") == []


def test_an_expired_continue_token_starts_the_list_over(standin, run):
    for i in range(5):
        standin.put(pod(f"p{i}"))
    standin.fail(path_contains="/pods?continue=", status=410)
    _, sink = run(page_size=2)
    sink.wait_for(all_listed)
    assert sink.of("listed", "Pod") == [("listed", CLUSTER, "Pod", [("shop", f"p{i}") for i in range(5)])]
    pages = [r for r in standin.requests if r.path == "/api/v1/pods" and "watch" not in r.query]
    assert [("continue" in r.query, r.status) for r in pages] == [
        (False, 200), (True, 410), (False, 200), (True, 200), (True, 200)]
    assert sink.of("failed") == []


def test_dropped_watch_connections_reconnect_from_the_last_version(standin, run):
    standin.put(pod("a"))
    _, sink = run()
    sink.wait_for(all_listed)
    standin.put(pod("b"))
    sink.wait_for(lambda s: s.of("event", "Pod"))
    standin.drop_watches()
    sink.wait_for(lambda s: len(watches(standin, "pods")) == 2)
    standin.put(pod("c"))
    sink.wait_for(lambda s: len(s.of("event", "Pod")) == 2)
    assert watches(standin, "pods")[1]["resourceVersion"] == "2"
    assert len(sink.of("listed", "Pod")) == 1 and sink.of("failed") == []


def test_an_unreachable_server_is_reported_objects_are_kept_then_it_is_listed_again(standin, run):
    standin.put(pod("a"))
    _, sink = run()
    sink.wait_for(all_listed)
    sink.must_stay = {("Pod", "shop", "a")}
    standin.stop_serving()
    sink.wait_for(lambda s: {c[2] for c in s.of("failed")} == set(KIND_NAMES))
    assert {c[3] for c in sink.of("failed")} == {f"{CLUSTER}: API server {standin.url} unreachable: connection refused"}
    standin.put(pod("b"))  # changed while the feed could not see
    standin.resume()
    sink.wait_for(lambda s: all(len(s.of("listed", kind)) == 2 for kind in KIND_NAMES))
    assert sink.names("Pod") == [("shop", "a"), ("shop", "b")] and sink.missing == []


def test_refused_credentials_and_server_errors_are_one_line_then_retried(standin, run):
    from structlog.testing import capture_logs
    standin.require_token("secret")
    with capture_logs() as logs:
        _, sink = run()
        sink.wait_for(lambda s: len(s.of("failed", "Pod")) >= 3)
    assert sink.of("listed") == []
    # each retry is reported to the sink (status, metrics), but a retry failing as the last did is no
    # new warning in the log
    warned = [e for e in logs if e["event"] == "registry read failed" and e["kind"] == "Pod"
              and e["log_level"] == "warning"]
    assert len(warned) == 1, warned
    assert sink.of("failed", "Pod")[0][3] == f"{CLUSTER}: credentials refused (401 Unauthorized) by API server {standin.url}"
    standin.fail(path_contains="/api/v1/pods", status=503, times=None)
    standin.require_token(None)
    sink.wait_for(lambda s: "HTTP 503" in s.of("failed", "Pod")[-1][3])
    assert sink.of("failed", "Pod")[-1][3] == (f"{CLUSTER}: API server {standin.url}: pods: HTTP 503: injected fault: "
                                               "503 for GET /api/v1/pods?limit=2")
    standin.clear_faults()
    standin.fail(path_contains="/api/v1/pods", status=403)
    sink.wait_for(lambda s: "HTTP 403" in s.of("failed", "Pod")[-1][3])
    assert sink.of("failed", "Pod")[-1][3] == (f"{CLUSTER}: not allowed to list and watch pods: HTTP 403: "
                                               "injected fault: 403 for GET /api/v1/pods?limit=2")
    sink.wait_for(all_listed)


def test_deleting_a_namespace_arrives_as_deleted_events(standin, run):
    standin.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    standin.put(pod("a"))
    standin.put(service("cart"))
    standin.put(endpoint_slice("cart-x1", "cart"))
    standin.put(pod("elsewhere", "other"))
    _, sink = run()
    sink.wait_for(all_listed)
    standin.delete("namespaces", None, "shop")
    sink.wait_for(lambda s: len(s.of("event")) == 3)
    assert sorted(c[2:] for c in sink.of("event")) == [
        ("EndpointSlice", "DELETED", ("shop", "cart-x1")), ("Pod", "DELETED", ("shop", "a")),
        ("Service", "DELETED", ("shop", "cart"))]
    assert sink.names("Pod") == [("other", "elsewhere")]


def test_a_cluster_without_its_kube_context_is_an_error_line(kubeconfig_file):
    clients = cluster_clients({"cluster-a": "ctx-a", "cluster-b": "ctx-missing"}, kubeconfig_file)
    assert list(clients.clients) == ["cluster-a"]
    assert clients.errors == {"cluster-b": f"kubeconfig {kubeconfig_file} has no context 'ctx-missing' "
                                           "(known contexts: ctx-a)"}


def remote_secret(name: str, data: dict[str, str], labelled: bool = True) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": name, "namespace": "istio-system", "labels": {"istio/multiCluster": "true"} if labelled else {},
        "annotations": {"networking.istio.io/cluster": next(iter(data))}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


class Secrets:
    """Istio's remote secrets of CLUSTER's API server, followed by a feed into ``RemoteSecrets``; each
    time they say something, what ``clusters()`` gives then."""

    def __init__(self, api) -> None:
        self.said: list[dict] = []
        self._changed = threading.Condition()
        self.remote = RemoteSecrets(self._on_change)
        self.stop = threading.Event()
        self.feed = KubeFeed(CLUSTER, api, self.remote, self.stop, kinds=[remote_secret_kind(api)],
                             backoff=(0.05, 0.2))

    def _on_change(self) -> None:
        with self._changed:
            self.said.append(self.remote.clusters())
            self._changed.notify_all()

    def wait_for(self, condition, timeout: float = 5) -> dict:
        """Until what the secrets give meets ``condition``; that."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self.said and condition(self.said[-1])):
                assert time.monotonic() < deadline, f"not met: {self.said}, {self.remote.status()}"
                self._changed.wait(0.05)
            return self.said[-1]

    def __enter__(self) -> "Secrets":
        self.feed.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        assert self.feed.join(5)


def test_remote_secrets_give_a_client_per_cluster_and_are_followed(standin, kubeconfig_file):
    """As Istio's multicluster controller: each data key of a secret labelled istio/multiCluster is a
    cluster and its kubeconfig; a secret added, changed, unlabelled or deleted is followed."""
    with KubeStandIn() as remote_b, KubeStandIn() as remote_c:
        remote_b.put(pod("on-b"))
        remote_c.require_token("token-c")
        remote_c.put(pod("on-c"))
        b_config = yaml.safe_dump(kubeconfig({"b": remote_b}))
        standin.put(remote_secret("istio-remote-secret-b", {"cluster-b": b_config}))
        standin.put(remote_secret("istio-remote-secret-c", {
            "cluster-c": yaml.safe_dump(kubeconfig({"c": remote_c}, token="token-c")), "cluster-b": b_config}))
        exec_user = kubeconfig({"d": remote_b})
        exec_user["users"][0]["user"] = {"exec": {"command": "/bin/sh", "apiVersion": "client.authentication.k8s.io/v1"}}
        no_server = kubeconfig({"g": remote_b})
        del no_server["clusters"][0]["cluster"]["server"]
        standin.put(remote_secret("istio-remote-secret-d", {"cluster-d": yaml.safe_dump(exec_user),
                                                            "cluster-e": "not: [a kubeconfig",
                                                            "cluster-g": yaml.safe_dump(no_server)}))
        standin.put(remote_secret("not-remote", {"cluster-f": b_config}, labelled=False))
        api = cluster_clients({CLUSTER: "ctx-a"}, kubeconfig_file).clients[CLUSTER]
        with Secrets(api) as secrets:
            given = secrets.wait_for(lambda given: given)
            assert sorted(given) == ["cluster-b", "cluster-c"] and secrets.remote.settled
            status = secrets.remote.status()
            assert status == {
                "listed": True, "last_error": None, "clusters": {"cluster-b": "istio-system/istio-remote-secret-b",
                                                                 "cluster-c": "istio-system/istio-remote-secret-c"},
                "secrets": ["istio-system/istio-remote-secret-b", "istio-system/istio-remote-secret-c",
                            "istio-system/istio-remote-secret-d"],
                "errors": [
                    "remote secret istio-system/istio-remote-secret-c, cluster cluster-b: ignored, the cluster is "
                    "already given by istio-system/istio-remote-secret-b",
                    "remote secret istio-system/istio-remote-secret-d, cluster cluster-d: kubeconfig uses exec, which "
                    "a remote secret may not (use a token and certificate-authority-data)",
                    # (PyYAML's own message would quote the line, and a kubeconfig's lines hold tokens)
                    "remote secret istio-system/istio-remote-secret-d, cluster cluster-e: not a kubeconfig: invalid "
                    "YAML at line 1, column 6: did not find expected ',' or ']' (while parsing a flow sequence "
                    "opened here; the parser gave up at line 2)",
                    "remote secret istio-system/istio-remote-secret-d, cluster cluster-g: kubeconfig: its cluster has "
                    "no server (the API server's https:// address)"]}
            for cluster, remote, name in (("cluster-b", remote_b, "on-b"), ("cluster-c", remote_c, "on-c")):
                sink, stop = RecordingSink(), threading.Event()
                feed = KubeFeed(cluster, given[cluster].client, sink, stop)
                feed.start()
                sink.wait_for(all_listed)
                stop.set()
                assert feed.join(2) and sink.names("Pod") == [("shop", name)]

            # A token rotated: cluster-c gets a new client, cluster-b keeps its own.
            remote_c.require_token("token-c2")
            standin.put(remote_secret("istio-remote-secret-c", {
                "cluster-c": yaml.safe_dump(kubeconfig({"c": remote_c}, token="token-c2")), "cluster-b": b_config}))
            rotated = secrets.wait_for(lambda now: now["cluster-c"].client is not given["cluster-c"].client)
            assert rotated["cluster-b"] is given["cluster-b"]
            assert rotated["cluster-c"].client.configuration.api_key["BearerToken"] == "Bearer token-c2"
            # Labelled later: followed; the label removed, or the secret deleted: its clusters go (the
            # cluster a later secret also gave is then given by that one).
            standin.put(remote_secret("not-remote", {"cluster-f": b_config}))
            assert "cluster-f" in secrets.wait_for(lambda now: "cluster-f" in now)
            standin.put(remote_secret("not-remote", {"cluster-f": b_config}, labelled=False))
            secrets.wait_for(lambda now: "cluster-f" not in now)
            standin.delete("secrets", "istio-system", "istio-remote-secret-b")
            now = secrets.wait_for(lambda now: now["cluster-b"].secret == "istio-system/istio-remote-secret-c")
            assert sorted(now) == ["cluster-b", "cluster-c"]
            standin.delete("secrets", "istio-system", "istio-remote-secret-c")
            assert secrets.wait_for(lambda now: not now) == {}


def test_remote_secrets_refused_are_settled_and_unreachable_ones_are_not(standin, tmp_path):
    """The first publish waits for the secrets' list (``settled``), but not when the API server refuses
    to give them: waiting would not change that."""
    standin.require_token("the-real-one")
    wrong = cluster_clients({CLUSTER: "ctx-a"}, standin.write_kubeconfig(tmp_path / "wrong", ("ctx-a",),
                                                                       token="wrong")).clients[CLUSTER]
    with Secrets(wrong) as secrets:
        secrets.wait_for(lambda given: True)
        assert secrets.remote.settled and "credentials refused (401 Unauthorized)" in secrets.remote.status()["last_error"]
    standin.require_token(None)
    api = cluster_clients({CLUSTER: "ctx-a"}, standin.write_kubeconfig(tmp_path / "right", ("ctx-a",))).clients[CLUSTER]
    standin.stop_serving()
    with Secrets(api) as secrets:
        secrets.wait_for(lambda given: True)
        assert not secrets.remote.settled and "unreachable" in secrets.remote.status()["last_error"]
        standin.resume()
        secrets.wait_for(lambda given: secrets.remote.status()["listed"])
        assert secrets.remote.settled and secrets.remote.status()["last_error"] is None


def test_a_remote_kubeconfigs_ca_stays_in_memory(monkeypatch, tmp_path):
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443",
                                                     "certificate-authority-data": base64.b64encode(ca.encode()).decode()}}],
              "users": [{"name": "u", "user": {"token": "t"}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    written = []  # what the library writes to files
    (tmp_path / "file").touch()
    monkeypatch.setattr(kube_config, "_create_temp_file_with_content", lambda content, *args, **kwargs:
                        written.append(content) or str(tmp_path / "file"))
    kube_config.load_kube_config_from_dict(copy.deepcopy(config), client_configuration=Configuration())
    assert written == [ca.encode()]  # left to itself, the library writes the CA to a file
    written.clear()
    configuration = client_from_kubeconfig(yaml.safe_dump(config)).configuration
    assert written == [] and configuration.ssl_ca_cert is None and configuration.ca_cert_data == ca
    assert configuration.host == "https://10.0.0.1:6443" and configuration.retries is False
    assert configuration.api_key["BearerToken"] == "Bearer t"
    config["current-context"] = "missing"
    with pytest.raises(KubeError, match="current-context 'missing' is not one of its contexts"):
        client_from_kubeconfig(yaml.safe_dump(config))
