"""The Kubernetes API stand-in (tests/kube/standin.py) keeps the API server's rules.

kube-apiserver cannot be installed here; these tests pin down, through the official client only
(CoreV1Api, CoordinationV1Api, DiscoveryV1Api, AuthenticationV1Api, its ``watch`` module and its raw
``_preload_content=False`` responses), the rules the stand-in enforces, so that tests of Galleon's
cluster writes and registry reads against it mean something.
"""
from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import time

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.kube.standin import API_AUDIENCE, KubeStandIn, write_kubeconfig

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
    exc, status = refused(client.AppsV1Api(api).read_namespaced_deployment, "d", NS)
    assert exc.status == 404 and status["reason"] == "NotFound"
    assert status["message"] == "the server could not find the requested resource"


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


# ---- the registry's kinds, lists and watches --------------------------------------------------

def pod(name: str, namespace: str = NS, **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels}}


def watch_events(resp):
    """The events of a raw watch response (``_preload_content=False``), as they arrive."""
    buffer = b""
    for chunk in resp.stream(None):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield json.loads(line)


def open_watch(list_call, *args, **kwargs):
    """A raw watch (the response, its events) through the client's list call."""
    resp = list_call(*args, watch=True, _preload_content=False, _request_timeout=(5, 5), **kwargs)
    return resp, watch_events(resp)


