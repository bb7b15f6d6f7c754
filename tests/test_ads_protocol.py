"""The ADS server's pure parts: response bytes (wire), served views (views), per-stream xDS state (protocol).

No network here: requests are built as messages, responses are parsed back from the bytes the
protocol would write. tests/test_ads_server.py drives the same code through gRPC.
"""
from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, struct_pb2
from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.locality import Locality
from compiler.view import ViewError, make_view
from compiler.xds import compile_view, config_dump
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPES
from reconciler.ads import wire
from reconciler.ads.protocol import DeltaStream, SotwStream, Subscriptions
from reconciler.ads.views import delta_resources, serve_view, view_of_node
from tests.conftest import ONE_CLUSTER, mesh_from

PUSH_ORDER = tuple(t.url for t in TYPES)  # the type URLs, in push order
WILDCARD_TYPES = {t.url for t in TYPES if t.wildcard}

# --- meshes ---------------------------------------------------------------------------------------

CART_CLUSTER = "outbound|9080||cart.shop.svc.cluster.local"
PAY_CLUSTER = "outbound|8080||pay.shop.svc.cluster.local"
CLUSTERS = [PAY_CLUSTER, CART_CLUSTER]  # name order
LISTENERS = ["0.0.0.0_8080", "0.0.0.0_9080"]
ROUTES = ["8080", "9080"]


def service(name: str, address: str, port: int) -> str:
    return f"""---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
  - address: {address}
    labels: {{app: {name}, topology.istio.io/cluster: cluster-a}}
"""


PAY_ROUND_ROBIN = """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pay, namespace: shop}
spec:
  host: pay.shop.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"""


def shop(cart: str | None = "10.1.0.1", pay: str | None = "10.1.0.2", extra: str = "", revision: str = "r1"):
    """A one-cluster mesh with up to two services. The revision is in every resource's provenance,
    so meshes meant to differ in one resource only keep the same revision."""
    text = ONE_CLUSTER
    if cart:
        text += service("cart", cart, 9080)
    if pay:
        text += service("pay", pay, 8080)
    return mesh_from({"mesh.yaml": text + extra}, revision)


def served_of(mesh, cluster: str = "cluster-a"):
    return serve_view(mesh, make_view(mesh, cluster))


@pytest.fixture(scope="module")
def base():
    return served_of(shop())


@pytest.fixture(scope="module")
def cart_moved():
    """base with cart's one endpoint at another address: only cart's ClusterLoadAssignment differs."""
    return served_of(shop(cart="10.1.0.9"))


@pytest.fixture(scope="module")
def pay_round_robin():
    """base with a DestinationRule on pay: only pay's Cluster differs."""
    return served_of(shop(extra=PAY_ROUND_ROBIN))


@pytest.fixture(scope="module")
def without_pay():
    return served_of(shop(pay=None))


# --- requests and responses -----------------------------------------------------------------------

def sotw_request(type_url: str, names=(), version: str = "", nonce: str = "", error: str | None = None):
    request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                             version_info=version, response_nonce=nonce)
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def delta_request(type_url: str, subscribe=(), unsubscribe=(), nonce: str = "", error: str | None = None,
                  initial: dict[str, str] | None = None):
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url, resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce,
        initial_resource_versions=initial or {})
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def sotw_response(data: bytes | None) -> discovery_pb2.DiscoveryResponse:
    assert data is not None, "expected a response"
    return discovery_pb2.DiscoveryResponse.FromString(data)


def delta_response(data: bytes | None) -> discovery_pb2.DeltaDiscoveryResponse:
    assert data is not None, "expected a response"
    return discovery_pb2.DeltaDiscoveryResponse.FromString(data)


MESSAGE_OF = {CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
              LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration}


def names_in(response) -> list[str]:
    """Resource names of a SotW response, read from the packed messages themselves, or of a delta one."""
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    names = []
    for packed in response.resources:
        message = MESSAGE_OF[packed.type_url].FromString(packed.value)
        names.append(message.cluster_name if packed.type_url == ENDPOINT else message.name)
    return names


def sotw_ack(stream: SotwStream, type_url: str, response: discovery_pb2.DiscoveryResponse, names=()):
    return stream.on_request(sotw_request(type_url, names, response.version_info, response.nonce))


def delta_ack(stream: DeltaStream, type_url: str, response: discovery_pb2.DeltaDiscoveryResponse, **kw):
    return stream.on_request(delta_request(type_url, nonce=response.nonce, **kw))


# --- wire -----------------------------------------------------------------------------------------

def packed(type_url: str, resource) -> bytes:
    """A resource as the Any a response carries."""
    return wire.any_message(type_url, resource.data)


def normal_sotw(served, type_url: str, nonce: str) -> discovery_pb2.DiscoveryResponse:
    message = discovery_pb2.DiscoveryResponse(version_info=served.versions[type_url], type_url=type_url,
                                              nonce=nonce)
    for resource in served.resources[type_url].values():
        message.resources.add().CopyFrom(any_pb2.Any.FromString(packed(type_url, resource)))
    return message


@pytest.mark.parametrize("type_url", PUSH_ORDER)
def test_sotw_wire_bytes_equal_normal_serialization(base, type_url):
    _, nonce, data = base.sotw(type_url, None)
    expected = normal_sotw(base, type_url, nonce)
    assert len(expected.resources) == 2
    assert discovery_pb2.DiscoveryResponse.FromString(data) == expected
    assert data == expected.SerializeToString(deterministic=True)


def test_sotw_wire_of_the_sample_mesh(sample_mesh):
    served = serve_view(sample_mesh, make_view(sample_mesh, "cluster-c"))
    for type_url in PUSH_ORDER:
        _, nonce, data = served.sotw(type_url, None)
        assert data == normal_sotw(served, type_url, nonce).SerializeToString(deterministic=True)


@pytest.mark.parametrize("type_url", PUSH_ORDER)
def test_delta_wire_bytes_equal_normal_serialization(base, type_url):
    chosen = list(base.resources[type_url].values())
    removed = ["gone-1", "gone|2||x"]
    data = wire.delta_response(wire.delta_body(base.versions[type_url], delta_resources(type_url, chosen), type_url),
                               "9", removed)
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=base.versions[type_url], type_url=type_url, nonce="9", removed_resources=removed)
    for r in chosen:
        expected.resources.add(name=r.name, version=r.version, resource=any_pb2.Any.FromString(packed(type_url, r)))
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(data) == expected
    assert data == expected.SerializeToString(deterministic=True)


def test_delta_resource_and_any_bytes_equal_normal_serialization(base):
    for type_url in PUSH_ORDER:
        for r in base.resources[type_url].values():
            any_bytes = packed(type_url, r)
            message = any_pb2.Any.FromString(any_bytes)
            assert message.type_url == type_url and message.value == r.data
            assert any_bytes == any_pb2.Any(type_url=type_url, value=r.data).SerializeToString(deterministic=True)
            normal = discovery_pb2.Resource(name=r.name, version=r.version, resource=message)
            assert delta_resources(type_url, [r]) == [normal.SerializeToString(deterministic=True)]


