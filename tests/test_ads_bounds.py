"""Nothing a client sends grows the ADS server without bound (DESIGN.md, Security rules): the compiled
views fit in --views-memory, subscriptions go with their streams, a proxy's NACKs are logged at a
bounded rate. Driven through gRPC as tests/test_ads_server.py does, with its clients.

Memory is asserted twice: by the server's own accounting (AdsServer.held_bytes, exact), and by the
process's resident size, roughly (this process also runs the clients).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import time

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from structlog.testing import capture_logs

from compiler.view import make_view
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, TYPES
from reconciler.ads import protocol
from reconciler.ads import server as server_module
from reconciler.ads.server import AdsServer
from reconciler.ads.views import PARTIAL_RESPONSES, serve_view
from reconciler.metrics import Metrics
from tests.conftest import ONE_CLUSTER, mesh_from
from tests.test_ads_protocol import CART_CLUSTER, shop, sotw_request
from tests.test_ads_server import Client, asynchronous, eventually, node_of, sample

MiB = 1 << 20
SERVICES = 400  # a view of them holds about 2.8 MiB and compiles in about 0.1 s


def many(services: int = SERVICES, first: str = "10.2.0.1", revision: str = "r1"):
    """A one-cluster mesh of ``services`` ServiceEntries in namespace shop, two ports and two endpoints
    each; ``first`` is the first service's first endpoint (move it to make an EDS update)."""
    docs = [ONE_CLUSTER]
    for i in range(services):
        docs.append(f"""---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{i}, namespace: shop}}
spec:
  hosts: [svc-{i}.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}, {{number: 9090, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: {first if i == 0 else f"10.3.{i // 200}.{i % 200 + 1}"}}}, {{address: 10.4.{i // 200}.{i % 200 + 1}}}]
""")
    return mesh_from({"mesh.yaml": "".join(docs)}, revision)


@pytest.fixture(scope="module")
def big():
    return many()


def view_bytes(mesh, namespace: str = "shop") -> int:
    """What one served view of a mesh holds, as the server accounts it."""
    node = f"sidecar~10.0.0.1~p.{namespace}~{namespace}.svc.cluster.local"
    return serve_view(mesh, make_view(mesh, "cluster-a", node)).held_bytes()


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.asynccontextmanager
async def serving(mesh, **bounds):
    server = AdsServer("cluster-a", Metrics(), **bounds)
    await server.publish(mesh)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 16 << 20)])
    try:
        yield server, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


async def claim(stub, namespace: str):
    """A client claiming a proxy of ``namespace``: its clusters, or the status it was refused with."""
    client = Client(stub, node_of("claim", namespace))
    await client.request(CLUSTER)
    try:
        return client, await client.read()
    except grpc.aio.AioRpcError as exc:
        return client, exc


async def in_sync(client):
    """CDS by wildcard, then EDS for every cluster it names, each ACKed; returns (those names, the EDS
    response)."""
    await client.request(CLUSTER)
    cds = await client.read()
    await client.ack(cds)
    names = sorted(cluster_pb2.Cluster.FromString(r.value).name for r in cds.resources)
    await client.request(ENDPOINT, names)
    eds = await client.read()
    await client.ack(eds, names)
    return names, eds


# --- the views' memory budget ---------------------------------------------------------------------

