"""AdsServer in-process on a loopback port, driven by a real gRPC client (grpc.aio) speaking ADS.

Each test runs its own event loop (asyncio.run) with a deadline, so a server that fails to answer,
or spins, fails the test instead of hanging it. Whether a response was *not* sent is checked with a sentinel:
a later change whose response must be the very next message on the stream.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import signal

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from compiler.view import make_view
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPES
from reconciler.ads.server import AdsServer
from reconciler.ads.views import serve_view
from reconciler.metrics import Metrics
from envoy.config.endpoint.v3 import endpoint_pb2

from tests.conftest import ONE_CLUSTER, mesh_from
from tests.test_ads_protocol import (CART_CLUSTER, CLUSTERS, LISTENERS, PAY_CLUSTER, PAY_ROUND_ROBIN, ROUTES,
                                     names_in, service, shop)

PUSH_ORDER = tuple(t.url for t in TYPES)  # the type URLs, in push order

DEADLINE = 4.0      # a whole test
READ_TIMEOUT = 3.0  # one response


class Overrun(Exception):
    """A test ran past its deadline: waiting for something that never came, or stuck in a
    coroutine that never yields (which no asyncio timeout can interrupt)."""


def asynchronous(test=None, *, deadline: float = DEADLINE):
    """Run an async test function on a fresh event loop within a deadline, enforced by an alarm
    signal: its handler raises Overrun in whatever runs, so the test fails instead of hanging the suite."""
    if test is None:
        return functools.partial(asynchronous, deadline=deadline)

    def overrun(signum, frame):
        raise Overrun(f"still running {deadline} s into the test")

    @functools.wraps(test)
    def run(*args, **kwargs):
        previous = signal.signal(signal.SIGALRM, overrun)
        signal.setitimer(signal.ITIMER_REAL, deadline)
        try:
            asyncio.run(test(*args, **kwargs))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return run


def node_of(pod: str = "web-1", namespace: str = "shop", **metadata) -> base_pb2.Node:
    node = base_pb2.Node(id=f"sidecar~10.1.0.50~{pod}.{namespace}~{namespace}.svc.cluster.local")
    for key, value in metadata.items():
        node.metadata.fields[key].CopyFrom(struct_pb2.Value(string_value=value))
    return node


class Client:
    """One ADS stream, the way Envoy uses it: node on the first message only."""

    def __init__(self, stub, node: base_pb2.Node, delta: bool = False) -> None:
        self.node = node
        self.call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self._first = True

    async def send(self, request) -> None:
        if self._first:
            request.node.CopyFrom(self.node)
            self._first = False
        await self.call.write(request)

    async def request(self, type_url: str, names=(), version: str = "", nonce: str = "", error: str | None = None):
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                                 response_nonce=nonce)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.send(request)

    async def ack(self, response, names=(), error: str | None = None) -> None:
        await self.request(response.type_url, names, response.version_info, response.nonce, error)

    async def delta_request(self, type_url: str, subscribe=(), unsubscribe=(), nonce: str = "",
                            error: str | None = None) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(subscribe),
                                                      resource_names_unsubscribe=list(unsubscribe),
                                                      response_nonce=nonce)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.send(request)

    async def read(self):
        response = await asyncio.wait_for(self.call.read(), READ_TIMEOUT)
        assert response is not grpc.aio.EOF, "the server closed the stream"
        return response

    async def subscribe_all(self):
        """CDS and LDS by wildcard, EDS and RDS by name, each response ACKed; returns the responses."""
        responses = {}
        for type_url, names in [(CLUSTER, ()), (ENDPOINT, CLUSTERS), (LISTENER, ()), (ROUTE, ROUTES)]:
            await self.request(type_url, names)
            responses[type_url] = response = await self.read()
            assert response.type_url == type_url
            await self.ack(response, names)
        return responses


@contextlib.asynccontextmanager
async def running(mesh=None, cluster: str = "cluster-a"):
    server = AdsServer(cluster, Metrics())
    if mesh is not None:
        await server.publish(mesh)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def test_connected_proxies_are_counted_by_protocol_from_zero():
    """An alert on no proxy connected needs the series before the first proxy comes."""
    from reconciler.metrics import Metrics
    exposition = Metrics().exposition().decode()
    for protocol in ("sotw", "delta"):
        assert f'galleon_xds_connected_proxies{{protocol="{protocol}"}} 0.0' in exposition


def sample(server: AdsServer, name: str, **labels) -> float:
    value = server.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def eventually(check, what: str, timeout: float = READ_TIMEOUT):
    """Poll until check() holds: the server handles an ACK without answering it."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def types_of(server: AdsServer, node_id: str) -> dict:
    (status,) = [s for s in server.syncz() if s["node"] == node_id]
    return status["types"]