text = st.text(min_size=1, max_size=40)
payload = st.binary(min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(version=text, nonce=text, type_url=text, values=st.lists(payload, max_size=5))
def test_sotw_wire_matches_protobuf_for_any_content(version, nonce, type_url, values):
    anys = [any_pb2.Any(type_url=type_url, value=v) for v in values]
    data = wire.sotw_response(wire.sotw_body(version, [wire.any_message(type_url, v) for v in values], type_url),
                              nonce)
    expected = discovery_pb2.DiscoveryResponse(version_info=version, resources=anys, type_url=type_url, nonce=nonce)
    assert data == expected.SerializeToString(deterministic=True)


@settings(max_examples=60, deadline=None)
@given(version=text, nonce=text, type_url=text, removed=st.lists(text, max_size=4),
       items=st.lists(st.tuples(text, text, payload), max_size=4))
def test_delta_wire_matches_protobuf_for_any_content(version, nonce, type_url, removed, items):
    resources = [wire.delta_resource(n, v, wire.any_message(type_url, b)) for n, v, b in items]
    data = wire.delta_response(wire.delta_body(version, resources, type_url), nonce, removed)
    expected = discovery_pb2.DeltaDiscoveryResponse(system_version_info=version, type_url=type_url, nonce=nonce,
                                                    removed_resources=removed)
    for n, v, b in items:
        expected.resources.add(name=n, version=v, resource=any_pb2.Any(type_url=type_url, value=b))
    assert data == expected.SerializeToString(deterministic=True)


@pytest.mark.parametrize("size", [1, 127, 128, 16383, 16384, 2_097_152])
def test_wire_length_prefixes_at_varint_boundaries(size):
    value = b"x" * size
    data = wire.field(2, value)
    assert data == any_pb2.Any(value=value).SerializeToString()
    assert any_pb2.Any.FromString(data).value == value


def test_wire_keeps_empty_elements_of_repeated_fields():
    data = wire.delta_response(wire.delta_body("v", [], "t"), "n", ["", "a"])
    expected = discovery_pb2.DeltaDiscoveryResponse(system_version_info="v", type_url="t", nonce="n",
                                                    removed_resources=["", "a"])
    assert data == expected.SerializeToString(deterministic=True)


# --- views ----------------------------------------------------------------------------------------

def test_versions_are_stable_across_compiles(base):
    again = served_of(shop())
    assert again is not base
    assert again.versions == base.versions
    for type_url in PUSH_ORDER:
        assert {n: (r.version, r.data) for n, r in again.resources[type_url].items()} == \
               {n: (r.version, r.data) for n, r in base.resources[type_url].items()}
    assert list(base.resources[CLUSTER]) == CLUSTERS
    assert list(base.resources[ENDPOINT]) == CLUSTERS
    assert list(base.resources[LISTENER]) == LISTENERS
    assert list(base.resources[ROUTE]) == ROUTES


def test_a_resource_version_hashes_its_content_but_not_the_revision(base):
    """A new commit changes every resource's provenance; versions ignore that, and a view compiled
    with the previous one keeps the bytes of what did not change, so only real changes are pushed."""
    mesh = shop(revision="r9")
    fresh = served_of(mesh)
    for type_url in PUSH_ORDER:
        for name, resource in base.resources[type_url].items():
            assert fresh.resources[type_url][name].version == resource.version
            assert fresh.resources[type_url][name].revision == "r9" != resource.revision
            if type_url != ENDPOINT:  # an assignment has no metadata of its own to name it in
                assert b"r9" in fresh.resources[type_url][name].data and b"r9" not in resource.data
    kept = serve_view(mesh, make_view(mesh, "cluster-a"), previous=base)
    assert kept.changed == 0 and kept.versions == base.versions
    # kept: the bytes and revision proxies hold (a served view's resources are views of its own responses)
    assert all((kept.resources[t][n].data, kept.resources[t][n].revision) ==
               (base.resources[t][n].data, base.resources[t][n].revision) for t in PUSH_ORDER for n in base.resources[t])
    moved_mesh = shop(cart="10.1.0.9", revision="r9")
    moved = serve_view(moved_mesh, make_view(moved_mesh, "cluster-a"), previous=base)
    assert moved.changed == 1
    assert moved.resources[ENDPOINT][CART_CLUSTER].version != base.resources[ENDPOINT][CART_CLUSTER].version
    assert moved.resources[ENDPOINT][CART_CLUSTER].revision == "r9"
    assert moved.resources[ENDPOINT][PAY_CLUSTER].revision == base.resources[ENDPOINT][PAY_CLUSTER].revision == "r1"


def changed_names(before, after) -> dict[str, list[str]]:
    return {t: sorted(n for n in set(before.resources[t]) | set(after.resources[t])
                      if getattr(before.resources[t].get(n), "version", None)
                      != getattr(after.resources[t].get(n), "version", None))
            for t in PUSH_ORDER}


def test_a_view_served_from_its_previous_has_the_versions_of_one_served_anew():
    """serve_view keeps a type's version up to date from the resources that changed (the versions are
    combined so that it can): resources changed, added, gone and back, each type, whole compiles and
    endpoint-only updates, all give the version the same view served from nothing has."""
    from compiler.model import relisted
    steps = [shop(), shop(cart="10.1.0.9"), shop(cart=None), shop(extra=PAY_ROUND_ROBIN), shop(pay=None),
             shop(), shop(cart="10.1.0.7", pay="10.1.0.8")]
    view = make_view(steps[0], "cluster-a")
    served = None
    for mesh in steps:
        served = serve_view(mesh, view, served)
        assert served.versions == serve_view(mesh, view).versions
    # an endpoint-only update (model.relisted's meshes) takes the same path with its hosts
    again = serve_view(relisted(steps[-1], [], []).mesh, view, served, endpoints_of=frozenset())
    assert again.versions == served.versions
    assert len({v for s in steps for v in serve_view(s, view).versions.values()}) > len(TYPES)


def compared(later, base, type_url: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What changed from base to later, found by comparing every resource: (changed or new, gone)."""
    mine, theirs = later.resources[type_url], base.resources[type_url]
    return (tuple(n for n, r in mine.items() if n not in theirs or theirs[n].version != r.version),
            tuple(n for n in theirs if n not in mine))


SHOP_HISTORY = [dict(), dict(cart="10.1.0.9"), dict(cart=None), dict(extra=PAY_ROUND_ROBIN), dict(pay=None), dict(),
                dict(cart="10.1.0.7", pay="10.1.0.8"), dict(cart="10.1.0.7")]


def test_since_a_view_some_updates_back_is_what_comparing_every_resource_finds():
    """A view served from its previous remembers the names each update changed, so what changed since a
    view some updates back (the view a lagging stream holds) is found from those names: the same as
    comparing every resource, through resources changed, added, gone, and changed back."""
    steps = [shop(**changes) for changes in SHOP_HISTORY]
    view = make_view(steps[0], "cluster-a")
    history: list = []
    for mesh in steps:
        history.append(serve_view(mesh, view, history[-1] if history else None))
    for j, later in enumerate(history):
        for base in history[:j]:
            assert later._touched_since(ENDPOINT, base.serial) is not None, "found from the names, not compared"
            for type_url in PUSH_ORDER:
                assert later.since(type_url, base) == compared(later, base, type_url), (j, type_url)
    anew = serve_view(steps[-1], view)  # no lineage: every resource compared, the same answer
    assert anew._touched_since(ENDPOINT, history[0].serial) is None
    assert anew.since(ENDPOINT, history[0]) == compared(anew, history[0], ENDPOINT)


def test_a_view_remembers_a_bounded_number_of_updates():
    from reconciler.ads.views import LINEAGE
    view = make_view(shop(), "cluster-a")
    served = first = serve_view(shop(), view)
    for number in range(LINEAGE + 3):
        served = serve_view(shop(cart=f"10.1.1.{number}"), view, served)
    assert len(served._lineage) == LINEAGE
    assert served._touched_since(ENDPOINT, first.serial) is None
    assert served.since(ENDPOINT, first) == compared(served, first, ENDPOINT) == ((CART_CLUSTER,), ())


def test_sotw_a_stream_some_updates_behind_gets_what_changed_since_it_answered():
    """A stream that lags (its proxy answered a view several updates back) is sent what changed since,
    by name, for the subscription it keeps and for one it changed."""
    steps = [shop(**changes) for changes in SHOP_HISTORY]
    view = make_view(steps[0], "cluster-a")
    history: list = []
    for mesh in steps:
        history.append(serve_view(mesh, view, history[-1] if history else None))
    for lag in range(1, len(history)):
        for j in range(lag, len(history)):
            base, later = history[j - lag], history[j]
            for asked, names in ((CLUSTERS, CLUSTERS), ([CART_CLUSTER], [CART_CLUSTER]), (CLUSTERS, [CART_CLUSTER])):
                stream = SotwStream()
                stream.on_request(sotw_request(ENDPOINT, asked))
                first = stream.respond(ENDPOINT, base)
                if first is None:
                    continue
                sotw_ack(stream, ENDPOINT, sotw_response(first), names)
                update = stream.respond(ENDPOINT, later)
                subscribed = [n for n in compared(later, base, ENDPOINT)[0] if n in names]
                held = [n for n in asked if n in names and n in base.resources[ENDPOINT]]
                wanted = sorted(set(subscribed) | {n for n in names if n in later.resources[ENDPOINT]
                                                   and n not in held})
                assert (names_in(sotw_response(update)) if update is not None else []) == wanted, (lag, j, names)


def test_one_changed_endpoint_changes_only_its_assignment(base, cart_moved):
    assert changed_names(base, cart_moved) == {CLUSTER: [], ENDPOINT: [CART_CLUSTER], LISTENER: [], ROUTE: []}
    assert cart_moved.versions[ENDPOINT] != base.versions[ENDPOINT]
    for type_url in (CLUSTER, LISTENER, ROUTE):
        assert cart_moved.versions[type_url] == base.versions[type_url]
    assert cart_moved.resources[ENDPOINT][PAY_CLUSTER] == base.resources[ENDPOINT][PAY_CLUSTER]


def test_one_changed_cluster_changes_only_that_cluster(base, pay_round_robin):
    assert changed_names(base, pay_round_robin) == {CLUSTER: [PAY_CLUSTER], ENDPOINT: [], LISTENER: [], ROUTE: []}
    assert pay_round_robin.versions[CLUSTER] != base.versions[CLUSTER]
    assert all(pay_round_robin.versions[t] == base.versions[t] for t in (ENDPOINT, LISTENER, ROUTE))


def test_sotw_of_a_name_subset(base):
    version, _, data = base.sotw(ENDPOINT, frozenset({CART_CLUSTER}))
    response = discovery_pb2.DiscoveryResponse.FromString(data)
    assert names_in(response) == [CART_CLUSTER]
    assert response.version_info == version != base.versions[ENDPOINT]
    assert response.type_url == ENDPOINT
    assert response.resources[0].SerializeToString(deterministic=True) == \
        packed(ENDPOINT, base.resources[ENDPOINT][CART_CLUSTER])
    # unknown names are left out; the version is that of what is sent
    assert base.sotw(ENDPOINT, frozenset({CART_CLUSTER, "outbound|1||nope"}))[0] == version
    # every name is the whole type, with the type's version
    both = base.sotw(ENDPOINT, frozenset(CLUSTERS))
    assert both == base.sotw(ENDPOINT, None)
    assert both[0] == base.versions[ENDPOINT]
    # none at all: an empty response with its own version
    empty_version, _, empty = base.sotw(ENDPOINT, frozenset())
    assert not discovery_pb2.DiscoveryResponse.FromString(empty).resources
    assert empty_version not in (version, base.versions[ENDPOINT])


def test_sotw_subset_versions_follow_only_their_resources(base, cart_moved):
    pay_only = frozenset({PAY_CLUSTER})
    cart_only = frozenset({CART_CLUSTER})
    assert cart_moved.sotw(ENDPOINT, pay_only)[0] == base.sotw(ENDPOINT, pay_only)[0]
    assert cart_moved.sotw(ENDPOINT, cart_only)[0] != base.sotw(ENDPOINT, cart_only)[0]


def test_sotw_bodies_are_cached_per_subscription(base):
    names = frozenset({PAY_CLUSTER})
    assert base.sotw(ENDPOINT, names) is base.sotw(ENDPOINT, frozenset({PAY_CLUSTER}))
    assert base.sotw(CLUSTER, None) is base.sotw(CLUSTER, None)


def test_served_config_dump_is_the_compiled_one(sample_mesh):
    view = make_view(sample_mesh, "cluster-b")
    served = serve_view(sample_mesh, view)
    assert served.config_dump() == config_dump(compile_view(sample_mesh, view))
    assert served.revision == "sample"
    assert served.size() > 0


def node(node_id: str = "sidecar~10.1.0.5~web-1.shop~shop.svc.cluster.local", locality=None, **metadata):
    n = base_pb2.Node(id=node_id)
    for key, value in metadata.items():
        n.metadata.fields[key].CopyFrom(_value(value))
    if locality is not None:
        n.locality.CopyFrom(locality)
    return n


def _value(value) -> struct_pb2.Value:
    v = struct_pb2.Value()
    if isinstance(value, dict):
        v.struct_value.update(value)
    elif isinstance(value, list):
        v.list_value.extend(value)
    elif isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, (int, float)):
        v.number_value = value
    else:
        v.string_value = value
    return v


def test_view_of_a_bare_node_is_the_daemon_cluster(sample_mesh):
    view = view_of_node(sample_mesh, node(), "cluster-b")
    assert (view.cluster, view.network, view.locality) == ("cluster-b", "network-1", Locality("us-east", "us-east-1b"))
    assert (view.role, view.namespace, view.labels, view.listen_address) == ("sidecar", "shop", (), "0.0.0.0")
    assert view == make_view(sample_mesh, "cluster-b", node().id)


def test_view_of_node_reads_cluster_id_and_its_defaults(sample_mesh):
    view = view_of_node(sample_mesh, node(CLUSTER_ID="cluster-c"), "cluster-a")
    assert (view.cluster, view.network, str(view.locality)) == ("cluster-c", "network-2", "eu-west/eu-west-1a")
    # an empty CLUSTER_ID counts as missing
    assert view_of_node(sample_mesh, node(CLUSTER_ID=""), "cluster-a").cluster == "cluster-a"


def test_view_of_node_reads_network_labels_locality_and_listen_address(sample_mesh):
    n = node("router~10.1.100.1~ingress-1.istio-system~istio-system.svc.cluster.local",
             locality=base_pb2.Locality(region="eu-west", zone="eu-west-1b", sub_zone="rack-7"),
             CLUSTER_ID="cluster-a", NETWORK="network-2", LABELS={"istio": "ingressgateway", "app": "gw"},
             GALLEON_LISTEN_ADDRESS="127.0.0.1")
    view = view_of_node(sample_mesh, n, "cluster-b")
    assert view.cluster == "cluster-a"
    assert view.network == "network-2"
    assert view.locality == Locality("eu-west", "eu-west-1b", "rack-7")
    assert view.labels == (("app", "gw"), ("istio", "ingressgateway"))
    assert view.listen_address == "127.0.0.1"
    assert (view.role, view.namespace) == ("router", "istio-system")


def test_view_of_node_with_a_partial_locality(sample_mesh):
    region_only = node(locality=base_pb2.Locality(region="ap-south"))
    assert view_of_node(sample_mesh, region_only, "cluster-a").locality == Locality("ap-south")
    two = node(locality=base_pb2.Locality(region="ap-south", zone="ap-south-1"))
    assert str(view_of_node(sample_mesh, two, "cluster-a").locality) == "ap-south/ap-south-1"
    # a locality without a region is no locality: the cluster's
    zone_only = node(locality=base_pb2.Locality(zone="z"))
    assert view_of_node(sample_mesh, zone_only, "cluster-a").locality == Locality("us-east", "us-east-1a")


def test_equal_nodes_share_a_view(sample_mesh):
    """Views are the cache key of compiled configuration: two pods alike get one."""
    first = node("sidecar~10.1.0.5~web-1.shop~shop.svc.cluster.local", LABELS={"a": "1", "b": "2"})
    second = node("sidecar~10.1.0.6~web-2.shop~shop.svc.cluster.local", LABELS={"b": "2", "a": "1"})
    assert view_of_node(sample_mesh, first, "cluster-a") == view_of_node(sample_mesh, second, "cluster-a")
    assert hash(view_of_node(sample_mesh, first, "cluster-a")) == hash(view_of_node(sample_mesh, second, "cluster-a"))
    other_ns = node("sidecar~10.1.0.7~web-3.pay~pay.svc.cluster.local", LABELS={"a": "1", "b": "2"})
    assert view_of_node(sample_mesh, other_ns, "cluster-a") != view_of_node(sample_mesh, first, "cluster-a")


@pytest.mark.parametrize("bad, message", [
    (node(CLUSTER_ID="cluster-z"), "cluster 'cluster-z' is not a Cluster of this mesh "
                                   "(clusters: cluster-a, cluster-b, cluster-c)"),
    (node(CLUSTER_ID=7), "node metadata CLUSTER_ID must be a string"),
    (node(NETWORK="network-9"), "network 'network-9' is not in MeshNetworks"),
    (node(NETWORK=["network-1"]), "node metadata NETWORK must be a string"),
    (node(LABELS="app=web"), "node metadata LABELS must be a map of strings"),
    (node(LABELS={"app": 3}), "node metadata LABELS.app must be a string"),
    (node(GALLEON_LISTEN_ADDRESS="localhost"), "listen address 'localhost' is not an IP address"),
    (node(GALLEON_LISTEN_ADDRESS=True), "node metadata GALLEON_LISTEN_ADDRESS must be a string"),
    (node("web-1"), "node id 'web-1' is not sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local or router~..."),
])
def test_view_of_node_rejects_bad_metadata_readably(sample_mesh, bad, message):
    with pytest.raises(ViewError) as caught:
        view_of_node(sample_mesh, bad, "cluster-a")
    assert str(caught.value) == message


def test_an_unknown_daemon_cluster_is_a_view_error(sample_mesh):
    with pytest.raises(ViewError, match="'nowhere' is not a Cluster"):
        view_of_node(sample_mesh, node(), "nowhere")


# --- state of the world ---------------------------------------------------------------------------

def test_wildcard_types():
    assert WILDCARD_TYPES == {CLUSTER, LISTENER} and {t.url for t in TYPES if t.partial} == {ENDPOINT, ROUTE}


@pytest.mark.parametrize("type_url, names", [(CLUSTER, CLUSTERS), (LISTENER, LISTENERS)])
def test_sotw_empty_first_request_is_wildcard_for_clusters_and_listeners(base, type_url, names):
    stream = SotwStream()
    assert stream.on_request(sotw_request(type_url)) == (True, None)
    response = sotw_response(stream.respond(type_url, base))
    assert names_in(response) == names
    assert response.version_info == base.versions[type_url]
    assert response.type_url == type_url
    assert response.nonce
    assert stream.status()[type_url]["subscription"] == "*"


@pytest.mark.parametrize("type_url", [ENDPOINT, ROUTE])
def test_sotw_empty_first_request_is_not_wildcard_for_endpoints_and_routes(base, type_url):
    stream = SotwStream()
    stream.on_request(sotw_request(type_url))
    data = stream.respond(type_url, base)
    assert data is None or not sotw_response(data).resources
    assert stream.status()[type_url]["subscription"] == []


def test_sotw_named_subscription_gets_exactly_those_names(base):
    stream = SotwStream()
    stream.on_request(sotw_request(ROUTE, ["9080", "404"]))
    response = sotw_response(stream.respond(ROUTE, base))
    assert names_in(response) == ["9080"]
    assert response.version_info == base.sotw(ROUTE, frozenset({"9080", "404"}))[0]


def test_sotw_explicit_star_is_wildcard_for_any_type(base):
    stream = SotwStream()
    stream.on_request(sotw_request(ENDPOINT, ["*"]))
    response = sotw_response(stream.respond(ENDPOINT, base))
    assert names_in(response) == CLUSTERS
    assert response.version_info == base.versions[ENDPOINT]


def test_sotw_clusters_by_name_like_grpc_clients(base):
    """gRPC's xDS client asks for every type by name, clusters included."""
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER, [CART_CLUSTER]))
    assert names_in(sotw_response(stream.respond(CLUSTER, base))) == [CART_CLUSTER]


