"""The ``kube`` target of the CA reconciler (reconciler/ca/kube.py) with the official client.

No kube-apiserver can be installed on these machines, so the API server is tests/kube/standin.py,
a stand-in that keeps the rules these tests rely on (resourceVersion and uid preconditions, 409
Conflict and AlreadyExists, a Secret's type cannot change, immutable Secrets) and injects 5xx
answers and slow answers on demand. Keys are ECDSA P-256 so the file runs in a few seconds.
"""
from __future__ import annotations

import base64
import dataclasses
import time
from datetime import datetime, timezone

import pytest
from cryptography import x509

from reconciler.ca import CAError, Policy, init_root, issue, reconcile, secret_manifest, target_from
from reconciler.ca.kube import KubeTarget
from reconciler.ca.planning import CREATE, NONE, REFUSE, REISSUE
from tests.kube.standin import KubeStandIn, write_kubeconfig

NOW = datetime.now(timezone.utc).replace(microsecond=0)
NS, NAME = "istio-system", "cacerts"
SECRET_PATH = f"/api/v1/namespaces/{NS}/secrets"
MANAGED_BY = "app.kubernetes.io/managed-by"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return init_root(tmp_path_factory.mktemp("root"), "ecdsa-p256", NOW)


@pytest.fixture
def policy():
    return Policy("cluster-a", key_algorithm="ECDSA_P256", source="test")


@pytest.fixture
def kubeconfig(standin, tmp_path):
    return standin.write_kubeconfig(tmp_path / "kubeconfig", contexts=("ctx-a",))


def kube(kubeconfig, cls=KubeTarget, **options) -> KubeTarget:
    return cls({"cluster-a": "ctx-a"}, kubeconfig, **{"retries": 3, "backoff": 0.01, "timeout": 2, **options})


def stored(standin) -> dict | None:
    return standin.get("secrets", NS, NAME)


def writes(standin, since: int = 0) -> list[tuple[str, int]]:
    return [(r.method, r.status) for r in standin.requests[since:] if r.method != "GET"]


def ca_cert(secret: dict) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca-cert.pem"]))


def foreign_secret(root, policy, **fields) -> dict:
    """A valid intermediate that Galleon did not write (no managed-by label)."""
    secret = secret_manifest(issue(root, "cluster-a", policy, NOW), root, policy)
    secret["metadata"]["labels"] = {"team": "mesh"}
    return {**secret, **fields}


class EditedAfterRead(KubeTarget):
    """Another controller changes the Secret right after each of the next reads (one change each)."""

    def __init__(self, *args, standin, changes, **kwargs):
        super().__init__(*args, **kwargs)
        self.standin, self.changes = standin, list(changes)

    def read(self, cluster):
        secret = super().read(cluster)
        if self.changes:
            self.changes.pop(0)(self.standin)
        return secret


