"""What the live registries read, in the mesh (compiler/live.py, model.relisted, xds.update_endpoints):
objects labelled with their cluster, Node localities, pods that ServiceEntries select, and the
endpoint-only path, which must give exactly what building everything anew gives."""
from __future__ import annotations

import asyncio
import copy
import threading
import types
from pathlib import Path

import pytest

from compiler.live import Unreadable, live_object
from compiler.model import build_mesh, relisted
from compiler.revision import load
from compiler.view import make_view
from compiler.xds import compile_view, update_endpoints
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.conftest import snapshot_of

REPO = """\
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: east, namespace: istio-system}
spec: {network: net-1, locality: us-east/us-east-1a}
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: west, namespace: istio-system}
spec: {network: net-1, locality: us-west/us-west-1a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web.shop.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-global, namespace: shop}
spec:
  hosts: [web.shop.global]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: web}}
"""


def service(cluster: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop",
                                                                "resourceVersion": f"{cluster}-svc"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def pod(name: str, ip: str, version: str = "v1", ready: bool = True, node: str = "node-1", sa: str = "web",
        rv: str = "1") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv,
                         "labels": {"app": "web", "version": version, "security.istio.io/tlsMode": "istio"}},
            "spec": {"serviceAccountName": sa, "nodeName": node, "containers": [{"name": "web", "image": "web"}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def endpoint_slice(name: str, pods: list[tuple[str, str, bool]], rv: str = "1") -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": "web"}},
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node-1",
                           "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod_name}}
                          for pod_name, ip, ready in pods]}


def node(name: str, region: str, zone: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "resourceVersion": "1", "labels": {"topology.kubernetes.io/region": region,
                                                                         "topology.kubernetes.io/zone": zone}}}


def live(cluster: str, body: dict):
    return live_object(cluster, body, f"kube:{cluster}/{body['kind']}/{body['metadata']['name']}")


def running(east_pods, west_pods=()):
    """The live objects of both clusters: a Service each, a slice listing the pods, the pods, a Node."""
    objects = [live("east", service("east")), live("west", service("west")),
               live("east", node("node-1", "us-east", "us-east-1c")), live("west", node("node-1", "us-west", "us-west-1b"))]
    for cluster, pods in (("east", east_pods), ("west", west_pods)):
        objects.append(live(cluster, endpoint_slice("web-abc", [(p["metadata"]["name"], p["status"]["podIP"],
                                                                  True) for p in pods],
                                                    rv=str(len(pods)))))
        objects += [live(cluster, p) for p in pods]
    return objects


@pytest.fixture(scope="module")
def repo():
    loaded = load(snapshot_of({"mesh.yaml": REPO}))
    assert loaded.valid, [f.text() for f in loaded.findings]
    return loaded.objects


def assignments(mesh, cluster: str = "east"):
    compiled = compile_view(mesh, make_view(mesh, cluster))
    return {name: compiled.message(ENDPOINT, name) for name in compiled.resources[ENDPOINT]}


def test_a_live_object_is_labelled_with_its_cluster_and_checked():
    obj = live("east", pod("web-1", "10.0.0.1"))
    assert obj.labels["topology.istio.io/cluster"] == "east" and obj.key[-1] == "east"
    assert obj.digest.endswith("east@1")
    with pytest.raises(Unreadable, match="ports"):
        live("east", {**service("east"), "spec": {"ports": "80"}})
    with pytest.raises(Unreadable, match="not a kind"):
        live("east", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})


def test_a_field_the_api_server_writes_as_null_is_not_set():
    """The API server writes an empty list whose field has no omitempty as null: an EndpointSlice of a
    Service without endpoints comes as ``endpoints: null``, and may have ``ports: null``."""
    empty = {**endpoint_slice("web-abc", []), "endpoints": None, "ports": None}
    assert "endpoints" not in live("east", empty).body and "ports" not in live("east", empty).body
    unlabelled = pod("web-1", "10.0.0.1")
    unlabelled["metadata"] = {**unlabelled["metadata"], "labels": None}
    assert live("east", unlabelled).labels == {"topology.istio.io/cluster": "east"}