def test_sotw_nothing_to_send_when_up_to_date(base):
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER))
    first = sotw_response(stream.respond(CLUSTER, base))
    assert stream.respond(CLUSTER, base) is None, "same version is not sent twice"
    sotw_ack(stream, CLUSTER, first)
    assert stream.respond(CLUSTER, served_of(shop())) is None, "a recompile of the same mesh sends nothing"


def test_sotw_ack_updates_acked(base, pay_round_robin):
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER))
    first = sotw_response(stream.respond(CLUSTER, base))
    status = stream.status()[CLUSTER]
    assert (status["sent"], status["nonce"], status["acked"], status["pushes"]) == \
           (first.version_info, first.nonce, None, 1)
    assert sotw_ack(stream, CLUSTER, first) == (True, None)
    assert stream.status()[CLUSTER]["acked"] == base.versions[CLUSTER]
    second = sotw_response(stream.respond(CLUSTER, pay_round_robin))
    assert second.nonce != first.nonce
    assert stream.status()[CLUSTER]["acked"] == base.versions[CLUSTER], "not acked until the proxy says so"
    sotw_ack(stream, CLUSTER, second)
    assert stream.status()[CLUSTER]["acked"] == pay_round_robin.versions[CLUSTER]
    assert stream.status()[CLUSTER]["pushes"] == 2
    assert stream.status()[CLUSTER]["last_nack"] is None