@asynchronous(deadline=20)
async def test_a_flood_of_claimed_views_stays_within_views_memory_while_a_real_proxy_is_served(big):
    one = view_bytes(big)
    budget = int(4.5 * one)
    async with serving(big, views_memory=budget) as (server, stub):
        real = Client(stub, node_of("web-1", "shop"))
        names, _ = await in_sync(real)
        gc.collect()
        before = rss()

        # 40 clients claim a namespace each, all at once; meanwhile a new revision moves an endpoint
        claims = [asyncio.ensure_future(claim(stub, f"claim-{i:02d}")) for i in range(40)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        publishing = asyncio.ensure_future(server.publish(many(first="10.2.0.9", revision="r2")))
        update = await real.read()
        waited = time.monotonic() - started
        assert update.type_url == ENDPOINT
        assert waited < 1.0, f"the real proxy waited {waited:.2f} s for its update"
        await real.ack(update, names)
        await publishing

        outcomes = [outcome for _, outcome in await asyncio.gather(*claims)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        served = [o for o in outcomes if not isinstance(o, grpc.aio.AioRpcError)]
        assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused)
        assert 0 < len(served) <= 3 and len(served) + len(refused) == 40
        assert any("--views-memory" in o.details() for o in refused), [o.details() for o in refused]
        assert (sample(server, "galleon_xds_refused_total", reason="views-memory")
                + sample(server, "galleon_xds_refused_total", reason="compile-queue")) == len(refused)

        # the views held, claims and the real proxy's, fit; the process grew by about that much
        held = server.held_bytes()
        assert held <= budget
        await eventually(lambda: sample(server, "galleon_xds_views_bytes") == server.held_bytes(), "the gauge",
                         timeout=2 * server_module.ACCOUNT_DELAY)
        assert sample(server, "galleon_xds_views_memory_bytes") == budget
        gc.collect()
        grown = rss() - before
        assert grown < budget + 40 * MiB, f"resident size grew by {grown / MiB:.0f} MiB"

        # the real proxy is still served at once
        await server.publish(many(first="10.2.0.10", revision="r3"))
        assert (await real.read()).type_url == ENDPOINT


@asynchronous(deadline=10)
async def test_views_no_proxy_holds_are_let_go_least_recently_used_first():
    mesh = shop()
    budget = int(2.5 * view_bytes(mesh))  # room for two views
    async with serving(mesh, views_memory=budget) as (server, stub):
        gone, _ = await claim(stub, "a")  # a's proxy leaves: its view is kept while there is room
        await gone.call.done_writing()
        await eventually(lambda: not server.connections, "a's proxy to go")
        staying, answer = await claim(stub, "b")
        assert answer.type_url == CLUSTER
        assert len(server.views) == 2

        _, answer = await claim(stub, "c")  # a's view, held by no proxy, makes room
        assert answer.type_url == CLUSTER
        assert sorted(v.namespace for v in server.views) == ["b", "c"]
        assert sample(server, "galleon_xds_view_evictions_total") == 1

        refused, answer = await claim(stub, "d")  # b's and c's are in use: d is refused, and told why
        assert answer.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--views-memory" in answer.details() and "raise it" in answer.details()
        assert sample(server, "galleon_xds_refused_total", reason="views-memory") == 1
        assert sample(server, "galleon_xds_view_evictions_total") == 1
        assert server.held_bytes() <= budget

        await staying.call.done_writing()  # b's proxy leaves: d fits now
        await eventually(lambda: len(server.connections) == 1, "b's proxy to go")
        _, answer = await claim(stub, "d")
        assert answer.type_url == CLUSTER
        assert sorted(v.namespace for v in server.views) == ["c", "d"]


@asynchronous(deadline=10)
async def test_new_views_compile_one_at_a_time_behind_a_bound_and_after_a_publish(monkeypatch):
    """Compiles of new views run one at a time and at most compile_queue wait; a publish's compiles (of
    the views proxies hold) wait for none of them but the one under way; a view's streams are served
    meanwhile."""
    compiled = []
    real_serve = server_module.serve_view

    def slow(mesh, view, previous=None, endpoints_of=None):
        time.sleep(0.2)
        compiled.append((mesh.revision, view.namespace))
        return real_serve(mesh, view, previous, endpoints_of)

    monkeypatch.setattr(server_module, "serve_view", slow)
    async with serving(shop(), compile_queue=2) as (server, stub):
        real, other = Client(stub, node_of("web-1", "shop")), Client(stub, node_of("api-1", "api"))
        await in_sync(real)
        await in_sync(other)
        claims = [asyncio.ensure_future(claim(stub, f"new-{i}")) for i in range(5)]
        await eventually(lambda: sample(server, "galleon_xds_refused_total", reason="compile-queue") == 3,
                         "the claims past the queue refused")

        # the real proxy's stream is answered while a new view compiles
        started = time.monotonic()
        await real.request(LISTENER)
        assert (await real.read()).type_url == LISTENER and time.monotonic() - started < 0.15

        await server.publish(shop(cart="10.1.0.9", revision="r2"))
        assert [c for c in compiled if c[0] == "r2"][:2] == [("r2", "shop"), ("r2", "api")], compiled
        assert compiled.index(("r2", "api")) == compiled.index(("r2", "shop")) + 1, \
            f"a new view compiled between the publish's: {compiled}"
        assert (await real.read()).type_url == ENDPOINT

        outcomes = [outcome for _, outcome in await asyncio.gather(*claims)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(refused) == 3
        assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "waiting to be compiled" in o.details()
                   for o in refused)
        assert sorted(v.namespace for v in server.views) == ["api", "new-0", "new-1", "shop"]


# --- subscriptions --------------------------------------------------------------------------------

@asynchronous(deadline=25)
async def test_closed_subscriptions_give_their_memory_back():
    """Twice, 8 streams subscribe to 250,000 distinct endpoint names each (all but one unknown), then
    close. What they held goes as they close, so the second 8 take the memory the first gave back
    (the allocator keeps it for the process: the resident size stays at the first round's peak)."""
    async with serving(shop()) as (server, stub):
        real = Client(stub, node_of("web-1", "shop"))
        await in_sync(real)
        subscriptions = len(server._subscriptions)  # the real proxy's: none (CDS) and its clusters (EDS)
        (served,) = server.views.values()
        gc.collect()
        before = rss()
        peaks = []
        for turn in range(2):
            clients = []
            for i in range(8):
                client = Client(stub, node_of(f"big-{i}", "shop"))
                await client.request(ENDPOINT, [CART_CLUSTER, *(f"outbound|80||s{k}.n{i}.r{turn}.svc.cluster.local"
                                                                for k in range(250_000))])
                response = await client.read()
                assert len(response.resources) == 1
                clients.append(client)
            assert len(server._subscriptions) == subscriptions + 8
            peaks.append(rss() - before)
            for client in clients:
                await client.call.done_writing()
            await eventually(lambda: len(server.connections) == 1, "the streams to close")
            del client, clients
            # as they closed, with no collection: nothing but the streams held them
            assert len(server._subscriptions) == subscriptions
            assert len(served._subsets[ENDPOINT]) <= 1  # (the real proxy's, if it asks for part of them)
            assert len(served._partial) <= 1, "the partial responses are of the view's own names"
        assert peaks[0] > 150 * MiB, f"the subscriptions took only {peaks[0] / MiB:.0f} MiB"
        assert peaks[1] < peaks[0] + 60 * MiB, \
            f"the second 8 took {(peaks[1] - peaks[0]) / MiB:.0f} MiB more than the first {peaks[0] / MiB:.0f} MiB"


def test_partial_responses_of_a_view_are_bounded(big):
    served = serve_view(big, make_view(big, "cluster-a"))
    names = list(served.resources[ENDPOINT])
    whole = served.held_bytes()
    for i in range(4 * PARTIAL_RESPONSES):
        assert served.sotw(ENDPOINT, frozenset(names[i:i + 300]))[2]
    assert len(served._partial) <= PARTIAL_RESPONSES
    assert served.held_bytes() - whole <= served.size()
    assert not served._subsets[ENDPOINT], "the subscriptions asked with are gone"
    # the most recent is still cached
    assert served.sotw(ENDPOINT, frozenset(names[i:i + 300])) is served.sotw(ENDPOINT, frozenset(names[i:i + 300]))


def test_a_view_updated_for_endpoints_sums_only_their_size(big):
    """The budget's accounting asks every view its size after each publish; an endpoints' update (many a
    second with a live registry) takes the other types' from the view before."""
    view = make_view(big, "cluster-a")
    before = serve_view(big, view)
    assert before.size() == before.compiled.size()
    after = serve_view(many(first="10.2.0.9", revision="r2"), view, before, {"svc-0.shop.svc.cluster.local"})
    assert set(after._sizes) == {t.url for t in TYPES} - {ENDPOINT}
    assert after.size() == after.compiled.size() and after.held_bytes() > after.size()


def test_a_stream_keeps_no_more_than_a_few_types_the_server_does_not_serve():
    stream = protocol.SotwStream()
    for i in range(100):
        stream.on_request(sotw_request(f"type.googleapis.com/example.Unknown{i}"))
    stream.on_request(sotw_request(CLUSTER))
    assert len(stream.types) == protocol.UNKNOWN_TYPES + 1 and stream.subscribed(CLUSTER)


# --- NACKs ----------------------------------------------------------------------------------------

@asynchronous(deadline=15)
async def test_a_nack_storm_writes_a_bounded_log():
    async with serving(shop()) as (server, stub):
        client = Client(stub, node_of())
        await client.request(CLUSTER)
        cds = await client.read()
        error = "cds: outbound|8080 rejected " + "x" * 16_000
        with capture_logs() as logged:
            for _ in range(2000):
                await client.request(CLUSTER, version="", nonce=cds.nonce, error=error)
            await eventually(lambda: sample(server, "galleon_xds_nacks_total", type="clusters") == 2000,
                             "every NACK counted", timeout=10)
            await client.call.done_writing()
            await eventually(lambda: not server.connections, "the stream to close")
    lines = [event for event in logged if event["event"] == "proxy rejected configuration"]
    written = sum(len(json.dumps(event, default=str)) for event in lines)
    assert len(lines) == 2 and written < 2000, lines
    first, last = lines
    assert first["error"].startswith("cds: outbound|8080 rejected xxx") and len(first["error"]) < 560
    assert first["type"] == "clusters" and "not_logged" not in first
    assert last["not_logged"] == 1999, "the line as it leaves says how many were not logged"


@asynchronous(deadline=10)
async def test_nack_lines_are_one_per_interval_and_count_the_others(monkeypatch):
    monkeypatch.setattr(server_module, "LOG_INTERVAL", 0.2)
    async with serving(shop()) as (server, stub):
        client = Client(stub, node_of())
        await client.request(CLUSTER)
        cds = await client.read()
        with capture_logs() as logged:
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < 1.0:
                await client.request(CLUSTER, nonce=cds.nonce, error="rejected")
                sent += 1
                await asyncio.sleep(0.005)
            await eventually(lambda: sample(server, "galleon_xds_nacks_total", type="clusters") == sent, "the NACKs")
            await client.call.done_writing()
            await eventually(lambda: not server.connections, "the stream to close")
    lines = [event for event in logged if event["event"] == "proxy rejected configuration"]
    assert 3 <= len(lines) <= 8
    # each line stands for itself (but the last, as the stream ends) and those it says were not logged
    assert sum(("type" in event) + event.get("not_logged", 0) for event in lines) == sent


# --- a publish delivered ----------------------------------------------------------------------------

@asynchronous(deadline=30)
async def test_a_publish_is_delivered_once_every_woken_stream_has_written_its_update(big):
    """delivered(), which a publish's after-work (the heap settled, the snapshot saved) waits for so that
    it does not take the CPU the pushes need: false while a stream the publish woke has not written its
    update, true once all have (written: handed to gRPC, which buffers what a proxy has not read yet),
    publish after publish."""
    async with serving(many(services=20)) as (server, stub):
        clients = [Client(stub, node_of(f"web-{i}", "shop")) for i in range(3)]
        for client in clients:
            await in_sync(client)
        assert await server.delivered(0)  # nothing in flight

        await server.publish(big)  # 380 more services: a CDS response of megabytes to each stream
        assert not await server.delivered(0), "delivered before the woken streams ran"
        assert await server.delivered(5)
        for client in clients:
            assert (await client.read()).type_url == CLUSTER

        clients[2].call.cancel()
        await eventually(lambda: len(server.connections) == 2, "the cancelled stream released")
        await server.publish(many(services=20, revision="r3"))
        assert await server.delivered(5)
        for client in clients[:2]:
            assert (await client.read()).type_url == CLUSTER


@asynchronous
async def test_a_publish_that_leaves_a_view_as_it_was_wakes_none_of_its_streams():
    """A registry's change to services a view does not see (or a revision the same for it) leaves its
    versions as they were: its streams are not woken (at a thousand streams, waking each costs the
    event loop more than the change), and nothing reaches them; a later change does."""
    async with serving(many(services=20)) as (server, stub):
        clients = [Client(stub, node_of(f"web-{i}", "shop")) for i in range(2)]
        for client in clients:
            await in_sync(client)
        (view,) = server.views
        await server.publish(many(services=20, revision="r1"))  # a mesh anew, the same for this view
        assert server.views[view] is not None and await server.delivered(0), "a stream was woken"
        await server.publish(many(services=20, first="10.2.0.9"))  # one endpoint moved
        assert not await server.delivered(0)
        for client in clients:
            eds = await client.read()
            assert eds.type_url == ENDPOINT and len(eds.resources) == 2  # svc-0's two ports