@pytest.mark.parametrize("body, says", [
    # what its API server would refuse: found before the object reaches a mesh, a view or Envoy
    (node("node-1", "us-east", 123), r"^\.metadata\.labels\.topology\.kubernetes\.io/zone: expected a string, got 123$"),
    ({**pod("web-1", "10.0.0.1"), "metadata": {"name": "web-1", "namespace": "shop", "labels": ["app"]}},
     r"^\.metadata\.labels: expected a mapping, got list$"),
    (pod("web-1", "999.0.0.1"), r"^\.status\.podIP: podIP '999\.0\.0\.1' is not an IP address$"),
    ({**pod("web-1", "10.0.0.1"), "status": {"podIP": 7}}, r"^\.status\.podIP: expected a string"),
    (endpoint_slice("web-abc", [("web-1", "fd00::1", True)]),
     r"^\.endpoints\[0\]\.addresses\[0\]: address 'fd00::1' is not an IPv4 address \(the slice's addressType\)$"),
    ({**service("east"), "spec": {**service("east")["spec"], "clusterIP": "web"}}, r"clusterIP 'web' is not an IP"),
])
def test_a_live_object_its_api_server_would_refuse_is_unreadable(body, says):
    with pytest.raises(Unreadable, match=says):
        live("east", body)


def test_pods_take_their_nodes_locality(repo):
    mesh = build_mesh(repo + running([pod("web-1", "10.0.0.1")], [pod("web-2", "10.1.0.1")]))
    endpoints = {ep.address: ep for ep in mesh.services["web.shop.svc.cluster.local"].endpoints}
    assert str(endpoints["10.0.0.1"].locality) == "us-east/us-east-1c"
    assert str(endpoints["10.1.0.1"].locality) == "us-west/us-west-1b"
    assert endpoints["10.0.0.1"].cluster == "east" and endpoints["10.0.0.1"].service_account == "web"


def test_a_service_entry_selects_the_ready_pods_of_every_cluster(repo):
    mesh = build_mesh(repo + running([pod("web-1", "10.0.0.1"), pod("web-3", "10.0.0.3", ready=False)],
                                     [pod("web-2", "10.1.0.1")]))
    selected = mesh.services["web.shop.global"].endpoints
    assert sorted((ep.address, ep.cluster) for ep in selected) == [("10.0.0.1", "east"), ("10.1.0.1", "west")]
    cla = assignments(mesh)["outbound|80||web.shop.global"]
    ports = {lb.endpoint.address.socket_address.port_value for group in cla.endpoints for lb in group.lb_endpoints}
    assert ports == {8080}  # the entry's target port