def test_sotw_nack_keeps_acked_and_never_resends_the_rejected_version(base, pay_round_robin):
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER))
    sotw_ack(stream, CLUSTER, sotw_response(stream.respond(CLUSTER, base)))
    bad = sotw_response(stream.respond(CLUSTER, pay_round_robin))
    # Envoy NACKs with the version it still holds and the nonce of the response it rejects
    current, nack = stream.on_request(sotw_request(CLUSTER, version=base.versions[CLUSTER], nonce=bad.nonce,
                                                   error="cluster outbound|8080: bad lb policy"))
    assert current
    assert nack is not None
    assert (nack.version, nack.message) == (bad.version_info, "cluster outbound|8080: bad lb policy")
    status = stream.status()[CLUSTER]
    assert status["acked"] == base.versions[CLUSTER]
    assert status["last_nack"]["version"] == pay_round_robin.versions[CLUSTER]
    assert status["last_nack"]["error"] == "cluster outbound|8080: bad lb policy"
    assert status["last_nack"]["at"].endswith("Z")
    assert stream.respond(CLUSTER, pay_round_robin) is None, "the rejected version is not sent again"
    # a new publish that compiles to the same version: still not sent
    assert stream.respond(CLUSTER, served_of(shop(extra=PAY_ROUND_ROBIN))) is None
    # a different version is sent
    fixed = served_of(shop(pay="10.1.0.3", extra=PAY_ROUND_ROBIN.replace("ROUND_ROBIN", "RANDOM")))
    assert fixed.versions[CLUSTER] not in (base.versions[CLUSTER], pay_round_robin.versions[CLUSTER])
    response = sotw_response(stream.respond(CLUSTER, fixed))
    assert response.version_info == fixed.versions[CLUSTER]
    assert stream.status()[CLUSTER]["pushes"] == 3
    sotw_ack(stream, CLUSTER, response)
    assert stream.status()[CLUSTER]["acked"] == fixed.versions[CLUSTER]
    assert stream.status()[CLUSTER]["last_nack"]["version"] == pay_round_robin.versions[CLUSTER], "kept for syncz"


