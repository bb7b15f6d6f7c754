"""Incremental compile: ``compile_view(mesh, view, previous=...)`` equals a full compile.

For one edit at a time to sample-repo (an endpoint, a WorkloadEntry, a DestinationRule, a
VirtualService, the mesh-wide networks, a new file...), every view compiled with the previous
revision's compile must hold the resources of a full compile of the new revision: the same names
and versions, the same bytes for every resource it built again, and the previous bytes (with the
revision at which they last changed) for those whose version did not change. And the previous
compile must really be taken back: the resources of services the edit does not touch, and the
virtual hosts it does not touch, are the previous ones themselves.
"""
from __future__ import annotations

import pytest

from compiler.view import make_view
from compiler.xds import compile_view
from compiler.xds_types import CLUSTER, ENDPOINT, ROUTE, TYPES
from tests.conftest import mesh_from, sample_files

PUSH_ORDER = tuple(t.url for t in TYPES)  # the type URLs, in push order

OLD, NEW = "rev-aaaaaaaaaaaa", "rev-bbbbbbbbbbbb"  # same length: masking them keeps the bytes comparable
SIDECAR = "sidecar~10.1.1.1~productpage-v1.bookinfo~bookinfo.svc.cluster.local"
INGRESS = "router~10.1.100.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
EASTWEST = "router~10.1.100.2~eastwest.istio-system~istio-system.svc.cluster.local"


def edit(files: dict[str, bytes], path: str, old: str, new: str) -> dict[str, bytes]:
    text = files[path].decode()
    assert old in text, f"{path} lacks {old!r}"
    return {**files, path: text.replace(old, new, 1).encode()}


EDITS = {
    "an endpoint moves": lambda f: edit(f, "running/cluster-a.yaml", "[10.1.3.2]", "[10.1.3.9]"),
    "a WorkloadEntry moves": lambda f: edit(f, "bookinfo/mysqldb.yaml", "10.1.5.1", "10.1.5.7"),
    "a WorkloadEntry leaves its service": lambda f: edit(f, "bookinfo/mysqldb.yaml", "app: mysqldb", "app: other"),
    "a load balancer changes": lambda f: edit(f, "bookinfo/reviews.yaml", "simple: LEAST_REQUEST",
                                              "simple: ROUND_ROBIN"),
    "route weights change": lambda f: edit(edit(f, "bookinfo/reviews.yaml", "weight: 50", "weight: 60"),
                                           "bookinfo/reviews.yaml", "weight: 40", "weight: 30"),
    "a gateway address changes (mesh-wide)": lambda f: edit(f, "mesh/networks.yaml", "address: 198.51.100.10",
                                                            "address: 198.51.100.11"),
    "only a comment changes": lambda f: edit(f, "mesh/networks.yaml", "# Which cluster", "# Which Cluster"),
    "lines shift above an object": lambda f: edit(f, "bookinfo/ratings.yaml", "# ratings:", "#\n#\n# ratings:"),
    "a service is added": lambda f: {**f, "bookinfo/new.yaml": f["bookinfo/details.yaml"].decode().replace(
        "details", "extra").replace("10.1.2.1", "10.1.8.1").replace("10.2.2.1", "10.2.8.1").replace(
        "10.3.2.1", "10.3.8.1").replace("10.2.9.1", "10.2.9.8").encode()},
    "a subset is added (new cluster names)": lambda f: edit(
        f, "bookinfo/details.yaml", "        version: v2\n---\n# 90%",
        "        version: v2\n    - name: v3\n      labels:\n        version: v3\n---\n# 90%"),
    "a service is removed": lambda f: {k: v for k, v in f.items() if k != "bookinfo/mysqldb.yaml"},
    "nothing changes but the revision": lambda f: f,
    # New objects that feed existing services, in files of their own (no other object changes):
    "a WorkloadEntry joins a service": lambda f: {**f, "bookinfo/mysqldb-b.yaml": b"""
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: mysqldb-cluster-b, namespace: bookinfo}
spec:
  address: 10.2.5.1
  labels: {app: mysqldb, version: v1, topology.istio.io/cluster: cluster-b}
  serviceAccount: bookinfo-mysqldb
"""},
    "a wildcard DestinationRule is added": lambda f: {**f, "global/rule.yaml": b"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: global, namespace: bookinfo}
spec:
  host: "*.global"
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"""},
    "a VirtualService is added": lambda f: {**f, "global/routes.yaml": b"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-global, namespace: bookinfo}
spec:
  hosts: [ratings.bookinfo.global]
  http:
    - timeout: 3s
      route: [{destination: {host: ratings.bookinfo.svc.cluster.local, port: {number: 9080}}}]
"""},
}

VIEWS = [("cluster-a", SIDECAR, {}), ("cluster-c", SIDECAR, {}),
         ("cluster-a", INGRESS, {"istio": "ingressgateway"}), ("cluster-c", EASTWEST, {"istio": "eastwestgateway"})]


@pytest.fixture(scope="module")
def before():
    mesh = mesh_from(sample_files(), OLD)
    return {(c, n): compile_view(mesh, make_view(mesh, c, n, labels)) for c, n, labels in VIEWS}