CHANGES = {
    "pod added": lambda e: (e + [pod("web-9", "10.0.0.9", version="v2")], True),
    "pod gone": lambda e: (e[:1], True),
    "pod relabelled": lambda e: ([e[0], {**e[1], "metadata": {**e[1]["metadata"], "resourceVersion": "7",
                                                              "labels": {**e[1]["metadata"]["labels"],
                                                                         "version": "v2"}}}], True),
    "new identity": lambda e: (e + [pod("web-8", "10.0.0.8", sa="other")], False),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_relisted_is_a_mesh_built_anew(repo, change):
    before_pods = [pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2")]
    after_pods, endpoints_only = CHANGES[change](copy.deepcopy(before_pods))
    before_objects, after_objects = running(before_pods), running(after_pods)
    before = build_mesh(repo + before_objects)
    held = {o.key: o for o in before_objects}
    now = {o.key: o for o in after_objects}
    changed = [o for k, o in now.items() if k not in held or held[k].digest != o.digest]
    gone = [o for k, o in held.items() if k not in now]
    found = relisted(before, changed, gone)
    anew = build_mesh(repo + after_objects)
    assert "web.shop.svc.cluster.local" in found.hosts and "web.shop.global" in found.hosts
    assert found.endpoints_only is endpoints_only
    for cluster in ("east", "west"):
        view = make_view(anew, cluster)
        whole = compile_view(anew, view)
        previous = compile_view(before, view)
        # The relisted mesh compiles as the one built anew; when only endpoints changed, updating the
        # assignments of the previous compile gives it too.
        compiled = [compile_view(found.mesh, view)]
        if endpoints_only:
            compiled.append(update_endpoints(found.mesh, previous, found.hosts))
        for each in compiled:
            for url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
                assert {n: r.data for n, r in each.resources[url].items()} == \
                       {n: r.data for n, r in whole.resources[url].items()}, (change, cluster, url)


def test_a_slice_edited_to_name_another_service_feeds_the_one_it_named_no_more(repo):
    """An EndpointSlice's service-name label is its Service: edited (a slice managed by hand, or moved),
    its endpoints leave the Service it named, as in a mesh built anew; and edited back, return."""
    objects = running([pod("web-1", "10.0.0.1")], [pod("web-2", "10.1.0.1")])
    before = build_mesh(repo + objects)
    body = endpoint_slice("web-abc", [("web-1", "10.0.0.1", True)], rv="9")
    body["metadata"]["labels"]["kubernetes.io/service-name"] = "api"
    moved = live("east", body)
    east_slice = next(o for o in objects if o.kind == "EndpointSlice" and "east" in o.file)
    after = [moved if o is east_slice else o for o in objects]
    found = relisted(before, [moved], [])
    assert "web.shop.svc.cluster.local" in found.hosts
    assert assignments(found.mesh) == assignments(build_mesh(repo + after))
    assert "10.0.0.1" not in {ep.address for ep in found.mesh.services["web.shop.svc.cluster.local"].endpoints}
    back = live("east", endpoint_slice("web-abc", [("web-1", "10.0.0.1", True)], rv="10"))
    again = relisted(found.mesh, [back], [])
    assert assignments(again.mesh) == assignments(build_mesh(repo + [back if o is east_slice else o for o in objects]))
    assert "10.0.0.1" in {ep.address for ep in again.mesh.services["web.shop.svc.cluster.local"].endpoints}


def test_relisted_renews_exactly_the_services_a_change_may_feed():
    """A batch renews the services whose listings changed and those whose selector picks a changed Pod
    (old labels or new) in its namespace, found through an index rather than by trying every service:
    not a Service of another selector, nor one of another namespace; a ServiceEntry selecting every Pod
    of the namespace is among them. The result still compiles as a mesh built anew."""
    everything = """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: everything, namespace: shop}
spec:
  hosts: [everything.shop.global]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {}}
"""
    loaded = load(snapshot_of({"mesh.yaml": REPO + everything}))
    repo_objects = loaded.objects

    def other_service(name: str, namespace: str, app: str):
        body = service("east")
        body["metadata"] = {"name": name, "namespace": namespace, "resourceVersion": f"{namespace}-{name}"}
        body["spec"] = {**body["spec"], "selector": {"app": app}}
        return live("east", body)

    api_pod = pod("api-1", "10.0.0.50")
    api_pod["metadata"]["labels"] = {"app": "api"}
    extra = [other_service("api", "shop", "api"), other_service("web", "other", "web"), live("east", api_pod)]
    before_objects = running([pod("web-1", "10.0.0.1")]) + extra
    before = build_mesh(repo_objects + before_objects)
    added = live("east", pod("web-9", "10.0.0.9", version="v2"))
    found = relisted(before, [added], [])
    assert found.hosts == {"web.shop.svc.cluster.local", "web.shop.global", "everything.shop.global"}
    relabelled = copy.deepcopy(api_pod)
    relabelled["metadata"].update(resourceVersion="2", labels={"app": "web"})
    found = relisted(before, [live("east", relabelled)], [])  # picked by web's selectors now, by api's before
    assert found.hosts == {"api.shop.svc.cluster.local", "web.shop.svc.cluster.local", "web.shop.global",
                           "everything.shop.global"}
    anew = build_mesh(repo_objects + [o for o in before_objects if o.name != "api-1"] + [live("east", relabelled)])
    for cluster in ("east", "west"):
        view = make_view(anew, cluster)
        whole, compiled = compile_view(anew, view), compile_view(found.mesh, view)
        for url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
            assert {n: r.data for n, r in compiled.resources[url].items()} == \
                   {n: r.data for n, r in whole.resources[url].items()}, (cluster, url)


def test_update_endpoints_builds_only_the_assignments_of_the_hosts_given(repo):
    objects = running([pod("web-1", "10.0.0.1")])
    mesh = build_mesh(repo + objects)
    previous = compile_view(mesh, make_view(mesh, "east"))
    added = live("east", pod("web-2", "10.0.0.2"))
    slice_now = live("east", endpoint_slice("web-abc", [("web-1", "10.0.0.1", True), ("web-2", "10.0.0.2", True)],
                                            rv="2"))
    found = relisted(mesh, [added, slice_now], [])
    updated = update_endpoints(found.mesh, previous, found.hosts)
    for url in (CLUSTER, LISTENER, ROUTE):
        assert updated.resources[url] is previous.resources[url]  # not rebuilt: the same resources
    changed = {n for n, r in updated.resources[ENDPOINT].items() if previous.resources[ENDPOINT][n] is not r}
    assert changed == {"outbound|80||web.shop.svc.cluster.local", "outbound|80|v1|web.shop.svc.cluster.local",
                       "outbound|80||web.shop.global"}
    assert changed <= set(updated.rebuilt[ENDPOINT]) <= set(updated.resources[ENDPOINT])  # what it built again
    assert previous.rebuilt is None  # compiled whole


def test_views_updated_for_endpoints_find_what_changed_since_any_earlier_one(repo):
    """Views served one from the other for endpoint changes alone (update_endpoints) remember the
    assignments each update built again; what changed since a view several updates back (the one a
    lagging stream holds) is what comparing every resource finds: pods added, relabelled, gone, back."""
    from reconciler.ads.views import serve_view
    steps = [[pod("web-1", "10.0.0.1")],
             [pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2")],
             [pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2", version="v2", rv="2")],
             [pod("web-2", "10.0.0.2", version="v2", rv="2")],
             [pod("web-1", "10.0.0.1", rv="3"), pod("web-2", "10.0.0.2", version="v2", rv="2")]]
    fixed = [live("east", service("east")), live("east", node("node-1", "us-east", "us-east-1c"))]

    def objects(number: int) -> dict:
        pods = steps[number]
        listed = endpoint_slice("web-abc", [(p["metadata"]["name"], p["status"]["podIP"], True) for p in pods],
                                rv=f"s{number}")
        return {o.key: o for o in fixed + [live("east", listed)] + [live("east", p) for p in pods]}

    mesh = build_mesh(repo + list(objects(0).values()))
    view = make_view(mesh, "east")
    history = [serve_view(mesh, view)]
    for number in range(1, len(steps)):
        held, now = objects(number - 1), objects(number)
        found = relisted(mesh, [o for k, o in now.items() if k not in held or held[k].digest != o.digest],
                         [o for k, o in held.items() if k not in now])
        assert found.endpoints_only
        mesh = found.mesh
        history.append(serve_view(mesh, view, history[-1], found.hosts))
        assert history[-1].compiled.rebuilt is not None
    for j, later in enumerate(history):
        for base in history[:j]:
            mine, theirs = later.resources[ENDPOINT], base.resources[ENDPOINT]
            assert later.since(ENDPOINT, base) == (
                tuple(n for n, r in mine.items() if n not in theirs or theirs[n].version != r.version),
                tuple(n for n in theirs if n not in mine)), (j, base.serial)
            assert later._touched_since(ENDPOINT, base.serial) is not None, "found from the names rebuilt"
    assert history[3].since(ENDPOINT, history[1])[0], "web-2 relabelled, web-1 gone"


def made_by_galleon(obj: object) -> bool:
    """Whether ``obj`` is an instance, function or frame of Galleon's own code."""
    if isinstance(obj, types.FrameType):
        module = obj.f_globals.get("__name__", "")
    elif isinstance(obj, (types.FunctionType, types.MethodType)):
        module = getattr(obj, "__module__", "") or ""
    else:
        module = type(obj).__module__ or ""
    return module.split(".")[0] in ("compiler", "reconciler")


def test_relisting_and_serving_endpoints_make_no_cyclic_garbage(repo):
    """What runtime.settle_recent freezes after an endpoint publish (relisted meshes, their services and
    endpoints, served views) is freed by reference counting once replaced: none of it is a cycle, so
    freezing it between full settles keeps nothing that would otherwise be freed."""
    import gc
    from reconciler.ads.views import serve_view
    versions = [[pod("web-1", "10.0.0.1")], [pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2")]]
    fixed = [live("east", service("east")), live("east", node("node-1", "us-east", "us-east-1c"))]

    def objects(number: int) -> dict:
        pods = versions[number % 2]
        listed = endpoint_slice("web-abc", [(p["metadata"]["name"], p["status"]["podIP"], True) for p in pods],
                                rv=f"s{number}")
        return {o.key: o for o in fixed + [live("east", listed)] + [live("east", p) for p in pods]}

    gc.collect()
    gc.freeze()
    try:
        mesh = build_mesh(repo + list(objects(0).values()))
        view = make_view(mesh, "east")
        served = serve_view(mesh, view)
        for number in range(1, 12):
            held, now = objects(number - 1), objects(number)
            found = relisted(mesh, [o for k, o in now.items() if k not in held or held[k].digest != o.digest],
                             [o for k, o in held.items() if k not in now])
            mesh = found.mesh
            served = serve_view(mesh, view, served, found.hosts)
        del found, held, now
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        # Only Galleon's own objects count: another test's threads, still ending, may drop a cycle of
        # their own (a traceback's frames) while this runs.
        ours = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage if made_by_galleon(o)})
        assert not ours, ours
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.unfreeze()


def test_a_relisted_mesh_keeps_no_earlier_meshs_listings(repo):
    """Each mesh model.relisted makes has listings of its own (its index of every EndpointSlice and
    Pod): once a later mesh replaces it, nothing may keep them, else every publish's listings, and
    every object they index, stay for as long as the services renewed in it do not change again (at
    5,000 services under endpoint churn, the daemon's heap grew by hundreds of megabytes a minute).
    What a mesh built anew has, its services not read yet keep: at most one such."""
    import gc
    from compiler.model import Listings

    def kube_service(name: str) -> dict:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"},
                "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}

    def listing(name: str, address: str, rv: str) -> dict:
        body = endpoint_slice(f"{name}-abc", [(f"{name}-pod", address, True)], rv=rv)
        body["metadata"]["labels"]["kubernetes.io/service-name"] = name
        return body

    names = [f"svc-{k}" for k in range(8)]
    mesh = build_mesh(repo + [live("east", node("node-1", "us-east", "us-east-1c"))]
                      + [live("east", kube_service(name)) for name in names]
                      + [live("east", listing(name, f"10.0.0.{k}", "1")) for k, name in enumerate(names)])
    for k, name in enumerate(names):  # each service's endpoints change once, in a publish of its own
        mesh = relisted(mesh, [live("east", listing(name, f"10.0.1.{k}", "2"))], []).mesh
    gc.collect()
    others = [o for o in gc.get_objects() if type(o) is Listings and o is not mesh.listings]
    assert len(others) <= 1, f"{len(others)} earlier meshes' listings kept"
    assert [ep.address for ep in mesh.services["svc-3.shop.svc.cluster.local"].endpoints] == ["10.0.1.3"]


def test_no_process_wide_memo_keeps_the_address_of_a_pod_gone(repo):
    """A live registry's pods come and go, each with an address of its own. What the compiler keeps for
    the whole process (cache.Memo) must not hold them, else the daemon's memory follows every address
    it ever served, not the mesh it serves; what is kept with a mesh goes with the mesh."""
    import gc
    from compiler import cache

    gone = "10.9.0.1"
    mesh = build_mesh(repo + running([pod("web-1", gone)]))
    assert "outbound|80||web.shop.svc.cluster.local" in assignments(mesh)  # its endpoint was serialized
    now = relisted(mesh, [live("east", pod("web-2", "10.9.0.2")),
                          live("east", endpoint_slice("web-abc", [("web-2", "10.9.0.2", True)], rv="2"))],
                   [live("east", pod("web-1", gone))]).mesh
    served = assignments(now)["outbound|80||web.shop.svc.cluster.local"]
    assert [lb.endpoint.address.socket_address.address for group in served.endpoints
            for lb in group.lb_endpoints] == ["10.9.0.2"]
    del mesh, now
    gc.collect()

    def holds(value) -> bool:
        if isinstance(value, tuple):
            return any(holds(part) for part in value)
        return value == gone or (isinstance(value, bytes) and gone.encode() in value)

    memos = [m for m in vars(cache).values() if isinstance(m, cache.Memo)]
    assert memos
    kept = [(m.name, key) for m in memos for key, value in m._values.items() if holds(key) or holds(value)]
    assert not kept, f"process-wide memos keep a pod's address after its meshes are gone: {kept}"


def test_a_preview_over_live_endpoints_says_so(repo):
    from compiler.revision import with_live
    from reconciler.preview import preview_of, render_json, render_markdown
    loaded = load(snapshot_of({"mesh.yaml": REPO}))
    base = with_live(loaded, running([pod("web-1", "10.0.0.1")], [pod("web-2", "10.1.0.1")]))
    head = with_live(load(snapshot_of({"mesh.yaml": REPO.replace("name: v2, labels: {version: v2}",
                                                                  "name: v3, labels: {version: v3}")}), loaded),
                     base.live)
    preview = preview_of(base, head, [])
    assert preview.live() == {"clusters": ["east", "west"], "endpoints": 2, "objects": len(base.live), "stale": {}}
    assert "over the **live endpoints** the daemon's registries read now (2 endpoints in east, west)" in \
        render_markdown(preview) and '"live"' in render_json(preview)
    assert "live endpoints" not in render_markdown(preview_of(loaded, loaded, []))
    # a cluster that cannot be read now: its endpoints are those it last listed, and the preview says so
    preview.stale = {"west": "west: API server https://west:6443 unreachable"}
    assert ("> **west cannot be read now** (west: API server https://west:6443 unreachable): its endpoints are "
            "those it last listed.") in render_markdown(preview)
    # the CLI's own comparison after the daemon could not give one: not over live endpoints, and says so
    local = preview_of(loaded, loaded, [])
    local.not_live = "galleon serve at 127.0.0.1:15010 serves 1b82c3d4e5f6, not BASE 0a1b2c3d4e5f"
    assert ("> galleon serve at 127.0.0.1:15010 serves 1b82c3d4e5f6, not BASE 0a1b2c3d4e5f: endpoints and traffic "
            "shares are computed here, over the endpoints the repository writes alone") in render_markdown(local)


def test_relisted_gives_the_per_service_objects_a_mesh_built_anew_has(repo):
    before_objects = running([pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2")])
    mesh = build_mesh(repo + before_objects)
    added = live("east", pod("web-3", "10.0.0.3"))
    gone = next(o for o in before_objects if o.kind == "Pod" and o.name == "web-1")
    found = relisted(mesh, [added], [gone])
    anew = build_mesh([o for o in repo + before_objects if o is not gone] + [added])
    assert found.mesh.per_service_objects.by_digest.keys() == anew.per_service_objects.by_digest.keys()
    assert mesh.per_service_objects.by_digest.keys() == build_mesh(repo + before_objects).per_service_objects.by_digest.keys()
    assert gone.digest not in found.mesh.per_service_objects.by_digest


# A dir: registry's file changed lists its cluster again: each of its four kinds taken in bulk (and frozen).
LISTED = ["frozen"] * 4


@pytest.mark.parametrize("changed, old, new, expected", [
    ("cluster-a/Node/cluster-a-worker.yaml", "us-east-1a", "us-east-1b",
     LISTED + ["whole", "pushed, the collector paused", "frozen", "settle due?", "done"]),
    ("cluster-a/demo/EndpointSlice/hello-7xk2p.yaml", "zone: us-east-1a", "zone: us-east-1c",
     LISTED + ["relisted", "pushed", "settle recent", "done"]),
    ("source:demo/hello.yaml", "weight: 90", "weight: 80",
     ["pushed, the collector paused", "frozen", "settle due?"]),
])
def test_a_publish_leaves_the_heap_settled_once_pushed(tmp_path, monkeypatch, changed, old, new, expected):
    """A revision of the source (``source:`` a file of it) is published with its mesh built and compiled
    with the collector paused (runtime.bulk), and what that made frozen: a pass would only find it alive,
    stopping every thread for seconds on a large mesh (bench/registry.py). Once its streams are sent it,
    the daemon asks whether a full settle is due (reconciler/runtime.py). A Node changed (or a cluster
    listed) builds the mesh anew from every live object, the same way. An EndpointSlice changed is
    relisted, and what it made since the last settle is frozen (runtime.settle_recent), else the young
    generation grows unseen. The daemon runs in this process, under the daemon's collector policy, on
    copies of the sample repository (a directory source) and the sample registry, as `make run` does."""
    import gc
    import shutil
    from reconciler import runtime
    from reconciler.daemon import Daemon, RegistryOptions, ServeOptions
    from tests.conftest import SAMPLE_REPO
    registry, source = tmp_path / "registry", tmp_path / "source"
    shutil.copytree(SAMPLE_REPO.parent / "sample-registry", registry)
    shutil.copytree(SAMPLE_REPO, source)
    steps: list[str] = []
    monkeypatch.setattr(runtime, "settle", lambda: steps.append("settle"))

    def settle_recent() -> bool:
        steps.append("settle recent")
        return False  # no full settle due

    def settle_due() -> bool:
        steps.append("settle due?")
        return False

    freeze = gc.freeze

    def frozen() -> None:
        steps.append("frozen")
        freeze()

    monkeypatch.setattr(runtime, "settle_recent", settle_recent)
    monkeypatch.setattr(runtime, "settle_due", settle_due)
    monkeypatch.setattr(gc, "freeze", frozen)
    monkeypatch.setitem(runtime._policy, "chosen", "daemon")
    daemon = Daemon(ServeOptions(source=str(source), cluster="cluster-a", ads="127.0.0.1:0",
                                 http="127.0.0.1:0", state_dir=tmp_path / "state",
                                 registry=RegistryOptions((f"dir:{registry}",), quiet=0.05, max_wait=0.2)))
    publish, live_publish = daemon.ads.publish, daemon.live._publish

    async def recorded_publish(mesh, endpoints_of=None):
        await publish(mesh, endpoints_of)
        steps.append("pushed" if gc.isenabled() else "pushed, the collector paused")

    async def recorded_batch(batch):
        steps.append("whole" if batch.whole else "relisted")
        await live_publish(batch)
        steps.append("done")

    daemon.ads.publish, daemon.live._publish = recorded_publish, recorded_batch
    path = source / changed.removeprefix("source:") if changed.startswith("source:") else registry / changed

    async def main():
        running = asyncio.create_task(daemon.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not (daemon.loader.state.served_revision and all(c["synced"] for c in daemon.live.registry.status())
                   and daemon.live.registry.status()):
            assert loop.time() < deadline and not running.done(), "the daemon did not serve the registry"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        # (what a dir: registry read is said to be where its manifest is: findings and provenance name it)
        assert {str(Path(o.file).relative_to(registry)).split("/")[0] for o in daemon.live.objects()} == \
            {"cluster-a"}
        steps.clear()
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
        while len(steps) < len(expected):
            assert loop.time() < deadline and not running.done(), f"no publish: {steps}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # (nothing more comes)
        daemon.stop("test done")
        await asyncio.wait_for(running, 10)
        # stopped means stopped: no feed's thread runs on, dropping what it held while other work runs
        assert not [t.name for t in threading.enumerate() if t.name == f"registry dir:{registry}"]

    try:
        asyncio.run(main())
    finally:
        gc.unfreeze()
    assert steps == expected
    assert gc.isenabled()


def test_a_cluster_is_read_from_one_registry(tmp_path):
    """Two registries holding one cluster would undo each other's lists (whichever changed last wins):
    refused at start, with both named; a folder for it appearing later in the other is left alone."""
    import shutil
    from reconciler.daemon import Daemon, RegistryOptions, ServeOptions
    from reconciler.sources import SourceError
    from tests.conftest import SAMPLE_REPO
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(SAMPLE_REPO.parent / "sample-registry", one)
    shutil.copytree(SAMPLE_REPO.parent / "sample-registry", two)

    def daemon_of(*registries):
        return Daemon(ServeOptions(source=str(SAMPLE_REPO), cluster="cluster-a", ads="127.0.0.1:0",
                                   http="127.0.0.1:0", state_dir=tmp_path / "state",
                                   registry=RegistryOptions(tuple(f"dir:{r}" for r in registries))))

    daemon = daemon_of(one, two)
    with pytest.raises(SourceError, match=f"^--registry dir:{two}: cluster cluster-a is read from --registry "
                                          f"dir:{one} too; a cluster is read from one registry"):
        asyncio.run(daemon.live.open())
    daemon.live.close()

    shutil.rmtree(two / "cluster-a")
    daemon = daemon_of(one, two)

    async def later_folder():
        await daemon.live.open()
        shutil.copytree(one / "cluster-a", two / "cluster-a")
        feed = daemon.live._dir_feeds[1]
        assert feed.read_cluster("cluster-a") is False and "cluster-a" not in feed.holds
        daemon.live.close()
        await daemon.live.ended(5)

    asyncio.run(later_folder())


def test_a_stopped_daemon_waits_for_its_api_servers_feeds_and_names_one_that_runs_on(tmp_path):
    """Against the Kubernetes API stand-in (tests/kube/standin.py: no API server can be installed here):
    a list the API server holds without answering cannot be cut (the request has no response yet);
    a stopped daemon waits for it at most FEEDS_END seconds, then says which cluster's feed runs on."""
    import gc
    import time

    from structlog.testing import capture_logs

    from reconciler.daemon import Daemon, RegistryOptions, ServeOptions
    from reconciler.daemon.daemon import FEEDS_END
    from tests.conftest import SAMPLE_REPO
    from tests.kube.standin import KubeStandIn
    before = set(threading.enumerate())
    with KubeStandIn() as api:
        api.delay(100, path_contains="/pods")
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", contexts=("cluster-a",))
        daemon = Daemon(ServeOptions(source=str(SAMPLE_REPO), cluster="cluster-a", ads="127.0.0.1:0",
                                     http="127.0.0.1:0", state_dir=tmp_path / "state",
                                     registry=RegistryOptions(("kube",), kubeconfig=kubeconfig,
                                                              context="cluster-a", sync_timeout=60)))

        async def main() -> float:
            running = asyncio.create_task(daemon.run())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not any(t.name.startswith("kube-cluster-a-") for t in threading.enumerate()):
                assert loop.time() < deadline and not running.done()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # (the list of pods hangs)
            daemon.stop("test done")
            stopping = time.monotonic()
            await asyncio.wait_for(running, FEEDS_END + 10)
            return time.monotonic() - stopping

        with capture_logs() as logs:
            took = asyncio.run(main())
        # The API server going away cuts the held list: the feed then ends (else it would drop what it
        # holds in the middle of another test's count of cyclic garbage).
        api.stop_serving()
        for thread in [t for t in threading.enumerate() if t.name.startswith("kube-cluster-a-")]:
            thread.join(10)
        assert not [t.name for t in threading.enumerate() if t.name.startswith("kube-cluster-a-")]
    # (the stand-in's request held, released as it stops, ends on its own thread: waited for, and what
    # it leaves collected, so that no other test's count of cyclic garbage finds it)
    deadline = time.monotonic() + 10
    for thread in set(threading.enumerate()) - before:
        if not thread.name.endswith("(_poll_wrapper)"):  # (gRPC's poller lives as long as the process)
            thread.join(max(0.0, deadline - time.monotonic()))
    gc.collect()
    said = [e for e in logs if e["event"] == "registry feeds still running as the daemon stops"]
    assert FEEDS_END - 0.5 <= took < FEEDS_END + 5 and [e["threads"] for e in said] == [["registry kube cluster-a"]]