def test_sotw_a_rejected_version_is_not_sent_even_after_another_one(base, pay_round_robin, cart_moved):
    """NACK of v2, then v3 is sent and taken, then the mesh goes back to v2's content: not sent,
    the proxy would only reject it again."""
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER))
    sotw_ack(stream, CLUSTER, sotw_response(stream.respond(CLUSTER, base)))
    bad = sotw_response(stream.respond(CLUSTER, pay_round_robin))
    stream.on_request(sotw_request(CLUSTER, version=base.versions[CLUSTER], nonce=bad.nonce, error="no"))
    random = served_of(shop(extra=PAY_ROUND_ROBIN.replace("ROUND_ROBIN", "RANDOM")))
    sotw_ack(stream, CLUSTER, sotw_response(stream.respond(CLUSTER, random)))
    assert stream.respond(CLUSTER, pay_round_robin) is None
    assert stream.status()[CLUSTER]["acked"] == random.versions[CLUSTER]


def test_sotw_going_back_to_the_acked_version_after_a_nack_is_sent(base, pay_round_robin):
    """A Git revert after a rejected change: the proxy holds the old version, sending it is harmless
    and brings the server's idea of 'sent' back in line."""
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER))
    sotw_ack(stream, CLUSTER, sotw_response(stream.respond(CLUSTER, base)))
    bad = sotw_response(stream.respond(CLUSTER, pay_round_robin))
    stream.on_request(sotw_request(CLUSTER, version=base.versions[CLUSTER], nonce=bad.nonce, error="no"))
    back = sotw_response(stream.respond(CLUSTER, base))
    assert back.version_info == base.versions[CLUSTER]


def test_sotw_stale_nonce_is_ignored(base, pay_round_robin):
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER))
    first = sotw_response(stream.respond(CLUSTER, base))
    second = sotw_response(stream.respond(CLUSTER, pay_round_robin))  # a push before the proxy answered
    # the proxy's ACK of the first response arrives now: stale
    assert sotw_ack(stream, CLUSTER, first) == (False, None)
    assert stream.status()[CLUSTER]["acked"] is None
    # a stale NACK records nothing and rejects nothing
    assert stream.on_request(sotw_request(CLUSTER, nonce=first.nonce, error="late")) == (False, None)
    assert stream.status()[CLUSTER]["last_nack"] is None
    # nor does a stale request change the subscription
    stream.on_request(sotw_request(CLUSTER, [CART_CLUSTER], nonce=first.nonce))
    assert stream.status()[CLUSTER]["subscription"] == "*"
    assert sotw_ack(stream, CLUSTER, second) == (True, None)
    assert stream.status()[CLUSTER]["acked"] == pay_round_robin.versions[CLUSTER]


def test_sotw_nonces_are_unique_within_a_stream(base, cart_moved):
    stream = SotwStream()
    nonces = []
    for type_url in PUSH_ORDER:
        stream.on_request(sotw_request(type_url, [] if type_url in WILDCARD_TYPES else ["*"]))
        nonces.append(sotw_response(stream.respond(type_url, base)).nonce)
    nonces.append(sotw_response(stream.respond(ENDPOINT, cart_moved)).nonce)
    assert len(set(nonces)) == len(nonces) == 5


@pytest.mark.parametrize("type_url", PUSH_ORDER)
def test_sotw_reconnect_with_the_current_version_gets_nothing(base, type_url):
    names = [] if type_url in WILDCARD_TYPES else list(base.resources[type_url])
    version = base.sotw(type_url, None if not names else frozenset(names))[0]
    stream = SotwStream()
    assert stream.on_request(sotw_request(type_url, names, version=version)) == (True, None)
    assert stream.respond(type_url, base) is None
    assert stream.status()[type_url]["acked"] == version


def test_sotw_reconnect_with_an_old_version_gets_the_current_one(base, cart_moved):
    stream = SotwStream()
    stream.on_request(sotw_request(ENDPOINT, [CART_CLUSTER], version=base.sotw(ENDPOINT, frozenset({CART_CLUSTER}))[0]))
    response = sotw_response(stream.respond(ENDPOINT, cart_moved))
    assert names_in(response) == [CART_CLUSTER]
    assert response.version_info == cart_moved.sotw(ENDPOINT, frozenset({CART_CLUSTER}))[0]
    # and a reconnecting wildcard proxy whose version is unknown gets everything
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER, version="0123456789abcdef"))
    assert names_in(sotw_response(stream.respond(CLUSTER, base))) == CLUSTERS


def test_sotw_eds_subscription_changes_get_exactly_the_requested_names(base):
    stream = SotwStream()
    stream.on_request(sotw_request(ENDPOINT, [CART_CLUSTER]))
    first = sotw_response(stream.respond(ENDPOINT, base))
    assert names_in(first) == [CART_CLUSTER]
    # Envoy learns of a new cluster: its ACK names both
    assert sotw_ack(stream, ENDPOINT, first, [CART_CLUSTER, PAY_CLUSTER]) == (True, None)
    both = sotw_response(stream.respond(ENDPOINT, base))
    # it holds cart already: only pay is sent (leaving an assignment out keeps it), at both's version
    assert names_in(both) == [PAY_CLUSTER]
    assert both.version_info == base.sotw(ENDPOINT, frozenset(CLUSTERS))[0]
    assert stream.status()[ENDPOINT]["subscription"] == sorted(CLUSTERS)
    # one cluster goes away: it holds the other, so nothing is sent
    sotw_ack(stream, ENDPOINT, both, [PAY_CLUSTER])
    assert stream.respond(ENDPOINT, base) is None
    assert stream.status()[ENDPOINT]["acked"] == base.sotw(ENDPOINT, frozenset({PAY_CLUSTER}))[0]
    assert len({first.version_info, both.version_info, stream.status()[ENDPOINT]["acked"]}) == 3
    # asking for cart again sends it again: it dropped it
    stream.on_request(sotw_request(ENDPOINT, CLUSTERS, both.version_info, both.nonce))
    assert names_in(sotw_response(stream.respond(ENDPOINT, base))) == [CART_CLUSTER]