def test_registry_kinds_at_the_api_servers_paths(api, core):
    discovery = client.DiscoveryV1Api(api)
    core.create_namespace({"metadata": {"name": "shop", "namespace": "ignored"}})
    core.create_node({"metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "z1"}}})
    core.create_namespaced_service("shop", {"metadata": {"name": "cart"}, "spec": {"ports": [{"port": 80}]}})
    for namespace in ("shop", NS):
        core.create_namespaced_pod(namespace, pod("web", namespace, app="web"))
    discovery.create_namespaced_endpoint_slice("shop", {
        "metadata": {"name": "cart-1", "labels": {"kubernetes.io/service-name": "cart"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]})
    namespace = core.read_namespace("shop")
    # Cluster-scoped: no namespace kept; the API server's defaults.
    assert namespace.metadata.namespace is None and namespace.status.phase == "Active"
    assert namespace.spec.finalizers == ["kubernetes"]
    assert core.read_node("node-1").metadata.labels == {"topology.kubernetes.io/zone": "z1"}
    assert [(p.metadata.namespace, p.metadata.name) for p in core.list_pod_for_all_namespaces().items] == [
        (NS, "web"), ("shop", "web")]
    assert [s.metadata.name for s in core.list_service_for_all_namespaces().items] == ["cart"]
    assert [s.endpoints[0].addresses for s in discovery.list_endpoint_slice_for_all_namespaces().items] == [
        ["10.0.0.1"]]
    assert [n.metadata.name for n in core.list_node().items] == ["node-1"]
    assert [n.metadata.name for n in core.list_namespace().items] == ["shop"]
    patched = core.patch_node("node-1", {"metadata": {"labels": {"role": "edge"}}})
    assert patched.metadata.labels == {"topology.kubernetes.io/zone": "z1", "role": "edge"}
    core.delete_node("node-1")
    assert core.list_node().items == []


@pytest.mark.parametrize("create, field", [
    (lambda api: client.CoreV1Api(api).create_namespaced_service(NS, {"metadata": {"name": "1st"}}), "metadata.name"),
    (lambda api: client.CoreV1Api(api).create_namespace({"metadata": {"name": "a.b"}}), "metadata.name"),
    (lambda api: client.CoreV1Api(api).create_node({"metadata": {"name": "Node_1"}}), "metadata.name"),
    (lambda api: client.CoreV1Api(api).create_namespaced_pod(NS, pod("p", app="-x-")), "metadata.labels"),
    (lambda api: client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
        NS, {"metadata": {"name": "s"}, "addressType": "IPv5", "endpoints": []}), "addressType"),
])
def test_registry_kinds_are_validated(api, create, field):
    exc, status = refused(create, api)
    assert exc.status == 422 and [c["field"] for c in status["details"]["causes"]] == [field]


def test_an_endpoint_slice_needs_an_address_type_that_never_changes(api, standin):
    discovery = client.DiscoveryV1Api(api)
    # The client's model refuses a slice without addressType itself: send the raw request.
    standin.put({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                 "metadata": {"name": "s", "namespace": NS}, "endpoints": []})
    exc, status = refused(discovery.patch_namespaced_endpoint_slice, "s", NS, {"addressType": "IPv6"})
    assert exc.status == 422 and "field is immutable" in status["message"]
    exc, status = refused(discovery.patch_namespaced_endpoint_slice, "s", NS, {"addressType": None})
    assert status["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "addressType"}]


@pytest.mark.parametrize("path", ["/api/v1/pods/web", "/api/v1/namespaces/shop/nodes", "/apis/apps/v1/deployments",
                                  "/api/v1/namespaces/shop/pods/web/status"])
def test_paths_outside_what_is_served_are_not_found(standin, path):
    response = urllib3.request("GET", standin.url + path)
    assert response.status == 404 and response.json()["reason"] == "NotFound"


def test_deleting_a_namespace_deletes_everything_in_it(core, standin):
    core.create_namespace({"metadata": {"name": "shop"}})
    for name in ("a", "b"):
        core.create_namespaced_pod("shop", pod(name, "shop"))
    core.create_namespaced_service("shop", {"metadata": {"name": "cart"}})
    core.create_namespaced_pod(NS, pod("elsewhere"))
    version = core.list_pod_for_all_namespaces().metadata.resource_version
    _, events = open_watch(core.list_pod_for_all_namespaces, resource_version=version)
    core.delete_namespace("shop")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in itertools.islice(events, 2)] == [
        ("DELETED", "a"), ("DELETED", "b")]
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces().items] == ["elsewhere"]
    assert core.list_service_for_all_namespaces().items == []
    assert refused(core.read_namespace, "shop")[0].status == 404


def test_a_paged_list_is_the_state_of_its_first_page(core):
    for i in range(5):
        core.create_namespaced_pod(NS, pod(f"p{i}"))
    first = core.list_namespaced_pod(NS, limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.resource_version == "5" and first.metadata.remaining_item_count == 3
    # Changes after the first page are not in the next pages (etcd's consistent continue).
    core.delete_namespaced_pod("p3", NS)
    core.create_namespaced_pod(NS, pod("p5"))
    second = core.list_namespaced_pod(NS, limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["p2", "p3"]
    assert second.metadata.resource_version == "5"
    last = core.list_namespaced_pod(NS, limit=2, _continue=second.metadata._continue)
    assert [p.metadata.name for p in last.items] == ["p4"] and last.metadata._continue is None
    assert [p.metadata.name for p in core.list_namespaced_pod(NS).items] == ["p0", "p1", "p2", "p4", "p5"]


def test_list_items_lack_kind_and_api_version_and_selectors_filter(core):
    core.create_namespaced_pod(NS, pod("a", app="web"))
    core.create_namespaced_pod("other", pod("b", "other", app="web"))
    core.create_namespaced_pod(NS, pod("c", app="db"))
    raw = json.loads(core.list_pod_for_all_namespaces(label_selector="app=web", _preload_content=False).data)
    assert raw["kind"] == "PodList" and raw["apiVersion"] == "v1"
    assert [(i["metadata"]["name"], "kind" in i, "apiVersion" in i) for i in raw["items"]] == [
        ("a", False, False), ("b", False, False)]
    # Versions to serve from are accepted; the current state satisfies them.
    answer = core.list_pod_for_all_namespaces(resource_version="0", resource_version_match="NotOlderThan")
    assert answer.metadata.resource_version == "3" and len(answer.items) == 3


def test_a_forgotten_continue_token_is_410_expired(core, standin):
    for i in range(3):
        core.create_namespaced_pod(NS, pod(f"p{i}"))
    token = core.list_namespaced_pod(NS, limit=1).metadata._continue
    standin.compact()
    exc, status = refused(core.list_namespaced_pod, NS, limit=1, _continue=token)
    assert exc.status == 410 and status["reason"] == "Expired"
    assert refused(core.list_namespaced_pod, NS, _continue="not-a-token")[0].status == 400
    token = core.list_namespaced_pod(NS, limit=1).metadata._continue
    assert refused(core.list_namespaced_pod, NS, _continue=token, resource_version="3")[0].status == 400


def test_a_watch_streams_changes_after_its_resource_version_as_chunked_json_lines(core, standin):
    created = core.create_namespaced_pod(NS, pod("a"))
    resp, events = open_watch(core.list_namespaced_pod, NS, resource_version=created.metadata.resource_version)
    assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
    core.create_namespaced_pod(NS, pod("b"))
    core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"app": "web"}}})
    core.delete_namespaced_pod("b", NS)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "not-a-pod"}})
    core.create_namespaced_pod("other", pod("elsewhere", "other"))
    seen = [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
            for e in itertools.islice(events, 3)]
    # A deleted object comes as its last state, with the deletion's resourceVersion.
    assert seen == [("ADDED", "Pod", "b", "2"), ("MODIFIED", "Pod", "a", "3"), ("DELETED", "Pod", "b", "4")]