# --- tests ----------------------------------------------------------------------------------------

@asynchronous
async def test_sotw_stream_gets_every_type_of_its_view():
    mesh = shop()
    served = serve_view(mesh, make_view(mesh, "cluster-a"))
    async with running(mesh) as (server, stub):
        client = Client(stub, node_of())
        responses = await client.subscribe_all()
        assert names_in(responses[CLUSTER]) == CLUSTERS
        assert names_in(responses[ENDPOINT]) == CLUSTERS
        assert names_in(responses[LISTENER]) == LISTENERS
        assert names_in(responses[ROUTE]) == ROUTES
        (held,) = server.views.values()
        for type_url in PUSH_ORDER:
            assert responses[type_url].version_info == served.versions[type_url]
            # what crossed the wire is the view's response, serialized once for all its proxies
            assert responses[type_url].SerializeToString(deterministic=True) == held.sotw(type_url, None)[2]
        assert len({r.nonce for r in responses.values()}) == 4
        await eventually(lambda: types_of(server, client.node.id)[ROUTE]["acked"] is not None, "the RDS ACK")
        assert {t: s["acked"] for t, s in types_of(server, client.node.id).items()} == served.versions
        assert sample(server, "galleon_xds_pushes_total", type="clusters") == 1
        assert sample(server, "galleon_xds_connected_proxies", protocol="sotw") == 1


@asynchronous
async def test_two_streams_of_one_view_share_one_compile():
    async with running(shop()) as (server, stub):
        assert sample(server, "galleon_compile_seconds_count") == 0, "no proxy yet, nothing compiled"
        first, second = Client(stub, node_of("web-1")), Client(stub, node_of("web-2"))
        # (two proxies asking while the view compiles: test_concurrent_asks_for_one_view_compile_once)
        await first.request(CLUSTER)
        one = await first.read()
        await second.request(CLUSTER)
        two = await second.read()
        assert one.version_info == two.version_info
        assert one.resources == two.resources
        assert sample(server, "galleon_compile_seconds_count") == 1
        assert sample(server, "galleon_xds_views") == 1
        assert len(server.views) == 1
        # a proxy in another namespace is another view
        third = Client(stub, node_of("api-1", "api"))
        await third.request(CLUSTER)
        await third.read()
        assert sample(server, "galleon_compile_seconds_count") == 2
        assert sample(server, "galleon_xds_views") == 2
        assert sample(server, "galleon_xds_connected_proxies", protocol="sotw") == 3
        # a publish compiles once per view in use, not once per stream
        await server.publish(shop(extra=PAY_ROUND_ROBIN))
        assert sample(server, "galleon_compile_seconds_count") == 4
        assert sample(server, "galleon_xds_views") == 2
        for client in (first, second, third):
            assert names_in(await client.read()) == CLUSTERS


@asynchronous(deadline=1.0)
async def test_concurrent_asks_for_one_view_compile_once():
    """Proxies of one view that connect while it compiles wait for that one compile. One asks at
    every turn of the event loop until the first is served, so some ask in the window where the
    compile has finished and its first asker has not yet resumed to store it: a waiter there must
    still yield (or take the result), not spin on the finished future and freeze the loop."""
    mesh = shop()
    view = make_view(mesh, "cluster-a", node_of().id)
    server = AdsServer("cluster-a", Metrics())
    try:
        await server.publish(mesh)
        first = asyncio.ensure_future(server.served(view))
        waiters = []
        while not first.done():
            waiters.append(asyncio.ensure_future(server.served(view)))
            await asyncio.sleep(0)
        results = await asyncio.gather(*waiters)
        assert len(waiters) >= 2
        assert all(result is first.result() for result in results)
        assert sample(server, "galleon_compile_seconds_count") == 1
        assert sample(server, "galleon_xds_views") == 1
    finally:
        await server.stop(0)