def test_sotw_acks_listing_the_subscription_again_keep_it_in_any_order(base):
    """An ACK lists the subscription again (a thousand names, on every ACK): listed as before, in another
    order, or by another stream, it is the one set the streams share; listed with other names, however
    many, it is another."""
    subscriptions = Subscriptions()
    one, other = SotwStream(subscriptions), SotwStream(subscriptions)
    one.on_request(sotw_request(ENDPOINT, CLUSTERS))
    other.on_request(sotw_request(ENDPOINT, CLUSTERS[::-1]))
    shared = one.types[ENDPOINT].names
    assert shared == frozenset(CLUSTERS) and other.types[ENDPOINT].names is shared
    for stream in (one, other):
        response = sotw_response(stream.respond(ENDPOINT, base))
        for listed in (CLUSTERS, CLUSTERS[::-1], CLUSTERS):
            assert sotw_ack(stream, ENDPOINT, response, listed) == (True, None)
            assert stream.types[ENDPOINT].names is shared
    one.on_request(sotw_request(ENDPOINT, [PAY_CLUSTER, "outbound|1||new"], one.types[ENDPOINT].sent_version,
                                one.types[ENDPOINT].sent_nonce))  # as many names as before, not the same
    assert one.types[ENDPOINT].names == frozenset({PAY_CLUSTER, "outbound|1||new"})
    one.on_request(sotw_request(ENDPOINT, [PAY_CLUSTER], one.types[ENDPOINT].sent_version,
                                one.types[ENDPOINT].sent_nonce))
    assert one.types[ENDPOINT].names == frozenset({PAY_CLUSTER})
    one.on_request(sotw_request(ENDPOINT, [PAY_CLUSTER, CART_CLUSTER, "outbound|1||new"],
                                one.types[ENDPOINT].sent_version, one.types[ENDPOINT].sent_nonce))
    assert one.types[ENDPOINT].names == frozenset(CLUSTERS) | {"outbound|1||new"}
    assert other.types[ENDPOINT].names is shared


def test_sotw_endpoints_that_did_not_change_are_left_out(base, cart_moved):
    """State of the world keeps an assignment a response leaves out, so only changed ones are sent;
    proxies of a view that were in step share one response."""
    streams = [SotwStream(), SotwStream()]
    for stream in streams:
        stream.on_request(sotw_request(ENDPOINT, CLUSTERS))
        sotw_ack(stream, ENDPOINT, sotw_response(stream.respond(ENDPOINT, base)), CLUSTERS)
    updates = [stream.respond(ENDPOINT, cart_moved) for stream in streams]
    assert updates[0] is updates[1]
    update = sotw_response(updates[0])
    assert names_in(update) == [CART_CLUSTER]
    assert update.version_info == cart_moved.versions[ENDPOINT]
    # a NACK: the proxy keeps what it ACKed (base), and the next update is built on that
    streams[0].on_request(sotw_request(ENDPOINT, CLUSTERS, base.versions[ENDPOINT], update.nonce, error="no"))
    assert streams[0].respond(ENDPOINT, cart_moved) is None  # that version was rejected
    assert streams[0].respond(ENDPOINT, base) is None  # back to what it holds: nothing to send
    assert streams[0].status()[ENDPOINT]["sent"] == base.versions[ENDPOINT]
    again = served_of(shop(cart="10.1.0.5"))
    assert names_in(sotw_response(streams[0].respond(ENDPOINT, again))) == [CART_CLUSTER]


def test_sotw_wildcard_ends_with_a_request_that_names_resources(base):
    """After a wildcard start, a request with names and no "*" is a named subscription; an empty one
    keeps the wildcard (Envoy repeats its legacy wildcard request as an empty one)."""
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER))
    first = sotw_response(stream.respond(CLUSTER, base))
    sotw_ack(stream, CLUSTER, first)
    assert stream.status()[CLUSTER]["subscription"] == "*"
    assert stream.respond(CLUSTER, base) is None
    sotw_ack(stream, CLUSTER, first, [PAY_CLUSTER])
    assert stream.status()[CLUSTER]["subscription"] == [PAY_CLUSTER]
    named = sotw_response(stream.respond(CLUSTER, base))
    assert names_in(named) == [PAY_CLUSTER]
    # back to wildcard with an explicit "*" (names may come along)
    sotw_ack(stream, CLUSTER, named, ["*", PAY_CLUSTER])
    assert stream.status()[CLUSTER]["subscription"] == "*"
    assert names_in(sotw_response(stream.respond(CLUSTER, base))) == CLUSTERS


def test_sotw_subscription_change_before_any_response(base):
    """A second request on a type before the server answered the first (no nonce yet)."""
    stream = SotwStream()
    stream.on_request(sotw_request(ROUTE, ["8080"]))
    stream.on_request(sotw_request(ROUTE, ["8080", "9080"]))
    assert names_in(sotw_response(stream.respond(ROUTE, base))) == ROUTES


def test_sotw_types_are_independent(base, cart_moved):
    stream = SotwStream()
    stream.on_request(sotw_request(CLUSTER))
    stream.on_request(sotw_request(ENDPOINT, CLUSTERS))
    cds = sotw_response(stream.respond(CLUSTER, base))
    eds = sotw_response(stream.respond(ENDPOINT, base))
    sotw_ack(stream, CLUSTER, cds)
    eds_nack = stream.on_request(sotw_request(ENDPOINT, CLUSTERS, nonce=eds.nonce, error="bad"))[1]
    assert eds_nack is not None
    assert stream.status()[CLUSTER]["last_nack"] is None
    assert stream.respond(CLUSTER, cart_moved) is None
    assert names_in(sotw_response(stream.respond(ENDPOINT, cart_moved))) == CLUSTERS
    assert stream.subscribed(CLUSTER) and stream.subscribed(ENDPOINT) and not stream.subscribed(LISTENER)


# --- delta ----------------------------------------------------------------------------------------

def delta_names(response) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def versions_of(served, type_url: str, names=None) -> dict[str, str]:
    return {n: r.version for n, r in served.resources[type_url].items() if names is None or n in names}


@pytest.mark.parametrize("type_url", [CLUSTER, LISTENER])
def test_delta_wildcard_for_clusters_and_listeners(base, type_url):
    stream = DeltaStream()
    assert stream.on_request(delta_request(type_url)) == (True, None)
    response = delta_response(stream.respond(type_url, base))
    assert delta_names(response) == versions_of(base, type_url)
    assert response.system_version_info == base.versions[type_url]
    assert not response.removed_resources
    for r in response.resources:
        assert r.resource.SerializeToString(deterministic=True) == packed(type_url, base.resources[type_url][r.name])
    assert stream.status()[type_url]["subscription"] == "*"
    assert stream.respond(type_url, base) is None, "nothing sent twice"


