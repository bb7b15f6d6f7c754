"""The Kubernetes API stand-in (tests/kube/standin.py) keeps the API server's rules.

kube-apiserver cannot be installed here; these tests pin down, through the official client only
(CoreV1Api, CoordinationV1Api), the rules the stand-in enforces, so that tests of Galleon's
cluster writes against it mean something.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import time

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.kube.standin import KubeStandIn, write_kubeconfig

NS = "istio-system"


@pytest.fixture
def api(standin, tmp_path):
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig", contexts=["cluster-a"])
    return config.new_client_from_config(str(kubeconfig), context="cluster-a", persist_config=False)


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


def secret(name="cacerts", **fields) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **fields}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def refused(call, *args, **kwargs) -> tuple[ApiException, dict]:
    """The ApiException a call raises and its Status body, checked for the Status shape."""
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    status = json.loads(caught.value.body)
    assert status["kind"] == "Status" and status["apiVersion"] == "v1" and status["status"] == "Failure"
    assert status["code"] == caught.value.status and status["message"]
    return caught.value, status


def test_create_read_list_delete(core):
    created = core.create_namespaced_secret(NS, secret(metadata={"name": "cacerts", "labels": {"app": "x"}},
                                                       stringData={"root-cert.pem": "ROOT"}))
    # stringData is folded into data, type defaults to Opaque, the server's fields are set.
    assert created.data == {"root-cert.pem": b64("ROOT")} and created.string_data is None
    assert created.type == "Opaque"
    assert created.metadata.uid and created.metadata.resource_version == "1"
    assert isinstance(created.metadata.creation_timestamp, dt.datetime)
    assert created.metadata.generation is None  # the API server does not track it for Secrets
    assert core.read_namespaced_secret("cacerts", NS).metadata.uid == created.metadata.uid
    core.create_namespaced_secret(NS, secret("other"))
    assert [s.metadata.name for s in core.list_namespaced_secret(NS).items] == ["cacerts", "other"]
    assert [s.metadata.name for s in core.list_namespaced_secret(NS, label_selector="app=x").items] == ["cacerts"]
    assert [s.metadata.name for s in core.list_namespaced_secret(NS, label_selector="!app").items] == ["other"]
    assert core.list_namespaced_secret("elsewhere").items == []
    deleted = core.delete_namespaced_secret("cacerts", NS)
    # The client (37) hands a delete's Status back as a plain dict.
    assert deleted["status"] == "Success" and deleted["details"]["uid"] == created.metadata.uid
    exc, status = refused(core.read_namespaced_secret, "cacerts", NS)
    assert exc.status == 404 and status["reason"] == "NotFound"
    assert status["message"] == 'secrets "cacerts" not found'
    assert status["details"] == {"name": "cacerts", "kind": "secrets"}
    assert refused(core.delete_namespaced_secret, "cacerts", NS)[0].status == 404


def test_resource_version_is_one_counter_bumped_by_every_write(api, core):
    versions = [core.create_namespaced_secret(NS, secret()).metadata.resource_version,
                core.create_namespaced_config_map(NS, {"metadata": {"name": "coredns"}}).metadata.resource_version,
                client.CoordinationV1Api(api).create_namespaced_lease(NS, {"metadata": {"name": "galleon"}})
                .metadata.resource_version]
    core.delete_namespaced_config_map("coredns", NS)
    versions.append(core.patch_namespaced_secret("cacerts", NS, {"metadata": {"labels": {"a": "b"}}})
                    .metadata.resource_version)
    assert versions == ["1", "2", "3", "5"]
    assert core.list_namespaced_secret(NS).metadata.resource_version == "5"


def test_create_of_an_existing_name_is_already_exists(core):
    core.create_namespaced_secret(NS, secret())
    exc, status = refused(core.create_namespaced_secret, NS, secret())
    assert exc.status == 409 and status["reason"] == "AlreadyExists"
    assert status["message"] == 'secrets "cacerts" already exists'


def test_create_carrying_a_resource_version_is_refused(core):
    body = secret()
    body["metadata"]["resourceVersion"] = "7"
    exc, status = refused(core.create_namespaced_secret, NS, body)
    assert exc.status == 500 and status["reason"] == "InternalError"


def test_replace_needs_the_current_resource_version(core):
    read = core.create_namespaced_secret(NS, secret(data={"a": b64("1")}))
    read.data = {"a": b64("2")}
    replaced = core.replace_namespaced_secret("cacerts", NS, read)
    assert int(replaced.metadata.resource_version) > int(read.metadata.resource_version)
    assert replaced.metadata.uid == read.metadata.uid
    read.data = {"a": b64("3")}  # still carries the old resourceVersion
    exc, status = refused(core.replace_namespaced_secret, "cacerts", NS, read)
    assert exc.status == 409 and status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    assert core.read_namespaced_secret("cacerts", NS).data == {"a": b64("2")}
    # Without a resourceVersion the update is unconditional.
    read.metadata.resource_version = None
    assert core.replace_namespaced_secret("cacerts", NS, read).data == {"a": b64("3")}


def test_replace_of_a_missing_object_is_not_found(core):
    exc, status = refused(core.replace_namespaced_secret, "cacerts", NS, secret())
    assert exc.status == 404 and status["reason"] == "NotFound"


@pytest.mark.parametrize("body, says", [
    (secret("other"), "does not match the name on the URL"),
    (secret(metadata={"name": "cacerts", "namespace": "default"}), "does not match the namespace"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cacerts"}}, "cannot be handled as a Secret"),
])
def test_replace_with_a_body_for_another_object_is_a_bad_request(core, body, says):
    core.create_namespaced_secret(NS, secret())
    exc, status = refused(core.replace_namespaced_secret, "cacerts", NS, body)
    assert exc.status == 400 and status["reason"] == "BadRequest" and says in status["message"]


@pytest.mark.parametrize("create, field", [
    (lambda core: core.create_namespaced_secret(NS, secret("Not_A_Name")), "metadata.name"),
    (lambda core: core.create_namespaced_secret(NS, secret(data={"a/b": b64("x")})), "data[a/b]"),
    (lambda core: core.create_namespaced_config_map(NS, {"metadata": {"name": "c", "labels": {"k": "-bad-"}}}),
     "metadata.labels"),
    (lambda core: core.create_namespaced_secret(NS, secret(type="kubernetes.io/tls", data={"tls.crt": ""})),
     "data[tls.key]"),
])
def test_invalid_objects_are_refused_with_their_field(core, create, field):
    exc, status = refused(create, core)
    assert exc.status == 422 and status["reason"] == "Invalid"
    assert [c["field"] for c in status["details"]["causes"]] == [field]


def test_undecodable_data_is_a_bad_request(core):
    exc, status = refused(core.create_namespaced_secret, NS, secret(data={"a": "not base64!"}))
    assert exc.status == 400 and "illegal base64" in status["message"]


def test_immutable_secrets_and_secret_types_do_not_change(core):
    core.create_namespaced_secret(NS, secret(data={"a": b64("1")}, immutable=True))
    exc, status = refused(core.patch_namespaced_secret, "cacerts", NS, {"data": {"a": b64("2")}})
    assert exc.status == 422 and status["details"]["causes"][0]["field"] == "data"
    assert core.patch_namespaced_secret("cacerts", NS, {"metadata": {"labels": {"ok": "yes"}}})
    exc, _ = refused(core.patch_namespaced_secret, "cacerts", NS, {"type": "kubernetes.io/basic-auth"})
    assert exc.status == 422


def test_merge_and_strategic_merge_patches(core):
    core.create_namespaced_config_map(NS, {"metadata": {"name": "coredns", "labels": {"a": "1", "b": "2"}},
                                           "data": {"Corefile": ".:53 {}"}})
    merged = core.patch_namespaced_config_map(
        "coredns", NS, {"metadata": {"labels": {"b": None, "c": "3"}}, "data": {"extra": "x"}},
        _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"a": "1", "c": "3"}
    assert merged.data == {"Corefile": ".:53 {}", "extra": "x"}
    # The client sends a dict as a strategic merge patch; for these kinds it merges the same way.
    strategic = core.patch_namespaced_config_map("coredns", NS, {"data": {"extra": None}})
    assert strategic.data == {"Corefile": ".:53 {}"}
    stale = {"metadata": {"resourceVersion": merged.metadata.resource_version}, "data": {"x": "y"}}
    exc, status = refused(core.patch_namespaced_config_map, "coredns", NS, stale)
    assert exc.status == 409 and status["reason"] == "Conflict"
    assert refused(core.patch_namespaced_config_map, "missing", NS, {"data": {}})[0].status == 404


def test_json_patch_is_refused_loudly(core):
    core.create_namespaced_secret(NS, secret())
    exc, _ = refused(core.patch_namespaced_secret, "cacerts", NS, [{"op": "remove", "path": "/data"}])
    assert exc.status == 415


def apply(core, body: dict, manager: str = "galleon", **kwargs):
    return core.patch_namespaced_secret(body["metadata"]["name"], NS, body, field_manager=manager,
                                        _content_type="application/apply-patch+yaml", **kwargs)


def test_server_side_apply_creates_updates_and_prunes(core):
    first = apply(core, secret(metadata={"name": "cacerts", "labels": {"app.kubernetes.io/managed-by": "galleon"}},
                               data={"ca-cert.pem": b64("A"), "ca-key.pem": b64("K")}))
    assert first.metadata.resource_version == "1"
    assert [(m.manager, m.operation) for m in first.metadata.managed_fields] == [("galleon", "Apply")]
    assert first.metadata.managed_fields[0].fields_v1["f:data"] == {"f:ca-cert.pem": {}, "f:ca-key.pem": {}}
    # Another writer's field survives Galleon's next apply; a field Galleon stops applying goes.
    core.patch_namespaced_secret("cacerts", NS, {"metadata": {"annotations": {"theirs": "kept"}}})
    second = apply(core, secret(metadata={"name": "cacerts"}, data={"ca-cert.pem": b64("B")}))
    assert second.data == {"ca-cert.pem": b64("B")}
    assert second.metadata.annotations == {"theirs": "kept"}
    assert second.metadata.labels is None
    assert second.metadata.uid == first.metadata.uid


def test_server_side_apply_conflicts_between_managers(core):
    apply(core, secret(data={"a": b64("1")}), manager="galleon")
    exc, status = refused(apply, core, secret(data={"a": b64("2")}), manager="someone-else")
    assert exc.status == 409 and status["reason"] == "Conflict"
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "galleon"', "field": ".data.a"}]
    # The same value is no conflict (shared ownership); force takes the field over.
    apply(core, secret(data={"a": b64("1")}), manager="someone-else")
    forced = apply(core, secret(data={"a": b64("2")}), manager="someone-else", force=True)
    assert forced.data == {"a": b64("2")}


def test_server_side_apply_needs_a_field_manager(core):
    exc, status = refused(core.patch_namespaced_secret, "cacerts", NS, secret(),
                          _content_type="application/apply-patch+yaml")
    assert exc.status == 422 and "fieldManager" in status["message"]


def test_dry_run_stores_nothing(core):
    answer = core.create_namespaced_secret(NS, secret(), dry_run="All")
    assert answer.metadata.name == "cacerts"
    assert core.list_namespaced_secret(NS).items == []


def test_delete_preconditions(core):
    created = core.create_namespaced_secret(NS, secret())
    exc, _ = refused(core.delete_namespaced_secret, "cacerts", NS,
                     body={"preconditions": {"resourceVersion": "999"}})
    assert exc.status == 409
    core.delete_namespaced_secret("cacerts", NS, body={"preconditions": {"uid": created.metadata.uid}})


def test_lease_times_are_micro_times_and_durations_positive(api, standin):
    leases = client.CoordinationV1Api(api)
    now = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    lease = leases.create_namespaced_lease(NS, client.V1Lease(
        metadata=client.V1ObjectMeta(name="galleon"),
        spec=client.V1LeaseSpec(holder_identity="a", renew_time=now, lease_duration_seconds=15)))
    assert lease.spec.renew_time == now
    assert standin.get("leases", NS, "galleon")["spec"]["renewTime"] == "2030-01-02T01:04:05.678901Z"
    lease.spec.lease_duration_seconds = 0
    exc, status = refused(leases.replace_namespaced_lease, "galleon", NS, lease)
    assert exc.status == 422 and status["details"]["causes"][0]["field"] == "spec.leaseDurationSeconds"
    assert status["message"].startswith('Lease "galleon" is invalid')


def test_injected_failures_answer_the_next_matching_requests(core, standin):
    core.create_namespaced_secret(NS, secret())
    standin.fail(method="GET", path_contains="/secrets/cacerts", status=503, times=2)
    for _ in range(2):
        exc, status = refused(core.read_namespaced_secret, "cacerts", NS)
        assert exc.status == 503 and status["reason"] == "ServiceUnavailable"
    assert core.read_namespaced_secret("cacerts", NS).metadata.name == "cacerts"
    standin.fail(method="PUT", status=409)
    exc, _ = refused(core.replace_namespaced_secret, "cacerts", NS, secret())
    assert exc.status == 409
    assert [(r.method, r.status) for r in standin.requests] == [
        ("POST", 201), ("GET", 503), ("GET", 503), ("GET", 200), ("PUT", 409)]


def test_failures_until_cleared(core, standin):
    standin.fail(path_contains="fieldManager=galleon", status=500, times=None)
    for _ in range(3):
        assert refused(apply, core, secret())[0].status == 500
    assert core.create_namespaced_secret(NS, secret())  # other requests pass
    standin.clear_faults()
    assert apply(core, secret()).metadata.name == "cacerts"


def test_a_delayed_write_times_the_client_out_and_still_happens(standin, tmp_path):
    configuration = client.Configuration()
    config.load_kube_config(str(standin.write_kubeconfig(tmp_path / "kubeconfig")),
                            client_configuration=configuration, persist_config=False)
    configuration.retries = False  # the point is what one timed-out request leaves behind
    core = client.CoreV1Api(client.ApiClient(configuration))
    standin.delay(0.5, method="POST")
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.create_namespaced_secret(NS, secret(), _request_timeout=0.1)
    assert time.monotonic() - started < 0.4
    assert core.list_namespaced_secret(NS).items == []  # not processed yet
    while standin.get("secrets", NS, "cacerts") is None and time.monotonic() - started < 5:
        time.sleep(0.02)
    assert core.read_namespaced_secret("cacerts", NS).metadata.resource_version == "1"


def test_edits_from_outside_bump_the_resource_version(core, standin):
    read = core.create_namespaced_config_map(NS, {"metadata": {"name": "coredns"}, "data": {"Corefile": "a"}})
    edited = standin.edit("configmaps", NS, "coredns", lambda cm: cm["data"].update(Corefile="b"))
    assert int(edited["metadata"]["resourceVersion"]) > int(read.metadata.resource_version)
    read.data = {"Corefile": "c"}
    assert refused(core.replace_namespaced_config_map, "coredns", NS, read)[0].status == 409
    assert core.read_namespaced_config_map("coredns", NS).data == {"Corefile": "b"}
    standin.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seeded", "namespace": NS}})
    assert core.read_namespaced_config_map("seeded", NS).metadata.uid


def test_unknown_resources_are_not_found(api):
    exc, status = refused(client.CoreV1Api(api).read_namespaced_pod, "p", NS)
    assert exc.status == 404 and status["reason"] == "NotFound"


def test_one_kubeconfig_for_several_standins(tmp_path):
    with KubeStandIn() as a, KubeStandIn() as b:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"cluster-a": a, "cluster-b": b, "cluster-c": a})
        assert config.list_kube_config_contexts(str(kubeconfig))[1]["name"] == "cluster-a"
        cores = {name: client.CoreV1Api(config.new_client_from_config(str(kubeconfig), context=name,
                                                                      persist_config=False))
                 for name in ("cluster-a", "cluster-b", "cluster-c")}
        cores["cluster-a"].create_namespaced_secret(NS, secret())
        assert cores["cluster-c"].read_namespaced_secret("cacerts", NS)  # the same stand-in
        assert refused(cores["cluster-b"].read_namespaced_secret, "cacerts", NS)[0].status == 404
        assert len(a.requests) == 2 and len(b.requests) == 1