@asynchronous
async def test_a_node_of_an_unknown_cluster_is_refused_with_invalid_argument():
    async with running(shop()) as (server, stub):
        for delta in (False, True):
            client = Client(stub, node_of(CLUSTER_ID="cluster-z"), delta=delta)
            if delta:
                await client.delta_request(CLUSTER)
            else:
                await client.request(CLUSTER)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "cluster-z" in caught.value.details()
            assert "cluster-a" in caught.value.details(), "the message lists the clusters there are"
        assert server.syncz() == []
        assert sample(server, "galleon_xds_connected_proxies", protocol="sotw") == 0
        # the server still serves proxies it knows
        good = Client(stub, node_of())
        await good.request(CLUSTER)
        assert names_in(await good.read()) == CLUSTERS


@asynchronous
async def test_a_stream_waits_for_the_first_publish():
    async with running(None) as (server, stub):
        client = Client(stub, node_of())
        await client.request(CLUSTER)
        reading = asyncio.ensure_future(client.read())
        await asyncio.sleep(0.05)
        assert not reading.done(), "nothing to serve before a mesh is published"
        await server.publish(shop())
        assert names_in(await reading) == CLUSTERS


@asynchronous
async def test_publish_wakes_a_stream_with_only_the_changed_types():
    async with running(shop()) as (server, stub):
        client = Client(stub, node_of())
        before = await client.subscribe_all()
        node_id = client.node.id
        await eventually(lambda: types_of(server, node_id)[ROUTE]["acked"] is not None, "the RDS ACK")

        # one endpoint moves: only EDS is pushed
        await server.publish(shop(cart="10.1.0.9"))
        eds = await client.read()
        assert eds.type_url == ENDPOINT
        assert names_in(eds) == [CART_CLUSTER], "SotW: only the assignment that changed (pay's is kept)"
        assert eds.version_info != before[ENDPOINT].version_info
        await client.ack(eds, CLUSTERS)

        # sentinel: the next change is to one cluster only; had LDS or RDS been pushed after EDS,
        # it would be read here first
        await server.publish(shop(cart="10.1.0.9", extra=PAY_ROUND_ROBIN))
        cds = await client.read()
        assert cds.type_url == CLUSTER
        assert cds.version_info != before[CLUSTER].version_info
        await client.ack(cds)
        await eventually(lambda: types_of(server, node_id)[CLUSTER]["acked"] == cds.version_info, "the CDS ACK")

        pushes = {t: s["pushes"] for t, s in types_of(server, node_id).items()}
        assert pushes == {CLUSTER: 2, ENDPOINT: 2, LISTENER: 1, ROUTE: 1}
        assert sample(server, "galleon_xds_push_latency_seconds_count", type="endpoints") == 1
        assert sample(server, "galleon_xds_push_latency_seconds_count", type="listeners") == 0

        # publishing the same mesh again, or the same content at a new revision, sends nothing;
        # a change to every type sends them all, clusters first (make before break)
        await server.publish(shop(cart="10.1.0.9", extra=PAY_ROUND_ROBIN))
        await server.publish(shop(cart="10.1.0.9", extra=PAY_ROUND_ROBIN, revision="r2"))
        await server.publish(shop(cart=None, pay="10.1.0.3", revision="r3"))
        assert [(await client.read()).type_url for _ in PUSH_ORDER] == list(PUSH_ORDER), "make before break"


@asynchronous
async def test_a_proxys_view_is_found_again_only_when_the_meshs_clusters_or_networks_are_others(monkeypatch):
    import dataclasses
    from reconciler.ads import server as server_module
    found = []
    real = server_module.view_of_node
    monkeypatch.setattr(server_module, "view_of_node", lambda *args: found.append(args[1].id) or real(*args))
    mesh = shop()
    async with running(mesh) as (server, stub):
        client = Client(stub, node_of())
        await client.subscribe_all()
        (connection,) = server.connections.values()
        assert found == [client.node.id]
        # a registry's endpoint change keeps the clusters and networks: the view it has is the view
        moved = dataclasses.replace(shop(cart="10.1.0.9"), clusters=mesh.clusters, networks=mesh.networks)
        await server.publish(moved, frozenset({CART_CLUSTER.split("|")[3]}))
        assert (await client.read()).type_url == ENDPOINT
        assert found == [client.node.id] and connection.view.network == "network-1"
        # a revision whose cluster is on another network: found again, and it is another view
        elsewhere = mesh_from({"mesh.yaml": ONE_CLUSTER.replace("network-1", "network-2")
                               + service("cart", "10.1.0.9", 9080) + service("pay", "10.1.0.2", 8080)})
        await server.publish(elsewhere)
        assert found == [client.node.id] * 2 and connection.view.network == "network-2"