def test_delta_only_changed_resources_after_a_change(base, cart_moved, pay_round_robin):
    stream = DeltaStream()
    for type_url in PUSH_ORDER:
        stream.on_request(delta_request(type_url, [] if type_url in WILDCARD_TYPES else ["*"]))
        delta_ack(stream, type_url, delta_response(stream.respond(type_url, base)))
    assert all(stream.respond(t, served_of(shop())) is None for t in PUSH_ORDER)
    assert stream.respond(CLUSTER, cart_moved) is None
    assert stream.respond(LISTENER, cart_moved) is None
    assert stream.respond(ROUTE, cart_moved) is None
    response = delta_response(stream.respond(ENDPOINT, cart_moved))
    assert delta_names(response) == {CART_CLUSTER: cart_moved.resources[ENDPOINT][CART_CLUSTER].version}
    assert not response.removed_resources
    assert response.system_version_info == cart_moved.versions[ENDPOINT]
    delta_ack(stream, ENDPOINT, response)
    assert stream.status()[ENDPOINT]["acked"] == cart_moved.versions[ENDPOINT]
    # pay's cluster changes: only it, and the assignment that moved back is sent too
    assert delta_names(delta_response(stream.respond(CLUSTER, pay_round_robin))) == \
           {PAY_CLUSTER: pay_round_robin.resources[CLUSTER][PAY_CLUSTER].version}
    assert delta_names(delta_response(stream.respond(ENDPOINT, pay_round_robin))) == \
           {CART_CLUSTER: base.resources[ENDPOINT][CART_CLUSTER].version}


def test_delta_in_step_sends_what_comparing_every_resource_sends(base, cart_moved, pay_round_robin, without_pay):
    """A delta stream that holds a view is sent, for a later one, what changed between the two
    (ServedView.since, once per pair of views); the same as comparing each resource with what it holds,
    view after view: resources changed, gone, back again, a NACK (its version never sent again), a
    subscription changed."""
    def responses(stream: DeltaStream, served) -> dict:
        found = {}
        for type_url in PUSH_ORDER:
            data = stream.respond(type_url, served)
            if data is not None:
                response = delta_response(data)
                found[type_url] = (delta_names(response), sorted(response.removed_resources))
                delta_ack(stream, type_url, response, error="no" if (type_url, served) == (CLUSTER, pay_round_robin)
                          else None)
        return found

    in_step, comparing = DeltaStream(), DeltaStream()
    for stream in (in_step, comparing):
        for type_url in PUSH_ORDER:
            stream.on_request(delta_request(type_url, [] if type_url in WILDCARD_TYPES else [CART_CLUSTER]))
    views = [base, cart_moved, pay_round_robin, cart_moved, without_pay, base, cart_moved, base]
    for number, served in enumerate(views):
        for state in comparing.types.values():
            state.in_step = None  # compares each resource with what it holds
        expected = responses(comparing, served)
        assert responses(in_step, served) == expected, (number, expected)
        if number == 5:  # both subscribe to pay's assignment too
            for stream in (in_step, comparing):
                stream.on_request(delta_request(ENDPOINT, [PAY_CLUSTER]))
        # after a first response, a view is answered from the one before, unless a NACK left it out of step
        assert (in_step.types[ENDPOINT].in_step is served) == (number != 5)
    assert in_step.types[CLUSTER].rejected == comparing.types[CLUSTER].rejected != set()


def test_delta_first_responses_of_a_view_share_one_body(base):
    """Every stream's first response carrying all of a type is the view's one body and the stream's own
    nonce: byte for byte the response made from each resource."""
    streams = [DeltaStream(), DeltaStream()]
    for stream in streams:
        stream.on_request(delta_request(ENDPOINT, ["*"]))
    first, second = (stream.respond(ENDPOINT, base) for stream in streams)
    everything = list(base.resources[ENDPOINT].values())
    for data in (first, second):
        nonce = delta_response(data).nonce
        assert data == wire.delta_response(wire.delta_body(base.versions[ENDPOINT],
                                                           delta_resources(ENDPOINT, everything), ENDPOINT), nonce, [])
    assert base.delta_all(ENDPOINT) is base.delta_all(ENDPOINT)


def test_delta_named_eds_subscribe_and_unsubscribe(base, cart_moved):
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, [CART_CLUSTER]))
    first = delta_response(stream.respond(ENDPOINT, base))
    assert delta_names(first) == versions_of(base, ENDPOINT, {CART_CLUSTER})
    assert stream.status()[ENDPOINT]["subscription"] == [CART_CLUSTER]
    # subscribing to another sends only that one
    delta_ack(stream, ENDPOINT, first, subscribe=[PAY_CLUSTER])
    second = delta_response(stream.respond(ENDPOINT, base))
    assert delta_names(second) == versions_of(base, ENDPOINT, {PAY_CLUSTER})
    delta_ack(stream, ENDPOINT, second)
    # unsubscribing sends nothing, not even a removal: the proxy dropped it itself
    delta_ack(stream, ENDPOINT, second, unsubscribe=[CART_CLUSTER])
    assert stream.status()[ENDPOINT]["subscription"] == [PAY_CLUSTER]
    assert stream.respond(ENDPOINT, base) is None
    assert stream.respond(ENDPOINT, cart_moved) is None, "changes to an unsubscribed name are not sent"
    # subscribing again sends it again, even at the version the proxy once had
    stream.on_request(delta_request(ENDPOINT, [CART_CLUSTER]))
    again = delta_response(stream.respond(ENDPOINT, base))
    assert delta_names(again) == versions_of(base, ENDPOINT, {CART_CLUSTER})


def test_delta_named_subscription_of_an_unknown_name_sends_nothing_yet(base):
    stream = DeltaStream()
    stream.on_request(delta_request(ROUTE, ["404"]))
    assert stream.respond(ROUTE, base) is None


def test_delta_removed_resources_when_a_service_disappears(base, without_pay):
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    stream.on_request(delta_request(ENDPOINT, CLUSTERS))
    stream.on_request(delta_request(LISTENER))
    stream.on_request(delta_request(ROUTE, ["9080"]))  # not subscribed to pay's route
    for type_url in PUSH_ORDER:
        delta_ack(stream, type_url, delta_response(stream.respond(type_url, base)))
    for type_url, gone in [(CLUSTER, [PAY_CLUSTER]), (ENDPOINT, [PAY_CLUSTER]), (LISTENER, ["0.0.0.0_8080"])]:
        response = delta_response(stream.respond(type_url, without_pay))
        assert list(response.removed_resources) == gone, type_url
        assert not response.resources, "cart is unchanged (same revision)"
        assert response.system_version_info == without_pay.versions[type_url]
        delta_ack(stream, type_url, response)
        assert stream.respond(type_url, without_pay) is None, "a removal is sent once"
    assert stream.respond(ROUTE, without_pay) is None, "route 8080 was never held"
    # the service comes back: sent again
    assert delta_names(delta_response(stream.respond(CLUSTER, base))) == versions_of(base, CLUSTER, {PAY_CLUSTER})