def test_a_watch_without_a_resource_version_starts_with_the_current_state(core):
    core.create_namespaced_pod(NS, pod("a"))
    core.create_namespaced_pod(NS, pod("b"))
    for version in (None, "0"):
        _, events = open_watch(core.list_namespaced_pod, NS, resource_version=version)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in itertools.islice(events, 2)] == [
            ("ADDED", "a"), ("ADDED", "b")]


def test_a_watch_with_a_label_selector_sees_objects_come_and_go_as_labels_change(core):
    core.create_namespaced_pod(NS, pod("a", app="db"))
    _, events = open_watch(core.list_namespaced_pod, NS, resource_version="1", label_selector="app=web")
    core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"app": "web"}}})
    core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"tier": "1"}}})
    core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"app": "db"}}})
    core.delete_namespaced_pod("a", NS)
    core.create_namespaced_pod(NS, pod("b", app="web"))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in itertools.islice(events, 4)] == [
        ("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a"), ("ADDED", "b")]


def test_bookmarks_when_allowed_periodically_and_on_demand(core, standin):
    _, quiet = open_watch(core.list_namespaced_pod, NS, resource_version="0", timeout_seconds=1)
    _, events = open_watch(core.list_namespaced_pod, NS, resource_version="0", allow_watch_bookmarks=True)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "elsewhere"}})
    standin.bookmark()
    # Other kinds' writes move the version a bookmark carries: the watch has seen up to there.
    assert next(events) == {"type": "BOOKMARK", "object": {
        "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}}}
    standin.bookmark_interval = 0.05
    _, events = open_watch(core.list_namespaced_pod, NS, resource_version="1", allow_watch_bookmarks=True)
    assert [e["type"] for e in itertools.islice(events, 2)] == ["BOOKMARK", "BOOKMARK"]
    assert list(quiet) == []  # no bookmarks unless allowed; the timeout ended it


def test_a_watch_ends_cleanly_at_its_timeout(core):
    started = time.monotonic()
    assert list(watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=1)) == []
    assert 0.9 < time.monotonic() - started < 2


def test_a_watch_from_before_the_history_is_gone_inside_its_stream(core, standin):
    standin.history = 3
    for i in range(5):
        core.create_namespaced_pod(NS, pod(f"p{i}"))
    resp, events = open_watch(core.list_namespaced_pod, NS, resource_version="1")
    assert resp.status == 200
    assert list(events) == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 1 (3)", "reason": "Expired", "code": 410}}]
    # The official client raises it (with a timeout it does not retry).
    with pytest.raises(ApiException) as gone:
        list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version="1", timeout_seconds=1))
    assert gone.value.status == 410
    # From the oldest version the history reaches, the watch works.
    _, events = open_watch(core.list_namespaced_pod, NS, resource_version="2")
    assert [e["object"]["metadata"]["name"] for e in itertools.islice(events, 3)] == ["p2", "p3", "p4"]


def test_compaction_makes_every_older_watch_gone(core, standin):
    core.create_namespaced_pod(NS, pod("a"))
    core.create_namespaced_pod(NS, pod("b"))
    standin.compact()
    _, events = open_watch(core.list_namespaced_pod, NS, resource_version="1")
    assert next(events)["object"]["code"] == 410
    _, events = open_watch(core.list_namespaced_pod, NS, resource_version="2")
    core.create_namespaced_pod(NS, pod("c"))
    assert next(events)["object"]["metadata"]["name"] == "c"