@asynchronous
async def test_a_small_endpoint_update_is_served_on_the_loop_and_a_large_one_on_the_compile_thread(monkeypatch):
    """An endpoint update of a few services costs less than handing it to the compile thread and back
    while the loop is busy with streams; one of many services, a revision, or a proxyless client's view
    (compiled whole for any change) is compiled beside them."""
    import dataclasses
    import threading
    from reconciler.ads import server as server_module
    compiles = []  # (the view's role, whether on the loop's thread)
    real = server_module.serve_view
    loop_thread = threading.current_thread()
    monkeypatch.setattr(server_module, "serve_view", lambda *args: compiles.append(
        (args[1].role, threading.current_thread() is loop_thread)) or real(*args))
    mesh = shop()
    async with running(mesh) as (server, stub):
        client = Client(stub, node_of())
        await client.subscribe_all()
        assert compiles and not any(on_loop for _, on_loop in compiles), "a first compile: on the thread"
        compiles.clear()
        cart = CART_CLUSTER.split("|")[3]
        moved = dataclasses.replace(shop(cart="10.1.0.9"), clusters=mesh.clusters, networks=mesh.networks)
        await server.publish(moved, frozenset({cart}))
        assert compiles == [("sidecar", True)]
        await client.ack(await client.read(), [CART_CLUSTER, PAY_CLUSTER])
        compiles.clear()
        many = frozenset({cart} | {f"other-{n}.shop.svc.cluster.local" for n in range(server_module.INLINE_HOSTS)})
        back = dataclasses.replace(shop(), clusters=mesh.clusters, networks=mesh.networks)
        await server.publish(back, many)
        assert compiles == [("sidecar", False)]
        assert (await client.read()).type_url == ENDPOINT
        grpc_client = Client(stub, node_of("grpc-1", "shop", GENERATOR="grpc"))
        await grpc_client.request(CLUSTER)
        await grpc_client.read()
        compiles.clear()
        again = dataclasses.replace(shop(cart="10.1.0.8"), clusters=mesh.clusters, networks=mesh.networks)
        await server.publish(again, frozenset({cart}))
        assert sorted(compiles) == [("grpc", False), ("sidecar", True)]


@asynchronous
async def test_a_view_streams_still_hold_keeps_no_earlier_meshs_objects():
    """A stream holds the view its routes came from until they change (to send only what differs), and
    routes do not change with endpoints: under a registry's churn that view may be hours old. What its
    compile kept for the next one (the mesh's per-service objects) must go once the server has a newer
    view, else every stream keeps a mesh from before the churn, and with it every object replaced since
    (at 150,000 endpoints, the daemon's heap grew towards a second copy of them)."""
    import dataclasses
    import gc
    import weakref
    mesh = shop()
    first_objects = [weakref.ref(obj) for obj in mesh.per_service_objects.by_digest.values()]
    assert first_objects
    async with running() as (server, stub):
        await server.publish(mesh)
        client = Client(stub, node_of())
        await client.subscribe_all()
        (connection,) = server.connections.values()
        routes = connection.protocol.types[ROUTE]
        held_before = routes.holds[0]
        cart = CART_CLUSTER.split("|")[3]
        moved = dataclasses.replace(shop(cart="10.1.0.9"), clusters=mesh.clusters, networks=mesh.networks)
        del mesh
        await server.publish(moved, frozenset({cart}))
        await client.ack(await client.read(), [CART_CLUSTER, PAY_CLUSTER])
        assert routes.holds[0] is held_before, "the routes' view is still the first mesh's"
        del held_before
        gc.collect()
        assert not [ref() for ref in first_objects if ref() is not None], \
            "a view a stream holds keeps its mesh's objects"
        # the view served now is still the one the next compile starts from
        served = server.views[connection.view]
        assert served.compiled.units.objects is moved.per_service_objects
        await server.publish(dataclasses.replace(shop(cart="10.1.0.8"), clusters=moved.clusters,
                                                 networks=moved.networks), frozenset({cart}))
        assert (await client.read()).type_url == ENDPOINT