@pytest.mark.parametrize("change", sorted(EDITS))
def test_incremental_compile_equals_a_full_compile(before, change):
    files = EDITS[change](sample_files())
    mesh = mesh_from(files, NEW)
    for cluster, node, labels in VIEWS:
        view = make_view(mesh, cluster, node, labels)
        previous = before[cluster, node]
        incremental = compile_view(mesh, view, previous=previous)
        full = compile_view(mesh, view)
        for type_url in PUSH_ORDER:
            assert list(incremental.resources[type_url]) == list(full.resources[type_url]), (change, type_url)
            for name, resource in incremental.resources[type_url].items():
                fresh = full.resources[type_url][name]
                assert resource.version == fresh.version, (change, cluster, node, name)
                old = previous.resources[type_url].get(name)
                if old is not None and old.version == resource.version:
                    assert resource is old, (change, name)  # unchanged: the bytes proxies hold, its revision
                else:
                    assert resource.data == fresh.data and resource.revision == NEW, (change, name)
        kept = [name for t in (CLUSTER, ENDPOINT) for name, r in incremental.resources[t].items()
                if previous.resources[t].get(name) is r]
        kept_hosts = [key for key, unit in incremental.units.virtual_hosts.items()
                      if previous.units.virtual_hosts.get(key) is unit]
        if "mesh-wide" in change:
            assert not kept_hosts, "a mesh-wide change rebuilds every virtual host"
            assert not [h for h, unit in incremental.units.services.items()
                        if previous.units.services.get(h) is unit], "and every service"
        else:
            assert kept, f"{change}: nothing was reused"
            if node == SIDECAR:
                assert kept_hosts, f"{change}: no virtual host was reused"
        if change in ("nothing changes but the revision", "only a comment changes"):
            assert len(kept) == len(full.resources[CLUSTER]) + len(full.resources[ENDPOINT])
            assert all(r.revision == OLD for _, r in incremental.items())


def test_an_edited_service_is_rebuilt_and_the_others_kept(before):
    """An endpoint of ratings moves: only the assignments holding it change (a new version, this
    revision); every other resource, ratings' clusters too, is the previous one."""
    mesh = mesh_from(EDITS["an endpoint moves"](sample_files()), NEW)
    view = make_view(mesh, "cluster-a", SIDECAR)
    previous = before["cluster-a", SIDECAR]
    config = compile_view(mesh, view, previous=previous)
    changed = []
    for type_url in PUSH_ORDER:
        for name, resource in config.resources[type_url].items():
            if previous.resources[type_url][name] is not resource:
                assert resource.revision == NEW and resource.version != previous.resources[type_url][name].version
                changed.append((type_url, name))
    assert changed and all(t == ENDPOINT and "ratings.bookinfo.svc.cluster.local" in n for t, n in changed), changed


def test_previous_of_another_view_is_not_used(before):
    mesh = mesh_from(sample_files(), NEW)
    view = make_view(mesh, "cluster-c", SIDECAR)
    config = compile_view(mesh, view, previous=before["cluster-a", SIDECAR])
    assert all(resource.revision == NEW for _, resource in config.items())


def test_a_virtual_host_is_rebuilt_when_its_routing_or_a_destination_changes(before):
    previous = before["cluster-a", SIDECAR]

    def rebuilt(change: str) -> set[str]:
        mesh = mesh_from(EDITS[change](sample_files()), NEW)
        config = compile_view(mesh, make_view(mesh, "cluster-a", SIDECAR), previous=previous)
        return {key[1] for key, unit in config.units.virtual_hosts.items()  # (port, host, ...)
                if previous.units.virtual_hosts.get(key) is not unit}

    assert rebuilt("route weights change") == {"reviews.bookinfo.svc.cluster.local"}
    # routes never see endpoints: a moved endpoint rebuilds no virtual host, and keeps the configurations
    assert rebuilt("an endpoint moves") == set()
    mesh = mesh_from(EDITS["an endpoint moves"](sample_files()), NEW)
    config = compile_view(mesh, make_view(mesh, "cluster-a", SIDECAR), previous=previous)
    assert all(config.resources[ROUTE][n] is previous.resources[ROUTE][n] for n in config.resources[ROUTE])
    # a DestinationRule is part of what routes are made from (subsets, hash policies)
    assert "reviews.bookinfo.svc.cluster.local" in rebuilt("a load balancer changes")


# A ServiceEntry that writes its endpoints (sample-repo's ratings-global selects the running pods instead).
WRITTEN_ENTRY = b"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings-global, namespace: bookinfo}
spec:
  hosts: [ratings.bookinfo.global]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
    - {address: 10.1.3.1, labels: {app: ratings, topology.istio.io/cluster: cluster-a}, serviceAccount: bookinfo-ratings}
    - {address: 10.3.3.1, labels: {app: ratings, topology.istio.io/cluster: cluster-c}, serviceAccount: bookinfo-ratings}
"""


def test_a_service_entry_shared_by_two_revisions_keeps_its_endpoints_until_the_topology_changes():
    from compiler.model import build_mesh
    from compiler.parse import parse
    from compiler.snapshot import Snapshot
    files = {**sample_files(), "global/ratings-global.yaml": WRITTEN_ENTRY}
    first = parse(Snapshot("r1", files))
    same = parse(Snapshot("r2", {**files, "bookinfo/details.yaml": files["bookinfo/details.yaml"] + b"\n"}),
                 previous=first)
    host = "ratings.bookinfo.global"
    one, two = build_mesh(first.objects, "r1"), build_mesh(same.objects, "r2")
    assert two.services[host].endpoints is one.services[host].endpoints  # ratings-global.yaml was not read again
    # cluster-c moves to network-1: every endpoint there now has another network, so none is kept
    moved = parse(Snapshot("r3", edit(files, "mesh/clusters.yaml", "network: network-2", "network: network-1")),
                  previous=first)
    three = build_mesh(moved.objects, "r3")
    assert three.services[host].endpoints is not one.services[host].endpoints
    assert {ep.network for ep in three.services[host].endpoints} == {"network-1"}