def test_created_when_missing_then_a_second_reconcile_writes_nothing(root, policy, standin, kubeconfig):
    target = target_from("kube", contexts={"cluster-a": "ctx-a"}, kubeconfig=kubeconfig)
    assert isinstance(target, KubeTarget)
    assert reconcile(target, root, "cluster-a", policy, NOW).action == CREATE
    assert [(r.method, r.status) for r in standin.requests] == [("GET", 404), ("POST", 201)]
    secret = stored(standin)
    assert secret["type"] == "Opaque" and secret["metadata"]["labels"] == {MANAGED_BY: "galleon"}
    assert sorted(secret["data"]) == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    assert ca_cert(secret).subject.rfc4514_string() == "L=cluster-a,CN=Intermediate CA,O=Istio"

    read = target.read("cluster-a")  # the shape the dir target reads, plus the server's metadata
    assert {"apiVersion", "kind", "metadata", "type", "data"} <= set(read)
    assert read["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert read["data"] == secret["data"]

    count = len(standin.requests)
    assert reconcile(target, root, "cluster-a", policy, NOW).action == NONE
    assert writes(standin, count) == [] and stored(standin) == secret


def test_a_stale_resource_version_is_read_planned_and_written_again(root, policy, standin, kubeconfig):
    reconcile(kube(kubeconfig), root, "cluster-a", policy, NOW)
    before = ca_cert(stored(standin))

    def outside_edit(server):
        server.edit("secrets", NS, NAME, lambda s: (s["metadata"]["labels"].update(team="payments"),
                                                     s["metadata"]["annotations"].update(owner="payments")))
    target = kube(kubeconfig, EditedAfterRead, standin=standin, changes=[outside_edit])
    count = len(standin.requests)
    shorter = dataclasses.replace(policy, lifetime="4380h")
    assert reconcile(target, root, "cluster-a", shorter, NOW).action == REISSUE
    assert [(r.method, r.status) for r in standin.requests[count:]] == [
        ("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 200)]
    secret = stored(standin)
    assert secret["metadata"]["labels"] == {"team": "payments", MANAGED_BY: "galleon"}
    assert secret["metadata"]["annotations"]["owner"] == "payments"
    assert secret["metadata"]["annotations"]["galleon.io/ca-policy-hash"] == shorter.hash
    assert ca_cert(secret) != before
    assert reconcile(kube(kubeconfig), root, "cluster-a", shorter, NOW).action == NONE


def test_a_secret_created_meanwhile_is_planned_again_and_refused_when_foreign(root, policy, standin, kubeconfig):
    foreign = foreign_secret(root, policy)
    target = kube(kubeconfig, EditedAfterRead, standin=standin, changes=[lambda server: server.put(foreign)])
    decided = reconcile(target, root, "cluster-a", policy, NOW)
    assert decided.action == REFUSE and "--adopt" in decided.reasons[0]
    assert [(r.method, r.status) for r in standin.requests] == [("GET", 404), ("POST", 409), ("GET", 200)]
    assert stored(standin)["metadata"]["labels"] == {"team": "mesh"}


def test_a_secret_that_keeps_changing_is_one_line_error(root, policy, standin, kubeconfig):
    reconcile(kube(kubeconfig), root, "cluster-a", policy, NOW)

    def touch(server):
        server.edit("secrets", NS, NAME, lambda s: s["metadata"]["annotations"].update(touched="yes"))
    target = kube(kubeconfig, EditedAfterRead, standin=standin, changes=[touch] * 10)
    count = len(standin.requests)
    with pytest.raises(CAError) as caught:
        reconcile(target, root, "cluster-a", dataclasses.replace(policy, lifetime="4380h"), NOW)
    message = str(caught.value)
    assert "kept changing" in message and "5 attempts" in message and "\n" not in message
    assert writes(standin, count) == [("PUT", 409)] * 5


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(root, policy, standin, kubeconfig, status):
    standin.fail("GET", status=status, times=2)
    standin.fail("POST", status=status, times=2)
    assert reconcile(kube(kubeconfig), root, "cluster-a", policy, NOW).action == CREATE
    assert [(r.method, r.status) for r in standin.requests] == [
        ("GET", status), ("GET", status), ("GET", 404), ("POST", status), ("POST", status), ("POST", 201)]
    assert stored(standin)["metadata"]["labels"] == {MANAGED_BY: "galleon"}


def test_a_write_that_always_fails_is_one_line_error_and_the_old_secret_stays(root, policy, standin, kubeconfig):
    reconcile(kube(kubeconfig), root, "cluster-a", policy, NOW)
    before = stored(standin)
    standin.fail("PUT", status=500, times=None)
    with pytest.raises(CAError) as caught:
        reconcile(kube(kubeconfig), root, "cluster-a", dataclasses.replace(policy, lifetime="4380h"), NOW)
    message = str(caught.value)
    assert message.startswith("cluster cluster-a (context ctx-a): replacing istio-system/cacerts: failed 4 times")
    assert "HTTP 500" in message and "\n" not in message and "PRIVATE KEY" not in message
    assert writes(standin, 2) == [("PUT", 500)] * 4
    assert stored(standin) == before


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_slow_answer_times_out_and_is_retried(root, policy, standin, kubeconfig, method):
    reconcile(kube(kubeconfig), root, "cluster-a", policy, NOW)
    shorter = dataclasses.replace(policy, lifetime="4380h")
    standin.delay(5, method)  # the first one only; the stand-in wakes it when the test ends
    start = time.monotonic()
    assert reconcile(kube(kubeconfig, timeout=0.3), root, "cluster-a", shorter, NOW).action == REISSUE
    assert 0.3 <= time.monotonic() - start < 5  # gave up on the slow answer and asked again
    secret = stored(standin)
    assert secret["metadata"]["annotations"]["galleon.io/ca-policy-hash"] == shorter.hash
    assert reconcile(kube(kubeconfig), root, "cluster-a", shorter, NOW).action == NONE


@pytest.mark.parametrize("fields", [{"type": "istio.io/plugin-ca"}, {"immutable": True}],
                         ids=["not-opaque", "immutable"])
def test_an_adopted_secret_that_cannot_be_updated_is_deleted_and_created(root, policy, standin, kubeconfig,
                                                                         fields):
    old = standin.put(foreign_secret(root, policy, **fields))
    adopted = reconcile(kube(kubeconfig), root, "cluster-a", policy, NOW, adopt=True)
    assert adopted.action == REISSUE
    assert writes(standin) == [("DELETE", 200), ("POST", 201)]
    secret = stored(standin)
    assert secret["type"] == "Opaque" and "immutable" not in secret
    assert secret["metadata"]["uid"] != old["metadata"]["uid"]
    assert secret["metadata"]["labels"] == {"team": "mesh", MANAGED_BY: "galleon"}
    assert reconcile(kube(kubeconfig), root, "cluster-a", policy, NOW).action == NONE


def test_an_unlabeled_secret_is_refused_without_adopt(root, policy, standin, kubeconfig):
    old = standin.put(foreign_secret(root, policy))
    decided = reconcile(kube(kubeconfig), root, "cluster-a", policy, NOW)
    assert decided.action == REFUSE and "--adopt" in decided.reasons[0]
    assert writes(standin) == [] and stored(standin) == old


def test_each_cluster_is_written_through_its_own_context(root, policy, tmp_path):
    with KubeStandIn() as a, KubeStandIn() as b:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"ctx-a": a, "ctx-b": b})
        target = KubeTarget({"cluster-a": "ctx-a", "cluster-b": "ctx-b"}, kubeconfig)
        for cluster in ("cluster-a", "cluster-b"):
            assert reconcile(target, root, cluster, dataclasses.replace(policy, cluster=cluster), NOW).action == CREATE
        for server, cluster in ((a, "cluster-a"), (b, "cluster-b")):
            assert writes(server) == [("POST", 201)]
            assert ca_cert(server.get("secrets", NS, NAME)).subject.rfc4514_string() == \
                f"L={cluster},CN=Intermediate CA,O=Istio"


def test_configuration_errors_are_one_line(kubeconfig):
    with pytest.raises(CAError, match=r"^cluster cluster-a: kubeconfig .* has no context 'ctx-z' "
                                      r"\(known contexts: ctx-a\)$"):
        KubeTarget({"cluster-a": "ctx-z"}, kubeconfig).read("cluster-a")
    with pytest.raises(CAError, match="^cluster cluster-b: no kubeContext is known for it$"):
        KubeTarget({"cluster-a": "ctx-a"}, kubeconfig).read("cluster-b")
    with pytest.raises(CAError, match=r"^unknown target 'kube:x'; did you mean kube\? \(or dir:PATH\)$"):
        target_from("kube:x")
    with pytest.raises(CAError, match=r"^unknown target 'dir:'; the path after dir: is empty; give dir:PATH$"):
        target_from("dir:")