def test_dropped_watches_end_without_their_last_chunk(core, standin):
    resp, events = open_watch(core.list_namespaced_pod, NS, resource_version="0")
    standin.drop_watches()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        list(events)
    core.create_namespaced_pod(NS, pod("a"))  # the stand-in serves on
    _, events = open_watch(core.list_namespaced_pod, NS, resource_version="0")
    assert next(events)["object"]["metadata"]["name"] == "a"


def test_faults_apply_to_lists_and_watches(core, standin):
    standin.fail(path_contains="watch=true", status=503)
    assert refused(core.list_namespaced_pod, NS, watch=True, _preload_content=False)[0].status == 503
    standin.delay(0.3, path_contains="/pods")
    started = time.monotonic()
    core.list_namespaced_pod(NS)
    assert time.monotonic() - started >= 0.3
    assert [(r.path, r.status) for r in standin.requests] == [(f"/api/v1/namespaces/{NS}/pods", 503),
                                                             (f"/api/v1/namespaces/{NS}/pods", 200)]


def test_a_stopped_server_refuses_connections_until_it_resumes_on_the_same_port(standin, tmp_path):
    configuration = client.Configuration()
    config.load_kube_config(str(standin.write_kubeconfig(tmp_path / "kubeconfig")),
                            client_configuration=configuration, persist_config=False)
    configuration.retries = False
    core = client.CoreV1Api(client.ApiClient(configuration))
    core.create_namespaced_pod(NS, pod("a"))
    _, events = open_watch(core.list_namespaced_pod, NS, resource_version="1")
    url = standin.url
    standin.stop_serving()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        list(events)
    with pytest.raises(urllib3.exceptions.NewConnectionError, match="Connection refused"):
        core.list_namespaced_pod(NS)
    standin.resume()
    assert standin.url == url
    assert [p.metadata.name for p in core.list_namespaced_pod(NS).items] == ["a"]


def test_a_required_token_refuses_requests_without_it(standin, tmp_path):
    def core_with(token):
        kubeconfig = standin.write_kubeconfig(tmp_path / f"kubeconfig-{token}", token=token)
        return client.CoreV1Api(config.new_client_from_config(str(kubeconfig), persist_config=False))
    standin.require_token("secret")
    exc, status = refused(core_with("wrong").list_namespaced_pod, NS)
    assert exc.status == 401 and status["reason"] == "Unauthorized" and status["message"] == "Unauthorized"
    assert core_with("secret").list_namespaced_pod(NS).items == []
    assert [r.status for r in standin.requests] == [401, 200]
    standin.require_token(None)
    assert core_with("wrong").list_namespaced_pod(NS).items == []


def test_token_review_names_the_service_account_of_a_known_token(api, standin):
    reviews = client.AuthenticationV1Api(api)
    standin.add_service_account_token("tok-1", "bookinfo", "reviews", audiences=("istio-ca", "other"))
    standin.add_service_account_token("tok-2", "bookinfo", "ratings", audiences=(API_AUDIENCE,))

    def review(token, audiences=None):
        answer, code, _ = reviews.create_token_review_with_http_info(
            {"spec": {"token": token, "audiences": audiences}}, _preload_content=True)
        assert code == 201
        return answer.status
    known = review("tok-1", ["istio-ca"])
    assert known.authenticated is True and known.audiences == ["istio-ca"] and known.error is None
    assert known.user.username == "system:serviceaccount:bookinfo:reviews"
    assert known.user.groups == ["system:serviceaccounts", "system:serviceaccounts:bookinfo", "system:authenticated"]
    assert review("tok-2").user.username == "system:serviceaccount:bookinfo:ratings"  # the API server's audience
    for token, audiences, says in (("unknown", ["istio-ca"], "invalid bearer token"),
                                   ("tok-2", ["istio-ca"], 'is invalid for the target audiences ["istio-ca"]')):
        status = review(token, audiences)
        assert not status.authenticated and says in status.error and status.user.username is None
    exc, status = refused(reviews.create_token_review, {"spec": {"token": ""}})
    assert exc.status == 400 and status["message"] == "token is required for TokenReview in authentication"
