"""A view's whole configuration: push order, content-hash versions, determinism, config_dump shape."""
from __future__ import annotations

import json

from compiler.view import make_view
from compiler.xds import compile_view, config_dump, dump_json
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPES
from tests.conftest import mesh_from, sample_files

PUSH_ORDER = tuple(t.url for t in TYPES)  # the type URLs, in push order


def compiled(files: dict[str, bytes], revision: str = "r1", cluster: str = "cluster-a"):
    mesh = mesh_from(files, revision)
    return compile_view(mesh, make_view(mesh, cluster))


def test_push_order_is_make_before_break():
    assert PUSH_ORDER == (CLUSTER, ENDPOINT, LISTENER, ROUTE)
    config = compiled(sample_files())
    seen = [xds_type.url for xds_type, _ in config.items()]
    assert seen == sorted(seen, key=PUSH_ORDER.index)


def test_versions_are_content_hashes():
    files = sample_files()
    first, again = compiled(files).versions(), compiled(files).versions()
    assert first == again, "same snapshot and view, same versions (a restarted server agrees)"
    changed = dict(files)
    path = "running/cluster-b.yaml"
    changed[path] = files[path].replace(b"[10.2.4.1]", b"[10.2.4.99]")
    after = compiled(changed).versions()
    differing = {(t, n) for t in PUSH_ORDER for n in first[t] if first[t][n] != after[t].get(n)}
    # only reviews' assignments in cluster-a's view change (its subsets that hold that endpoint)
    assert differing and all(t == ENDPOINT and "reviews" in n for t, n in differing)
    assert all(len(v) == 16 for t in PUSH_ORDER for v in first[t].values())


def test_config_dump_is_deterministic_and_typed():
    files = sample_files()
    text = dump_json(config_dump(compiled(files)))
    assert text == dump_json(config_dump(compiled(files)))
    dump = json.loads(text)
    assert dump["routes"][0]["@type"] == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert [c["name"] for c in dump["clusters"]] == sorted(c["name"] for c in dump["clusters"])


def test_a_new_revision_alone_changes_no_version_and_is_stamped_in_every_resource():
    """A version is a digest of the content and its sources, taken before the revision is stamped
    (DESIGN.md): a commit that changes nothing else changes no version, while every resource with
    metadata of its own names the revision it was compiled at; its parts do not."""
    files = sample_files()
    first, other = compiled(files, "r1"), compiled(files, "r2")
    assert first.versions() == other.versions()
    for type_url in (CLUSTER, LISTENER, ROUTE):
        for message in other.messages(type_url).values():
            assert message.metadata.filter_metadata["galleon"]["revision"] == "r2"
    for config in other.messages(ROUTE).values():
        assert all("revision" not in v.metadata.filter_metadata["galleon"] for v in config.virtual_hosts)
    for assignment in other.messages(ENDPOINT).values():
        assert all("revision" not in g.metadata.filter_metadata["galleon"] for g in assignment.endpoints)


def test_only_builds_just_those_hosts_and_matches_the_whole_compile(sample_mesh):
    from compiler.names import parse_eds_name
    from compiler.cache import serialize
    for node in ("sidecar~10.0.0.1~p.default~default.svc.cluster.local",
                 "router~10.0.0.2~gw.istio-system~istio-system.svc.cluster.local"):
        view = make_view(sample_mesh, "cluster-c", node, {"istio": "ingressgateway"})
        whole = compile_view(sample_mesh, view)
        only = {"reviews.bookinfo.svc.cluster.local", "ratings.bookinfo.svc.cluster.local"}
        part = compile_view(sample_mesh, view, only=only)
        for type_url in (CLUSTER, ENDPOINT):
            expected = {n: r.data for n, r in whole.resources[type_url].items() if parse_eds_name(n)[2] in only}
            assert expected and {n: r.data for n, r in part.resources[type_url].items()} == expected
        assert {n: r.data for n, r in part.resources[LISTENER].items()} == \
            {n: r.data for n, r in whole.resources[LISTENER].items()}
        assert part.resources[ROUTE].keys() == whole.resources[ROUTE].keys()
        for name, config in part.messages(ROUTE).items():
            full = {v.name: serialize(v) for v in whole.message(ROUTE, name).virtual_hosts}
            kept = {v.name: serialize(v) for v in config.virtual_hosts}
            if view.role == "router":
                assert kept == full  # gateway routes are whole
            else:
                assert kept == {n: v for n, v in full.items() if n.rsplit(":", 1)[0] in only}