@asynchronous
async def test_a_view_no_proxy_is_on_any_more_keeps_no_mesh():
    """A revision that puts a proxy in another view (its cluster on another network) leaves the old
    view to the streams that still hold it, without the mesh it was compiled from."""
    async with running() as (server, stub):
        await server.publish(shop())
        client = Client(stub, node_of())
        await client.subscribe_all()
        (connection,) = server.connections.values()
        before = server.views[connection.view]
        assert before.compiled.units.objects is not None
        await server.publish(mesh_from({"mesh.yaml": ONE_CLUSTER.replace("network-1", "network-2")
                                        + service("cart", "10.1.0.9", 9080) + service("pay", "10.1.0.2", 8080)}))
        assert connection.view != before.view and before not in server.views.values()
        assert before.compiled.units.objects is None


@asynchronous
async def test_syncz_shows_node_versions_and_last_nack():
    async with running(shop()) as (server, stub):
        client = Client(stub, node_of())
        good = await client.subscribe_all()
        node_id = client.node.id
        await eventually(lambda: types_of(server, node_id)[ROUTE]["acked"] is not None, "the RDS ACK")
        (status,) = server.syncz()
        assert status["node"] == node_id
        assert status["protocol"] == "sotw"
        assert status["peer"]
        assert status["view"]["cluster"] == "cluster-a"
        assert status["view"]["network"] == "network-1"
        assert status["view"]["locality"] == "us-east/us-east-1a"
        assert status["view"]["namespace"] == "shop"
        assert status["types"][CLUSTER]["subscription"] == "*"
        assert status["types"][ENDPOINT]["subscription"] == sorted(CLUSTERS)
        for type_url in PUSH_ORDER:
            assert status["types"][type_url]["acked"] == status["types"][type_url]["sent"] \
                   == good[type_url].version_info
            assert status["types"][type_url]["last_nack"] is None

        # the proxy rejects a cluster change
        await server.publish(shop(extra=PAY_ROUND_ROBIN))
        bad = await client.read()
        assert bad.type_url == CLUSTER
        await client.request(CLUSTER, version=good[CLUSTER].version_info, nonce=bad.nonce,
                             error="cds: outbound|8080 rejected")
        await eventually(lambda: types_of(server, node_id)[CLUSTER]["last_nack"] is not None, "the NACK")
        cds = types_of(server, node_id)[CLUSTER]
        assert cds["acked"] == good[CLUSTER].version_info
        assert cds["sent"] == bad.version_info
        assert cds["last_nack"]["version"] == bad.version_info
        assert cds["last_nack"]["error"] == "cds: outbound|8080 rejected"
        assert sample(server, "galleon_xds_nacks_total", type="clusters") == 1

        # the same content published again is not resent; the sentinel (an endpoint move) comes next
        await server.publish(shop(extra=PAY_ROUND_ROBIN))
        await server.publish(shop(cart="10.1.0.9", extra=PAY_ROUND_ROBIN))
        assert (await client.read()).type_url == ENDPOINT


@asynchronous
async def test_a_closed_stream_leaves_syncz():
    async with running(shop()) as (server, stub):
        client = Client(stub, node_of())
        await client.request(CLUSTER)
        await client.read()
        assert [s["node"] for s in server.syncz()] == [client.node.id]
        assert server.connection_of(client.node.id) is not None
        await client.call.done_writing()
        await eventually(lambda: not server.syncz(), "the connection to go")
        assert server.connection_of(client.node.id) is None
        assert sample(server, "galleon_xds_connected_proxies", protocol="sotw") == 0
        # a publish with nobody connected compiles nothing
        compiled = sample(server, "galleon_compile_seconds_count")
        await server.publish(shop(pay=None))
        assert sample(server, "galleon_compile_seconds_count") == compiled


@asynchronous
async def test_reconnect_with_the_current_version_gets_nothing_new():
    mesh = shop()
    served = serve_view(mesh, make_view(mesh, "cluster-a"))
    async with running(mesh) as (server, stub):
        client = Client(stub, node_of())
        # a proxy that already holds the current clusters (from before a server restart)
        await client.request(CLUSTER, version=served.versions[CLUSTER])
        await client.request(LISTENER, version="0000000000000000")
        listeners = await client.read()
        assert listeners.type_url == LISTENER, "clusters are current: nothing for them"
        assert names_in(listeners) == LISTENERS