def test_delta_nack_reverts_and_rejected_version_is_not_resent(base, pay_round_robin):
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    delta_ack(stream, CLUSTER, delta_response(stream.respond(CLUSTER, base)))
    bad = delta_response(stream.respond(CLUSTER, pay_round_robin))
    assert delta_names(bad) == versions_of(pay_round_robin, CLUSTER, {PAY_CLUSTER})
    current, nack = delta_ack(stream, CLUSTER, bad, error="bad lb policy")
    assert current and nack is not None
    assert (nack.version, nack.message) == (pay_round_robin.versions[CLUSTER], "bad lb policy")
    status = stream.status()[CLUSTER]
    assert status["acked"] == base.versions[CLUSTER]
    assert status["last_nack"]["error"] == "bad lb policy"
    assert stream.respond(CLUSTER, pay_round_robin) is None, "the rejected resource version is not resent"
    assert stream.respond(CLUSTER, served_of(shop(extra=PAY_ROUND_ROBIN))) is None, "nor after a recompile"
    # the proxy is back on base: going back to base sends nothing
    assert stream.respond(CLUSTER, base) is None
    # a different version of the rejected resource is sent
    random = served_of(shop(extra=PAY_ROUND_ROBIN.replace("ROUND_ROBIN", "RANDOM")))
    fixed = delta_response(stream.respond(CLUSTER, random))
    assert delta_names(fixed) == versions_of(random, CLUSTER, {PAY_CLUSTER})
    delta_ack(stream, CLUSTER, fixed)
    assert stream.status()[CLUSTER]["acked"] == random.versions[CLUSTER]


def test_delta_nack_of_a_new_resource_forgets_it(base, without_pay):
    """The proxy never took the resource: a later, different version of it must be sent whole."""
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    delta_ack(stream, CLUSTER, delta_response(stream.respond(CLUSTER, without_pay)))
    added = delta_response(stream.respond(CLUSTER, base))
    assert delta_names(added) == versions_of(base, CLUSTER, {PAY_CLUSTER})
    delta_ack(stream, CLUSTER, added, error="no")
    assert stream.respond(CLUSTER, base) is None
    # gone again: nothing to remove, the proxy never had it
    assert stream.respond(CLUSTER, without_pay) is None
    other = served_of(shop(extra=PAY_ROUND_ROBIN))
    assert delta_names(delta_response(stream.respond(CLUSTER, other))) == versions_of(other, CLUSTER, {PAY_CLUSTER})


def test_delta_nack_of_a_removal_sends_the_removal_again(base, without_pay):
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    delta_ack(stream, CLUSTER, delta_response(stream.respond(CLUSTER, base)))
    removal = delta_response(stream.respond(CLUSTER, without_pay))
    assert list(removal.removed_resources) == [PAY_CLUSTER]
    delta_ack(stream, CLUSTER, removal, error="no")
    assert list(delta_response(stream.respond(CLUSTER, without_pay)).removed_resources) == [PAY_CLUSTER]


def test_delta_unknown_nonce_is_ignored(base, pay_round_robin):
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    first = delta_response(stream.respond(CLUSTER, base))
    delta_ack(stream, CLUSTER, first)
    # an answer to the same nonce again, or to one never sent, changes nothing
    assert delta_ack(stream, CLUSTER, first, error="late") == (True, None)
    assert stream.on_request(delta_request(CLUSTER, nonce="999", error="???")) == (True, None)
    assert stream.status()[CLUSTER]["last_nack"] is None
    assert stream.status()[CLUSTER]["acked"] == base.versions[CLUSTER]
    assert delta_response(stream.respond(CLUSTER, pay_round_robin)).resources


def test_delta_initial_resource_versions_suppress_unchanged_resources(base, cart_moved, without_pay):
    # all current: nothing to send
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER, initial=versions_of(base, CLUSTER)))
    assert stream.respond(CLUSTER, base) is None
    # one outdated: only that one
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, CLUSTERS, initial=versions_of(base, ENDPOINT)))
    assert delta_names(delta_response(stream.respond(ENDPOINT, cart_moved))) == \
           versions_of(cart_moved, ENDPOINT, {CART_CLUSTER})
    # one the server no longer has: removed
    stream = DeltaStream()
    stream.on_request(delta_request(LISTENER, initial=versions_of(base, LISTENER)))
    response = delta_response(stream.respond(LISTENER, without_pay))
    assert list(response.removed_resources) == ["0.0.0.0_8080"] and not response.resources
    # one the proxy lacks: sent
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER, initial=versions_of(base, CLUSTER, {CART_CLUSTER})))
    assert delta_names(delta_response(stream.respond(CLUSTER, base))) == versions_of(base, CLUSTER, {PAY_CLUSTER})


def test_delta_star_subscribe_and_unsubscribe(base, cart_moved):
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, [CART_CLUSTER]))
    delta_ack(stream, ENDPOINT, delta_response(stream.respond(ENDPOINT, base)))
    # "*" adds everything else
    stream.on_request(delta_request(ENDPOINT, ["*"]))
    assert stream.status()[ENDPOINT]["subscription"] == "*"
    star = delta_response(stream.respond(ENDPOINT, base))
    assert delta_names(star) == versions_of(base, ENDPOINT, {PAY_CLUSTER})
    delta_ack(stream, ENDPOINT, star)
    # unsubscribing "*" keeps the named ones; Envoy drops what only the wildcard brought
    delta_ack(stream, ENDPOINT, star, unsubscribe=["*"])
    assert stream.status()[ENDPOINT]["subscription"] == [CART_CLUSTER]
    assert stream.respond(ENDPOINT, base) is None
    moved = delta_response(stream.respond(ENDPOINT, cart_moved))
    assert delta_names(moved) == versions_of(cart_moved, ENDPOINT, {CART_CLUSTER})
    delta_ack(stream, ENDPOINT, moved)
    # "*" again: what the wildcard brought must be sent again, the named one is current
    stream.on_request(delta_request(ENDPOINT, ["*"]))
    again = delta_response(stream.respond(ENDPOINT, cart_moved))
    assert delta_names(again) == versions_of(cart_moved, ENDPOINT, {PAY_CLUSTER})


def test_delta_legacy_wildcard_is_only_for_a_first_empty_request(base):
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER, [CART_CLUSTER]))
    assert stream.status()[CLUSTER]["subscription"] == [CART_CLUSTER]
    assert delta_names(delta_response(stream.respond(CLUSTER, base))) == versions_of(base, CLUSTER, {CART_CLUSTER})
    # for endpoints an empty first request subscribes to nothing
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT))
    assert stream.status()[ENDPOINT]["subscription"] == []
    assert stream.respond(ENDPOINT, base) is None


def test_delta_nonces_are_unique_and_pending_answers_are_matched(base, cart_moved):
    """Two responses in flight, answered in order: each answer settles its own response."""
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, CLUSTERS))
    first = delta_response(stream.respond(ENDPOINT, base))
    second = delta_response(stream.respond(ENDPOINT, cart_moved))
    assert first.nonce != second.nonce
    assert delta_names(second) == versions_of(cart_moved, ENDPOINT, {CART_CLUSTER})
    delta_ack(stream, ENDPOINT, first)
    assert stream.status()[ENDPOINT]["acked"] == base.versions[ENDPOINT]
    delta_ack(stream, ENDPOINT, second)
    assert stream.status()[ENDPOINT]["acked"] == cart_moved.versions[ENDPOINT]
    assert stream.status()[ENDPOINT]["pushes"] == 2


def test_sotw_first_request_of_a_stream_may_carry_the_previous_streams_nonce(base):
    """Istio's rule: a reconnecting proxy may send the nonce of its old stream; on a new stream that is
    not stale, it is the proxy saying what it holds."""
    version = base.versions[CLUSTER]
    stream = SotwStream()
    assert stream.on_request(sotw_request(CLUSTER, version=version, nonce="41")) == (True, None)
    assert stream.respond(CLUSTER, base) is None
    stream = SotwStream()
    assert stream.on_request(sotw_request(CLUSTER, version="0123456789abcdef", nonce="41")) == (True, None)
    assert names_in(sotw_response(stream.respond(CLUSTER, base))) == CLUSTERS