@asynchronous
async def test_delta_stream_sends_changes_and_removals():
    async with running(shop()) as (server, stub):
        client = Client(stub, node_of(), delta=True)
        await client.delta_request(CLUSTER)
        cds = await client.read()
        assert isinstance(cds, discovery_pb2.DeltaDiscoveryResponse)
        assert sorted(r.name for r in cds.resources) == CLUSTERS
        await client.delta_request(CLUSTER, nonce=cds.nonce)
        await client.delta_request(ENDPOINT, [CART_CLUSTER])
        eds = await client.read()
        assert [r.name for r in eds.resources] == [CART_CLUSTER]
        await client.delta_request(ENDPOINT, nonce=eds.nonce)
        node_id = client.node.id
        await eventually(lambda: types_of(server, node_id)[ENDPOINT]["acked"] is not None, "the EDS ACK")
        assert server.syncz()[0]["protocol"] == "delta"

        # pay goes away: its cluster is removed; EDS, subscribed to cart only, gets nothing
        await server.publish(shop(pay=None))
        removal = await client.read()
        assert removal.type_url == CLUSTER
        assert list(removal.removed_resources) == [PAY_CLUSTER]
        assert not removal.resources
        await client.delta_request(CLUSTER, nonce=removal.nonce)
        # sentinel: cart's endpoint moves, EDS sends cart alone
        await server.publish(shop(cart="10.1.0.9", pay=None))
        moved = await client.read()
        assert moved.type_url == ENDPOINT
        assert [r.name for r in moved.resources] == [CART_CLUSTER] and not moved.removed_resources


@asynchronous
async def test_a_proxy_whose_cluster_leaves_the_mesh_keeps_its_configuration():
    async with running(shop()) as (server, stub):
        client = Client(stub, node_of())
        before = await client.subscribe_all()
        node_id = client.node.id
        await eventually(lambda: types_of(server, node_id)[ROUTE]["acked"] is not None, "the RDS ACK")
        renamed = ONE_CLUSTER.replace("cluster-a", "cluster-z")
        moved = service("cart", "10.1.0.7", 9080).replace("cluster-a", "cluster-z")
        await server.publish(mesh_from({"mesh.yaml": renamed + moved}, "r2"))
        # it is held to what it had: nothing of the new mesh (cart at 10.1.0.7) is sent
        connection = server.connection_of(node_id)
        await eventually(lambda: connection.pinned is not None, "the proxy pinned")
        assert connection.pinned.revision == "r1" and connection.view not in server.views
        await client.request(ENDPOINT, CLUSTERS, before[ENDPOINT].version_info, before[ENDPOINT].nonce)
        # the cluster comes back: the proxy follows the mesh again, and gets only what changed
        await server.publish(shop(cart="10.1.0.8", revision="r3"))
        eds = await client.read()
        assert eds.type_url == ENDPOINT
        assignment = endpoint_pb2.ClusterLoadAssignment.FromString(eds.resources[0].value)
        assert assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "10.1.0.8"


@asynchronous
async def test_a_revision_that_fails_to_compile_leaves_the_previous_one_served(monkeypatch):
    """Fault injection: the compiler raising for one revision (a bug) must not leave proxies half on it."""
    import reconciler.ads.server as server_module
    real = server_module.serve_view

    def failing(mesh, view, previous=None, endpoints_of=None):
        if mesh.revision == "bad":
            raise RuntimeError("compiler bug")
        return real(mesh, view, previous, endpoints_of)

    monkeypatch.setattr(server_module, "serve_view", failing)
    async with running(shop()) as (server, stub):
        client = Client(stub, node_of())
        before = await client.subscribe_all()
        node_id = client.node.id
        await eventually(lambda: types_of(server, node_id)[ROUTE]["acked"] is not None, "the RDS ACK")
        with pytest.raises(RuntimeError, match="compiler bug"):
            await server.publish(shop(cart="10.1.0.9", revision="bad"))
        assert server.mesh.revision == "r1" and list(server.views.values())[0].revision == "r1"
        # the next good revision is served as usual
        await server.publish(shop(cart="10.1.0.8", revision="r2"))
        eds = await client.read()
        assert eds.type_url == ENDPOINT and eds.version_info != before[ENDPOINT].version_info
        assignment = endpoint_pb2.ClusterLoadAssignment.FromString(eds.resources[0].value)
        assert assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == "10.1.0.8"
