"""Benchmark: the ADS server under many xDS streams, and a commit reaching a real Envoy (prints figures, not a test).

Part 1 (streams). Writes a synthetic mesh (bench/compile.py's generator) to a
directory, starts ``galleon serve`` on it as its own process, then starts a
client process that opens --streams real gRPC ADS streams (state of the world,
one HTTP/2 connection each, as Envoys do) spread over --views distinct proxy
views, and answers every response the way Envoy does (CDS and LDS by wildcard,
EDS and RDS by the names they hold, every response ACKed with its version and
nonce). It measures the initial sync, the server's CPU time and resident memory
before the streams, with one stream per view, and with every stream, then edits
one endpoint's address in one file --changes times and measures, per stream,
the time until that stream has received and ACKed the new versions. With --delta, the streams
speak incremental xDS instead (DeltaAggregatedResources, as Envoy with ``api_type: DELTA_GRPC``):
wildcard CDS and LDS, EDS and RDS subscribed and unsubscribed by name, each response ACKed by its nonce.

With --tls, part 1 runs twice on the same mesh and sizes: plaintext, then with ``galleon serve``
serving mutual TLS (a server certificate for 127.0.0.1 and localhost, ``--client-ca`` a root made as
``galleon ca init-root`` makes it), every stream presenting the client certificate of its view's
namespace (spiffe://cluster.local/ns/<ns>/sa/...); then the two side by side, with the ratios.

Part 2 (Envoy). Commits the mesh to a local Git repository (pygit2), serves it,
starts a real Envoy with ``galleon bootstrap``'s bootstrap (and an SDS stand-in
for the TLS clusters), then --envoy-repeats times commits a new address for one
endpoint and times until Envoy's admin ``/clusters?format=json`` shows it (with --delta, an Envoy
whose bootstrap says ``api_type: DELTA_GRPC``).

    .venv/bin/python bench/ads.py                  # 1,000 streams, 5 views, 300 services (about a minute)
    .venv/bin/python bench/ads.py --quick          # small and fast (about 15 s)
    .venv/bin/python bench/ads.py --streams 200 --services 100 --no-envoy
    .venv/bin/python bench/ads.py --tls --no-envoy  # plaintext, then mutual TLS, side by side
    .venv/bin/python bench/ads.py --quick --no-envoy --delta  # the streams speak delta xDS

See bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import datetime
import gc
import json
import os
import re
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# As in bench/compile.py: bench/validate.py must not shadow protoc-gen-validate's `validate` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from envoy.config.cluster.v3 import cluster_pb2  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_pb2  # noqa: E402
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: E402
    http_connection_manager_pb2 as hcm_pb2)
from envoy.service.discovery.v3 import discovery_pb2  # noqa: E402

from compiler.listeners import HCM_FILTER as HCM  # noqa: E402
from compiler.xds_types import CLUSTER as CDS, ENDPOINT as EDS, LISTENER as LDS, ROUTE as RDS  # noqa: E402
from compiler.xds_types import TYPES as XDS_TYPES  # noqa: E402

TYPES = tuple(t.url for t in XDS_TYPES)  # in push order
from reconciler.ads.server import SERVICE  # noqa: E402

SHORT = {CDS: "CDS", EDS: "EDS", LDS: "LDS", RDS: "RDS"}

HOME_CLUSTER = "cluster-0"  # the cluster galleon serve serves (--cluster)
TARGET_STREAMS = 1000
TARGET_ACK_P99 = 1.0          # seconds, change to every stream ACKed
TARGET_BYTES_PER_STREAM = 50 * 1024
TARGET_TLS_RATIO = 1.5        # mTLS p99 within this factor of plaintext's, in the same run
TARGET_ENVOY = 1.0            # seconds, commit to Envoy applying it
FIRST_ADDRESS = "10.0.0.1"    # the generator's first endpoint: svc-00000, cluster-0, version v1
FIRST_HOST = "svc-00000.ns-00.svc.cluster.local"
TRUST_DOMAIN = "cluster.local"
ROUTER_NAMESPACE = "istio-system"


# =========================================================================== the client process
#
# Runs as `bench/ads.py --client ADS STREAMS VIEWS CLUSTERS`: one asyncio loop, one grpc.aio channel
# (so one TCP connection) per stream. Commands come on stdin, one word a line; answers go to
# stdout as JSON lines.

def node_namespace(view: int, router: bool) -> str:
    """The namespace in the node id of view ``view``'s proxies: with --tls, the namespace of the client
    certificate its streams present (the daemon serves a proxy only its identity's namespace)."""
    return ROUTER_NAMESPACE if router else f"ns-{view % 10:02d}"


def node_spiffe(namespace: str) -> str:
    """The identity of the bench's proxies of ``namespace``: one certificate per namespace, shared by its streams."""
    account = "istio-ingressgateway-service-account" if namespace == ROUTER_NAMESPACE else "bench"
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{account}"


def view_node(view: int, index: int, clusters: int, router: bool) -> base_pb2.Node:
    """The node of proxy ``index`` of view ``view``: views differ by cluster, namespace and locality
    (the subzone is unique per view); the last view is the ingress router when ``router``."""
    node = base_pb2.Node()
    ip = f"10.{100 + index // 65536 % 100}.{index // 256 % 256}.{index % 256}"
    cluster = f"cluster-{view % clusters}"
    region = ("us-east", "eu-west")[view % clusters % 2]
    namespace = node_namespace(view, router)
    if router:
        node.id = f"router~{ip}~istio-ingressgateway-{index}.{namespace}~{namespace}.svc.cluster.local"
        node.metadata.fields["LABELS"].struct_value.fields["istio"].string_value = "ingressgateway"
    else:
        node.id = f"sidecar~{ip}~proxy-{index}.{namespace}~{namespace}.svc.cluster.local"
    node.cluster = "bench"
    node.metadata.fields["CLUSTER_ID"].string_value = cluster
    node.locality.region = region
    node.locality.zone = f"{region}-{view % clusters // 2 + 1}a"
    node.locality.sub_zone = f"bench-{view}"
    return node


FOLLOW = {CDS: EDS, LDS: RDS}  # the clusters (listeners) held make Envoy subscribe to these by name


def _referenced(type_url: str, value: bytes) -> set[str]:
    """The EDS names one cluster, or the RDS names one listener, makes an Envoy subscribe to."""
    found = set()
    if type_url == CDS:
        cluster = cluster_pb2.Cluster.FromString(value)
        if cluster.type == cluster_pb2.Cluster.EDS:
            found.add(cluster.eds_cluster_config.service_name or cluster.name)
        return found
    listener = listener_pb2.Listener.FromString(value)
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.name == HCM:
                manager = hcm_pb2.HttpConnectionManager.FromString(network_filter.typed_config.value)
                if manager.HasField("rds"):
                    found.add(manager.rds.route_config_name)
    return found


class Names:
    """What a CDS or LDS response makes an Envoy subscribe to, computed once per version: of the whole
    response in state of the world, of each resource in delta (a response holds only what changed)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[str, ...]] = {}
        self._resources: dict[tuple[str, str, str], tuple[str, ...]] = {}

    def of(self, response: discovery_pb2.DiscoveryResponse) -> tuple[str, ...]:
        key = (response.type_url, response.version_info)
        names = self._cache.get(key)
        if names is None:
            found = set()
            for packed in response.resources:
                found |= _referenced(response.type_url, packed.value)
            names = self._cache[key] = tuple(sorted(found))
        return names

    def of_resource(self, type_url: str, item: discovery_pb2.Resource) -> tuple[str, ...]:
        """The names one cluster or listener of a delta response makes an Envoy subscribe to."""
        key = (type_url, item.name, item.version)
        names = self._resources.get(key)
        if names is None:
            names = self._resources[key] = tuple(sorted(_referenced(type_url, item.resource.value)))
        return names


# (type URL, version, nonce, id of the names listed) -> (those names, the ACK's bytes): see Proxy.ack.
_ACKS: dict[tuple, tuple[tuple[str, ...], bytes]] = {}


def _serialized(request) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


class Proxy:
    """One ADS stream that behaves like Envoy's SotW ADS client."""

    METHOD = f"/{SERVICE}/StreamAggregatedResources"
    REQUEST = discovery_pb2.DiscoveryRequest
    RESPONSE = discovery_pb2.DiscoveryResponse

    def __init__(self, index: int, view: int, node: base_pb2.Node) -> None:
        self.index, self.view, self.node = index, view, node
        self.acked: dict[str, str] = {}          # type -> version ACKed
        self.nonce: dict[str, str] = {}          # type -> last nonce received
        self.names: dict[str, tuple[str, ...]] = {EDS: (), RDS: ()}
        self.requested: set[str] = set()
        self.opened = self.synced_at = None
        self.synced = asyncio.Event()
        self.error: str | None = None
        self.reset_mark()

    def reset_mark(self) -> None:
        self.at_mark = dict(self.acked)
        self.since_mark = 0                       # responses received since the mark
        self.bytes = 0                            # bytes of those responses
        self.last_ack: dict[str, float] = {}      # type -> when the newest version was ACKed
        self.first_receive: float | None = None

    def on_ack(self, response, at: float) -> None:
        """Called once the response is ACKed (``at``: when); bench/registry.py's streams record it."""

    def is_synced(self) -> bool:
        return (CDS in self.acked and LDS in self.acked and (EDS in self.acked or not self.names[EDS])
                and (RDS in self.acked or not self.names[RDS]))

    def holds(self, type_url: str, version: str, count: int) -> bool:
        """Whether the stream has ACKed every one of the ``count`` resources of a type of its view whose
        version (views.ServedView.versions) is ``version``: in state of the world, the version a response
        carries is that one only when it answers a subscription to all of them (else the named ones')."""
        return self.acked.get(type_url) == version

    def response_id(self, response) -> str:
        """Responses with the same id hold the same resources: a SotW nonce is the view's, the same for
        every stream of the view that is in step."""
        return response.nonce

    def values(self, response) -> list[bytes]:
        """The serialized resources a response holds."""
        return [packed.value for packed in response.resources]

    def version(self, response) -> str:
        """The version a response brings the stream to (``acked`` once it is ACKed)."""
        return response.version_info

    def _sized(self, data: bytes) -> tuple:
        return len(data), self.RESPONSE.FromString(data)

    def request(self, type_url: str, names=()) -> discovery_pb2.DiscoveryRequest:
        """A subscription (change): carries the version and nonce last seen for the type, as Envoy does."""
        self.requested.add(type_url)
        return discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                              version_info=self.acked.get(type_url, ""),
                                              response_nonce=self.nonce.get(type_url, ""))

    def ack(self, response) -> discovery_pb2.DiscoveryRequest | bytes:
        """The ACK: in state of the world, the version and nonce, and the subscription listed again.
        Serialized once for the streams of a view in step (the same response, the same subscription):
        the thousand Envoys this process stands for would each make theirs on a machine of its own, and
        an EDS ACK lists every assignment's name."""
        names = self.names.get(response.type_url, ())
        key = (response.type_url, response.version_info, response.nonce, id(names))
        found = _ACKS.get(key)
        if found is None or found[0] is not names:
            if len(_ACKS) >= 4096:
                _ACKS.clear()
            found = _ACKS[key] = (names, discovery_pb2.DiscoveryRequest(
                type_url=response.type_url, version_info=response.version_info, response_nonce=response.nonce,
                resource_names=list(names)).SerializeToString())
        return found[1]

    def apply(self, response, names: Names) -> list:
        """Take a response in; the subscription changes it calls for (new EDS names for a CDS response,
        RDS names for an LDS one), which Envoy sends before it ACKs the response."""
        follow = FOLLOW.get(response.type_url)
        if follow is None:
            return []
        wanted = self.wanted(response, names)
        before = self.names[follow]
        if wanted == before and follow in self.requested:
            return []
        self.names[follow] = wanted
        return self.resubscribe(follow, before, wanted)

    def wanted(self, response, names: Names) -> tuple[str, ...]:
        """The names of ``FOLLOW[response.type_url]`` the stream wants once it holds ``response``."""
        return names.of(response)

    def resubscribe(self, type_url: str, before: tuple[str, ...], wanted: tuple[str, ...]) -> list:
        """The requests that change the subscription to ``type_url`` from ``before`` to ``wanted``."""
        return [self.request(type_url, wanted)] if wanted else []

    async def run(self, channel: grpc.aio.Channel, names: Names, client: "Client") -> None:
        call = channel.stream_stream(self.METHOD, request_serializer=_serialized,
                                     response_deserializer=self._sized)()
        self.opened = time.time()
        try:
            first = self.request(CDS)
            first.node.CopyFrom(self.node)  # set_node_on_first_message_only, as Galleon's bootstrap says
            await call.write(first)
            while True:
                read = await call.read()
                if read is grpc.aio.EOF:
                    self.error = "the server closed the stream"
                    return
                size, response = read
                self.bytes += size
                received = time.time()
                client.last_receive = received
                self.since_mark += 1
                if self.first_receive is None:
                    self.first_receive = received
                type_url = response.type_url
                self.nonce[type_url] = response.nonce
                # Envoy subscribes to new EDS/RDS names before it ACKs the CDS/LDS response.
                for request in self.apply(response, names):
                    await call.write(request)
                await call.write(self.ack(response))
                self.acked[type_url] = self.version(response)
                self.last_ack[type_url] = time.time()
                self.on_ack(response, self.last_ack[type_url])
                # Envoy asks for listeners once its clusters are warm (CDS, then their EDS).
                if LDS not in self.requested and (type_url == EDS or (type_url == CDS and not self.names[EDS])):
                    await call.write(self.request(LDS))
                if not self.synced.is_set() and self.is_synced():
                    self.synced_at = time.time()
                    self.synced.set()
        except grpc.aio.AioRpcError as exc:
            self.error = f"{exc.code().name}: {exc.details()}"
        except asyncio.CancelledError:
            call.cancel()
            raise
        finally:
            self.synced.set()  # so that waiters see the error rather than hang


class DeltaProxy(Proxy):
    """One ADS stream that behaves like Envoy's incremental (delta) ADS client (``api_type: DELTA_GRPC``):
    CDS and LDS by wildcard (no names in the first request of the type, as Envoy's legacy wildcard), EDS
    and RDS by name, subscribed and unsubscribed as the clusters and listeners held come and go; every
    response applied (resources added or updated by name, ``removed_resources`` removed) and ACKed with
    its nonce alone. ``acked`` holds the responses' ``system_version_info``: Galleon sends the view's
    version of the whole type (views.ServedView.versions), and each response brings what the stream
    holds of its subscription to that view's versions."""

    METHOD = f"/{SERVICE}/DeltaAggregatedResources"
    REQUEST = discovery_pb2.DeltaDiscoveryRequest
    RESPONSE = discovery_pb2.DeltaDiscoveryResponse

    def __init__(self, index: int, view: int, node: base_pb2.Node) -> None:
        super().__init__(index, view, node)
        self.held: dict[str, dict[str, str]] = {t: {} for t in TYPES}  # type -> name -> version
        self.follows: dict[str, dict[str, tuple[str, ...]]] = {t: {} for t in FOLLOW}  # held cluster -> EDS names
        self.subscribed: dict[str, set[str]] = {t: set() for t in FOLLOW.values()}

    def holds(self, type_url: str, version: str, count: int) -> bool:
        """The view's version of the type was the last response's, and the stream holds as many resources as
        the view has: what it holds being the view's (at their versions) and nothing else, it holds them all."""
        return self.acked.get(type_url) == version and len(self.held[type_url]) == count

    def response_id(self, response) -> str:
        return f"{self.index}/{response.nonce}"  # a delta stream's nonces are its own

    def values(self, response) -> list[bytes]:
        return [r.resource.value for r in response.resources]

    def version(self, response) -> str:
        return response.system_version_info

    def request(self, type_url: str, names=()) -> discovery_pb2.DeltaDiscoveryRequest:
        """A type's first request on the stream: no names is a wildcard subscription (Envoy's legacy
        wildcard, what it sends for CDS and LDS)."""
        self.requested.add(type_url)
        return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(names))

    def ack(self, response) -> discovery_pb2.DeltaDiscoveryRequest:
        return discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)

    def apply(self, response, names: Names) -> list:
        type_url = response.type_url
        held, follows = self.held.setdefault(type_url, {}), self.follows.get(type_url)
        subscribed = self.subscribed.get(type_url)
        for name in response.removed_resources:
            held.pop(name, None)
            if follows is not None:
                follows.pop(name, None)
        for added in response.resources:
            name = added.name
            if subscribed is not None and name not in subscribed:
                continue  # sent before an unsubscription the server had not read yet: Envoy drops it
            name = sys.intern(name)
            held[name] = sys.intern(added.version)
            if follows is not None:
                follows[name] = names.of_resource(type_url, added)
        return super().apply(response, names)

    def wanted(self, response, names: Names) -> tuple[str, ...]:
        """Of every cluster (listener) held, not only those the response brought."""
        found: set[str] = set()
        for referenced in self.follows[response.type_url].values():
            found.update(referenced)
        return tuple(sorted(found))

    def resubscribe(self, type_url: str, before: tuple[str, ...], wanted: tuple[str, ...]) -> list:
        subscribed = self.subscribed[type_url]
        new, gone = sorted(set(wanted) - subscribed), sorted(subscribed - set(wanted))
        if not new and not gone:
            return []
        subscribed.difference_update(gone)
        subscribed.update(new)
        held = self.held[type_url]
        for name in gone:  # Envoy lets go of what it unsubscribes from
            held.pop(name, None)
        self.requested.add(type_url)
        return [discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=new,
                                                    resource_names_unsubscribe=gone)]


class Client:
    def __init__(self, ads: str, streams: int, views: int, clusters: int, router: bool,
                 tls: Path | None = None, proxy: type[Proxy] = Proxy) -> None:
        self.ads, self.streams, self.views, self.clusters, self.router = ads, streams, views, clusters, router
        self.tls = tls  # a directory from make_tls(): mutual TLS, a certificate per namespace
        self.proxy = proxy  # the streams' class: Proxy (state of the world) or DeltaProxy
        self.credentials: dict[str, grpc.ChannelCredentials] = {}
        self.proxies: list[Proxy] = []
        self.channels: list[grpc.aio.Channel] = []
        self.tasks: list[asyncio.Task] = []
        self.names = Names()
        self.last_receive = 0.0

    def say(self, **fields) -> None:
        print(json.dumps(fields), flush=True)

    def credentials_of(self, namespace: str) -> grpc.ChannelCredentials:
        """The mesh's root and the client certificate of ``namespace`` (made once, shared by its streams)."""
        credentials = self.credentials.get(namespace)
        if credentials is None:
            credentials = self.credentials[namespace] = grpc.ssl_channel_credentials(
                root_certificates=(self.tls / "root" / "root-cert.pem").read_bytes(),
                private_key=(self.tls / f"{namespace}-key.pem").read_bytes(),
                certificate_chain=(self.tls / f"{namespace}.pem").read_bytes())
        return credentials

    async def open(self, count: int) -> dict:
        """Open ``count`` more streams (round-robin over the views) and wait until each has ACKed everything."""
        started = time.time()
        new = []
        for _ in range(count):
            index = len(self.proxies)
            view = index % self.views
            router = self.router and view == self.views - 1
            proxy = self.proxy(index, view, view_node(view, index, self.clusters, router))
            options = [("grpc.use_local_subchannel_pool", 1),  # a connection of its own, as every Envoy has
                       ("grpc.max_receive_message_length", 256 << 20)]
            if self.tls is None:
                channel = grpc.aio.insecure_channel(self.ads, options=options)
            else:  # its own TLS handshake (no session resumption), as every Envoy does
                channel = grpc.aio.secure_channel(self.ads, self.credentials_of(node_namespace(view, router)),
                                                  options=options)
            self.proxies.append(proxy)
            self.channels.append(channel)
            self.tasks.append(asyncio.create_task(proxy.run(channel, self.names, self)))
            new.append(proxy)
        await asyncio.wait_for(asyncio.gather(*(p.synced.wait() for p in new)), 600)
        # The Envoys this process stands for have no cyclic collector: what the streams hold once open
        # is frozen, never traversed again (a pass over a thousand streams' state delays every ACK).
        gc.collect()
        gc.freeze()
        errors = [p.error for p in new if p.error]
        seconds = [p.synced_at - p.opened for p in new if p.synced_at]
        return {"streams": len(new), "total": len(self.proxies), "seconds": time.time() - started,
                "per_stream": seconds, "errors": errors[:5], "failed": len(errors)}

    async def settle(self, timeout: float, quiet: float) -> dict:
        """Wait until every stream has had a response since the mark and none came for ``quiet`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Views the change does not touch (split horizon can hide an endpoint's move) get nothing,
            # so once some stream has had a response, a quiet spell ends the wait as well.
            answered = [p.since_mark or p.error for p in self.proxies]
            if (all(answered) or any(answered)) and time.time() - self.last_receive > quiet:
                break
            await asyncio.sleep(0.05)
        # A view's target is the versions most of its streams hold now (they should all agree).
        held: dict[int, collections.Counter] = {}
        for p in self.proxies:
            held.setdefault(p.view, collections.Counter())[tuple(sorted(p.acked.items()))] += 1
        targets = {view: dict(counter.most_common(1)[0][0]) for view, counter in held.items()}
        disagree = sum(p.acked != targets[p.view] for p in self.proxies)
        streams = []
        for p in self.proxies:
            changed = [t for t in TYPES if p.acked.get(t) != p.at_mark.get(t)]
            done = max((p.last_ack[t] for t in changed if t in p.last_ack), default=None)
            unaffected = not changed and not p.since_mark and p.acked == targets[p.view]
            streams.append({"view": p.view, "done": done if changed and p.acked == targets[p.view] else None,
                            "unaffected": unaffected,
                            "first": p.first_receive, "responses": p.since_mark, "bytes": p.bytes,
                            "changed": [SHORT[t] for t in changed], "error": p.error})
        return {"streams": streams, "disagree": disagree}

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            while True:
                line = (await reader.readline()).decode().split()
                if not line or line[0] == "quit":
                    break
                command, rest = line[0], line[1:]
                if command == "open":
                    self.say(event="opened", **await self.open(int(rest[0])))
                elif command == "mark":
                    for p in self.proxies:
                        p.reset_mark()
                    self.say(event="marked", at=time.time())
                elif command == "settle":
                    self.say(event="settled", **await self.settle(float(rest[0]), float(rest[1])))
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for channel in self.channels:
                await channel.close()


def client_main(argv: list[str]) -> int:
    """``bench/ads.py --client ADS STREAMS VIEWS CLUSTERS ROUTER(0|1) DELTA(0|1) [TLS]``."""
    ads, streams, views, clusters, router = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4] == "1"
    proxy = DeltaProxy if argv[5] == "1" else Proxy
    tls = Path(argv[6]) if len(argv) > 6 else None
    client_runtime()
    asyncio.run(Client(ads, streams, views, clusters, router, tls, proxy).main())
    return 0


def client_runtime() -> None:
    """A client process's limits and collector: file descriptors for every stream, and the daemon's
    young generation (what each response makes is not collected every 700 objects); Client.open
    freezes what the streams hold."""
    raise_fd_limit()
    from reconciler import runtime
    runtime.for_daemon()


# =========================================================================== measuring a process

def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, every thread it ran included (those that ended too)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15 of stat(5))


def process_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) and Threads of a process, from /proc."""
    found = {"VmRSS": 0, "VmHWM": 0, "Threads": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0])
    return found


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_totals() -> tuple[int, int]:
    """This process's C heap (glibc's mallinfo2, every arena): bytes in use, and bytes freed but kept.

    Python's own objects live mostly in pymalloc's arenas, which it maps itself, so neither figure
    counts them: the two tell a C-level growth (in use) from the allocator keeping freed pages (kept).
    """
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd, info.fordblks


def proc_sample(pid: int) -> dict:
    """CPU seconds (all threads, and by kind of thread) and memory (kB) of a process, from /proc."""
    memory = process_memory(pid)
    return {"cpu": process_cpu(pid), "rss": memory["VmRSS"], "hwm": memory["VmHWM"], "threads": memory["Threads"],
            "by_thread": thread_cpu(pid), "at": time.time()}


def thread_cpu(pid: int, known: dict[int, str] | None = None) -> dict[str, float]:
    """CPU seconds by kind of thread: those ``known`` names by thread id (by default the main thread,
    "loop": galleon serve's asyncio event loop, where every stream is served), gRPC core's threads
    (event_engine, grpc_*: sockets and HTTP/2), other Python threads (the compile worker, source reads,
    the HTTP server)."""
    names = known if known is not None else {pid: "loop"}
    kinds = dict.fromkeys([*names.values(), "grpc", "other"], 0.0)
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kinds
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue  # the thread ended meanwhile
        kind = names.get(int(tid)) or ("grpc" if comm.startswith(("event_engine", "grpc")) else "other")
        kinds[kind] += (int(fields[11]) + int(fields[12])) / TICK
    return kinds


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def when(event: dict) -> float:
    """A server log event's wall-clock time (structlog's ISO timestamp, UTC)."""
    return datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def add_delta_option(ap: argparse.ArgumentParser, who: str = "the client's streams") -> None:
    """--delta, shared with bench/registry.py."""
    ap.add_argument("--delta", action="store_true",
                    help=f"{who} speak incremental (delta) xDS, as Envoy with api_type DELTA_GRPC does, "
                         "instead of state of the world")


def protocol_name(args) -> str:
    return "delta" if args.delta else "SotW"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# =========================================================================== the mesh on disk

def write_mesh(snapshot, root: Path) -> None:
    for path, data in snapshot.files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def move_endpoint(text: str, old: str, new: str) -> str:
    """The file's text with the one endpoint at ``old`` moved to ``new``."""
    edited, n = re.subn(rf"(\baddress:\s*['\"]?){re.escape(old)}(['\"]?[ \t]*)$", rf"\g<1>{new}\g<2>", text,
                        count=2, flags=re.MULTILINE)
    if n != 1:
        raise SystemExit(f"expected exactly one endpoint at {old}, found {n}")
    return edited


def first_file(snapshot) -> str:
    """The file holding the first ServiceEntry's first endpoint."""
    pattern = re.compile(rf"\baddress:\s*['\"]?{re.escape(FIRST_ADDRESS)}['\"]?[ \t]*$", re.MULTILINE)
    for path in sorted(snapshot.files):
        if pattern.search(snapshot.files[path].decode()):
            return path
    raise SystemExit(f"no endpoint at {FIRST_ADDRESS} in the generated mesh")


# =========================================================================== part 1: streams

class ClientProcess:
    def __init__(self, ads: str, streams: int, views: int, clusters: int, router: bool,
                 tls: Path | None = None, delta: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--client", ads, str(streams), str(views), str(clusters),
             "1" if router else "0", "1" if delta else "0", *([str(tls)] if tls is not None else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def ask(self, command: str, timeout: float = 900) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise SystemExit(f"the client process did not answer {command!r} (exit status {self.process.poll()})")
        return json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def wait_event(galleon, name: str, count: int, timeout: float) -> dict:
    """Wait until the server has logged ``name`` more than ``count`` times; the first one after those."""
    deadline = time.monotonic() + timeout
    while galleon.count(name) <= count:
        if time.monotonic() > deadline or galleon.process.poll() is not None:
            raise SystemExit(f"no {name!r} event from galleon serve within {timeout} s:\n{galleon.log()}")
        time.sleep(0.01)
    return [e for e in list(galleon.events) if e.get("event") == name][count]


def push_latencies(exposition: str) -> dict[str, tuple[float, float]]:
    """galleon_xds_push_latency_seconds by type: (sum, count)."""
    found: dict[str, list[float]] = {}
    for line in exposition.splitlines():
        m = re.match(r'galleon_xds_push_latency_seconds_(sum|count)\{type="([^"]+)"\} (\S+)', line)
        if m:
            found.setdefault(m.group(2), [0.0, 0.0])[m.group(1) == "count"] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in found.items()}


def stats_of(envoy, pattern: str) -> dict[str, int]:
    """Envoy's counters and gauges whose names match ``pattern`` (admin /stats?filter=, RE2)."""
    values = {}
    for line in envoy.get("/stats?filter=" + urllib.parse.quote(pattern)).splitlines():
        name, _, value = line.partition(": ")
        if value.isdigit():
            values[name] = int(value)
    return values


def mb(kb: float) -> str:
    return f"{kb / 1024:,.1f} MB"


def make_tls(directory: Path, views: int, router: bool) -> Path:
    """A mesh root (as `galleon ca init-root` makes it), the server's certificate (IP 127.0.0.1, DNS
    localhost) and one client certificate per namespace the streams' node ids name; ``directory``."""
    from tests.certs import issue, root_in

    directory.mkdir(parents=True, exist_ok=True)
    root = root_in(directory / "root")
    issue(root, directory, "server", dns=("localhost",), ips=("127.0.0.1",))
    namespaces = {node_namespace(view, router and view == views - 1) for view in range(views)}
    for namespace in sorted(namespaces):
        issue(root, directory, namespace, spiffe=node_spiffe(namespace))
    return directory


def serve_tls_args(tls: Path | None) -> tuple[str, ...]:
    if tls is None:
        return ()
    return ("--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server-key.pem"),
            "--client-ca", str(tls / "root" / "root-cert.pem"))


def run_streams(args, snapshot, workdir: Path, tls: Path | None = None) -> dict:
    from tests.e2e.daemon import Galleon

    source = workdir / "mesh"
    if not source.exists():
        write_mesh(snapshot, source)
    changed_file = source / first_file(snapshot)
    router = args.views >= 2 and not args.no_gateway
    mode = "plaintext" if tls is None else "mutual TLS"
    print(f"\n== part 1 ({mode}): {args.streams:,} {protocol_name(args)} streams, {args.views} views, a change to "
          f"one endpoint, {args.changes} times ==")
    if tls is not None:
        namespaces = sorted({node_namespace(v, router and v == args.views - 1) for v in range(args.views)})
        print(f"galleon serve --tls-cert (127.0.0.1, localhost) --client-ca (a root as galleon ca init-root); "
              f"each stream its own TLS connection with the certificate of its namespace: "
              f"{', '.join(node_spiffe(n) for n in namespaces)}")
    galleon = Galleon(source, HOME_CLUSTER, "--debounce", str(args.debounce), *serve_tls_args(tls))
    client = None
    result: dict = {}
    try:
        t0 = time.perf_counter()
        galleon.start()
        pid = galleon.process.pid
        loaded = galleon.event("revision validated")
        print(f"galleon serve (pid {pid}) ready in {time.perf_counter() - t0:.2f} s on {source}: "
              f"validate + build_mesh {loaded['seconds']:.2f} s; ADS {galleon.ads}, HTTP {galleon.http}")
        time.sleep(0.5)
        before = proc_sample(pid)
        client = ClientProcess(galleon.ads, args.streams, args.views, args.clusters, router, tls, args.delta)
        # Phase 1: one stream per view, so every view is compiled and held; phase 2: all the others.
        first = client.ask(f"open {min(args.views, args.streams)}")
        if first["failed"]:
            raise SystemExit(f"streams failed: {first['errors']}")
        time.sleep(0.5)
        with_views = proc_sample(pid)
        rest = args.streams - first["streams"]
        opened = client.ask(f"open {rest}") if rest else {"seconds": 0.0, "per_stream": [], "failed": 0}
        if opened["failed"]:
            raise SystemExit(f"{opened['failed']} streams failed: {opened['errors']}")
        time.sleep(1.0)
        with_all = proc_sample(pid)
        time.sleep(2.0)
        idle = proc_sample(pid)
        client_pid = client.process.pid
        views_compiled = galleon.count("view compiled")
        print(f"views compiled and held: {views_compiled} ({args.views} asked for"
              f"{', the last one an ingress router' if router else ''})")
        print(f"initial sync: {first['streams']} streams (one per view, views compiled on first use) "
              f"{first['seconds']:.2f} s; {rest:,} more streams all ACKed in {opened['seconds']:.2f} s "
              f"(per stream from its open: p50 {ms(percentile(opened['per_stream'], 50))}, "
              f"p99 {ms(percentile(opened['per_stream'], 99))})")
        per_stream_cpu = (with_all["cpu"] - with_views["cpu"]) / rest if rest else float("nan")
        per_stream_rss = (with_all["rss"] - with_views["rss"]) * 1024 / rest if rest else float("nan")
        print(f"server RSS: {mb(before['rss'])} before streams -> {mb(with_views['rss'])} with one stream per view "
              f"-> {mb(with_all['rss'])} with {args.streams:,} streams ({with_all['threads']} threads)")
        print(f"  per stream beyond the shared views: {per_stream_rss / 1024:,.1f} KB "
              f"((RSS with all - RSS with one per view) / {rest:,})")
        print(f"server CPU: {with_views['cpu'] - before['cpu']:.2f} s for the first {first['streams']} streams "
              f"(compiling the views), {with_all['cpu'] - with_views['cpu']:.2f} s for {rest:,} more "
              f"({per_stream_cpu * 1000:.2f} ms per stream to connect and sync); idle with {args.streams:,} "
              f"streams: {(idle['cpu'] - with_all['cpu']) / (idle['at'] - with_all['at']) * 100:.1f} % of a core")

        connect = {"first_seconds": first["seconds"], "rest_seconds": opened["seconds"], "rest": rest,
                   "p50": percentile(opened["per_stream"], 50), "p99": percentile(opened["per_stream"], 99),
                   "cpu_per_stream": per_stream_cpu,
                   "threads": {k: with_all["by_thread"][k] - with_views["by_thread"][k] for k in with_all["by_thread"]},
                   "proxies_connected": galleon.count("proxy connected"), "refused": galleon.count("proxy refused")}
        if tls is not None:
            if connect["refused"]:
                raise SystemExit(f"{connect['refused']} streams refused over mutual TLS:\n{galleon.log()}")
            identities = collections.Counter(e.get("identity") for e in list(galleon.events)
                                             if e.get("event") == "proxy connected")
            if None in identities:
                raise SystemExit(f"{identities[None]} streams connected without an identity over mutual TLS")
            print(f"streams authenticated by their client certificate: "
                  f"{', '.join(f'{n:,} as {i}' for i, n in sorted(identities.items()))}")

        # The changes.
        # A source change moves the same endpoint in every run: each run starts from the generated mesh.
        current = FIRST_ADDRESS
        rounds = []
        for k in range(args.changes):
            new = f"10.255.{k // 250}.{k % 250 + 1}"
            marked = client.ask("mark")
            published = galleon.count("configuration published")
            cpu0, client_cpu0 = proc_sample(pid), proc_sample(client_pid)
            text = move_endpoint(changed_file.read_text(), current, new)
            temporary = changed_file.with_name("." + changed_file.name + ".tmp")
            temporary.write_text(text)
            os.replace(temporary, changed_file)
            written = time.time()
            current = new
            event = wait_event(galleon, "configuration published", published, 120)
            validated = galleon.event("revision validated")
            settled = client.ask(f"settle {args.timeout} {args.quiet}", timeout=args.timeout + 60)
            cpu1, client_cpu1 = proc_sample(pid), proc_sample(client_pid)
            end = when(event)
            start = end - event["seconds"]
            streams = settled["streams"]
            done = [s["done"] for s in streams if s["done"] is not None]
            missing = [s for s in streams if s["done"] is None and not s["unaffected"]]
            if any(s["unaffected"] for s in streams):
                views = sorted({s["view"] for s in streams if s["unaffected"]})
                print(f"  change {k + 1}: {sum(s['unaffected'] for s in streams)} streams of views {views} "
                      "had nothing to receive (the change is not visible from there)")
            changed_types = sorted({t for s in streams for t in s["changed"]})
            rounds.append({
                "written": written, "publish_start": start, "publish_end": end, "done": done,
                "read_seconds": validated["seconds"], "publish_seconds": event["seconds"],
                "missing": len(missing), "disagree": settled["disagree"], "types": changed_types,
                "server_cpu": cpu1["cpu"] - cpu0["cpu"],
                "threads": {k: cpu1["by_thread"][k] - cpu0["by_thread"][k] for k in cpu1["by_thread"]},
                "client_cpu": client_cpu1["cpu"] - client_cpu0["cpu"],
                "rss": cpu1["rss"], "hwm": cpu1["hwm"], "mark": marked["at"],
                "responses": sum(s["responses"] for s in streams), "bytes": sum(s["bytes"] for s in streams),
                "first": min((s["first"] for s in streams if s["first"]), default=None)})
            if missing:
                example = missing[0]
                print(f"  change {k + 1}: {len(missing)} streams did not reach their view's new versions "
                      f"(e.g. view {example['view']}: {example['responses']} responses, changed "
                      f"{example['changed']}, error {example['error']})")
        result = {"rounds": rounds, "before": before, "with_views": with_views, "with_all": with_all,
                  "per_stream_rss": per_stream_rss, "per_stream_cpu": per_stream_cpu, "connect": connect,
                  "metrics": galleon.get("/metrics")[1]}
    finally:
        if client is not None:
            client.stop()
        code = galleon.stop() if galleon.process else None
        if code not in (0, None):
            print(f"galleon serve exited with {code}:\n{galleon.log()}", file=sys.stderr)
        # The next run starts from the generated mesh again.
        changed_file.write_bytes(snapshot.files[first_file(snapshot)])
    result["summary"] = report_rounds(args, result)
    return result


def report_rounds(args, result: dict) -> dict:
    """Prints the changes' figures and the run's targets; returns the figures compare_tls() puts side by side."""
    rounds = result["rounds"]
    print(f"\nchange: one endpoint's address in one file (os.replace), {len(rounds)} times; types that changed: "
          f"{', '.join(rounds[0]['types']) if rounds else '-'}")
    print(f"{'':>3} {'write->publish':>15} {'compile views':>14} {'publish->ACKed: p50':>20} {'p99':>9} {'max':>9} "
          f"{'write->ACKed p99':>17} {'server CPU':>11} {'client CPU':>11} {'server RSS':>11}")
    pooled_start, pooled_write, pooled_end = [], [], []
    for k, r in enumerate(rounds, 1):
        from_start = [d - r["publish_start"] for d in r["done"]]
        from_write = [d - r["written"] for d in r["done"]]
        pooled_start += from_start
        pooled_write += from_write
        pooled_end += [d - r["publish_end"] for d in r["done"]]
        print(f"{k:>3} {ms(r['publish_start'] - r['written']):>15} {ms(r['publish_seconds']):>14} "
              f"{ms(percentile(from_start, 50)):>20} {ms(percentile(from_start, 99)):>9} "
              f"{ms(max(from_start, default=float('nan'))):>9} {ms(percentile(from_write, 99)):>17} "
              f"{r['server_cpu']:>9.2f} s {r['client_cpu']:>9.2f} s {mb(r['rss']):>11}"
              + (f"  ({r['missing']} streams not converged)" if r["missing"] else ""))
    streams = args.streams
    print(f"all changes pooled ({len(pooled_start):,} stream-changes):")
    print(f"  from publish start (the 'configuration published' log time minus its seconds: views compiled, "
          f"then sent): p50 {ms(percentile(pooled_start, 50))}, p99 {ms(percentile(pooled_start, 99))}, "
          f"max {ms(max(pooled_start, default=float('nan')))}")
    print(f"  from the 'configuration published' event (views compiled; streams woken): "
          f"p50 {ms(percentile(pooled_end, 50))}, p99 {ms(percentile(pooled_end, 99))}")
    print(f"  from the file write (watch + {args.debounce * 1000:g} ms debounce + read, validate, build_mesh "
          f"included): p50 {ms(percentile(pooled_write, 50))}, p99 {ms(percentile(pooled_write, 99))}")
    if rounds:
        cpu = statistics.median(r["server_cpu"] for r in rounds)
        by = {k: statistics.median(r["threads"][k] for r in rounds) for k in rounds[0]["threads"]}
        print(f"  server CPU per change: {cpu:.2f} s median ({cpu / streams * 1000:.2f} ms per stream): event loop "
              f"thread {by['loop']:.2f} s, gRPC core threads {by['grpc']:.2f} s, other threads (compile, read) "
              f"{by['other']:.2f} s; client process {statistics.median(r['client_cpu'] for r in rounds):.2f} s "
              f"on the same {os.cpu_count()} CPUs")
        print(f"  server peak RSS (VmHWM) {mb(max(r['hwm'] for r in rounds))}")
        sent = statistics.median(r["bytes"] for r in rounds)
        print(f"  sent per change: {statistics.median(r['responses'] for r in rounds):,.0f} responses, "
              f"{sent / 2 ** 20:,.1f} MB ({sent / streams / 1024:,.0f} KB per stream: what changed"
              + (", the resources that changed alone)" if args.delta else
                 ", and in state of the world every cluster or listener when one of them changed)"))
    # The server's own view (only pushes after a publish are observed, so these are the changes'):
    # from publish start to the response handed to gRPC, by type.
    buckets: dict[str, dict[str, float]] = {}
    for line in result["metrics"].splitlines():
        m = re.match(r'galleon_xds_push_latency_seconds_bucket\{le="([^"]+)",type="([^"]+)"\} (\S+)', line)
        if m:
            buckets.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
    sums = push_latencies(result["metrics"])
    parts = []
    for kind in ("clusters", "endpoints", "listeners", "routes"):
        if kind in sums and sums[kind][1]:
            total = buckets.get(kind, {}).get("+Inf", 0)
            within = buckets.get(kind, {}).get("1.0", 0)
            parts.append(f"{kind} mean {ms(sums[kind][0] / sums[kind][1])} ({within / total * 100:.0f} % <= 1 s)")
    if parts:
        print(f"  server side (galleon_xds_push_latency_seconds, publish start to response written): {'; '.join(parts)}")

    p99 = percentile(pooled_start, 99)
    missing = sum(r["missing"] for r in rounds)
    size = "" if streams >= TARGET_STREAMS else f" [measured with {streams:,} streams, not the target's 1,000]"
    print()
    print(f"target: {TARGET_STREAMS:,} streams, change to every stream ACKed p99 < {TARGET_ACK_P99:g} s: "
          f"{verdict(p99 < TARGET_ACK_P99 and not missing)} ({ms(p99)} from publish start"
          f"{f'; {missing} streams never converged' if missing else ''}){size}")
    per = result["per_stream_rss"]
    print(f"target: < {TARGET_BYTES_PER_STREAM // 1024} KB server memory per stream beyond the shared views: "
          f"{verdict(per < TARGET_BYTES_PER_STREAM)} ({per / 1024:,.1f} KB){size}")
    median = lambda key: statistics.median(r[key] for r in rounds) if rounds else float("nan")  # noqa: E731
    return {"p50": percentile(pooled_start, 50), "p99": p99, "max": max(pooled_start, default=float("nan")),
            "from_event_p99": percentile(pooled_end, 99), "missing": missing, "samples": len(pooled_start),
            "server_cpu": median("server_cpu"), "client_cpu": median("client_cpu"),
            "threads": {k: statistics.median(r["threads"][k] for r in rounds) for k in rounds[0]["threads"]}
            if rounds else {}}


def compare_tls(args, plain: dict, tls: dict) -> None:
    """The plaintext and mutual TLS runs of part 1 side by side, with the ratios and the two TLS targets."""
    def row(label: str, a: float, b: float, fmt) -> None:
        ratio = b / a if a else float("nan")
        print(f"  {label:<58} {fmt(a):>12} {fmt(b):>12} {ratio:>9.2f}x")

    seconds = lambda v: f"{v:,.2f} s"  # noqa: E731
    cpu = lambda v: f"{v:,.3f} s"  # noqa: E731
    milli = lambda v: f"{v * 1000:,.0f} ms"  # noqa: E731
    kb = lambda v: f"{v / 1024:,.1f} KB"  # noqa: E731
    mcpu = lambda v: f"{v * 1000:,.2f} ms"  # noqa: E731
    a, b = plain["connect"], tls["connect"]
    pa, pb = plain["summary"], tls["summary"]
    print(f"\n== plaintext vs mutual TLS, the same run: {args.streams:,} {protocol_name(args)} streams, "
          f"{args.views} views, "
          f"{args.services:,} services, {args.changes} changes each ==")
    print(f"  {'':<58} {'plaintext':>12} {'mutual TLS':>12} {'TLS/plain':>10}")
    row(f"connect and sync: {a['rest']:,} streams all ACKed (wall)", a["rest_seconds"], b["rest_seconds"], seconds)
    row("  per stream from its open, p50", a["p50"], b["p50"], milli)
    row("  per stream from its open, p99", a["p99"], b["p99"], milli)
    row(f"  first {min(args.views, args.streams)} streams (one per view, views compiled)", a["first_seconds"],
        b["first_seconds"], seconds)
    row("  server CPU per stream to connect and sync", a["cpu_per_stream"], b["cpu_per_stream"], mcpu)
    for kind, name in (("loop", "event loop thread"), ("grpc", "gRPC core threads"), ("other", "other threads")):
        row(f"    of which {name} (all {a['rest']:,} streams)", a["threads"][kind], b["threads"][kind], cpu)
    row("publish start -> every stream ACKed, p50", pa["p50"], pb["p50"], milli)
    row("publish start -> every stream ACKed, p99", pa["p99"], pb["p99"], milli)
    row("  'configuration published' event -> ACKed, p99", pa["from_event_p99"], pb["from_event_p99"], milli)
    row("  server CPU per change", pa["server_cpu"], pb["server_cpu"], cpu)
    for kind, name in (("loop", "event loop thread"), ("grpc", "gRPC core threads"), ("other", "other threads")):
        if kind in pa["threads"] and kind in pb["threads"]:
            row(f"    of which {name}", pa["threads"][kind], pb["threads"][kind], cpu)
    row("  client process CPU per change", pa["client_cpu"], pb["client_cpu"], cpu)
    row("server memory per stream (RSS delta / streams)", plain["per_stream_rss"], tls["per_stream_rss"], kb)
    print(f"  (RSS delta: RSS with every stream - RSS with one stream per view, over the {a['rest']:,} streams "
          f"opened between; p50/p99 over {pa['samples']:,} and {pb['samples']:,} stream-changes, "
          f"from the publish start)")
    size = "" if args.streams >= TARGET_STREAMS else \
        f" [measured with {args.streams:,} streams, not the target's 1,000]"
    ratio = pb["p99"] / pa["p99"] if pa["p99"] else float("nan")
    missing = f"; {pb['missing']} streams never converged" if pb["missing"] else ""
    print()
    print(f"target: mutual TLS, publish to every stream ACKed p99 < {TARGET_ACK_P99:g} s: "
          f"{verdict(pb['p99'] < TARGET_ACK_P99 and not pb['missing'])} ({ms(pb['p99'])}{missing}){size}")
    print(f"target: mutual TLS p99 within {TARGET_TLS_RATIO:g}x of plaintext's in the same run: "
          f"{verdict(ratio <= TARGET_TLS_RATIO and not pb['missing'])} ({ratio:.2f}x: {ms(pb['p99'])} against "
          f"{ms(pa['p99'])}){size}")


# =========================================================================== part 2: a real Envoy

def run_envoy(args, snapshot, workdir: Path) -> dict:
    import pygit2

    from reconciler.bootstrap import BootstrapOptions, bootstrap_yaml
    from tests.e2e.daemon import Galleon
    from tests.e2e.envoy import Envoy, envoy_binary
    from tests.e2e.sds import SdsServer

    version = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True).stdout.split()
    version = next((w for w in version if re.match(r"^[0-9a-f]{40}/", w)), "?").partition("/")[2].split("/")[0]
    print(f"\n== part 2: a commit reaching a real Envoy (Envoy {version}, {protocol_name(args)} ADS), "
          f"{args.envoy_repeats} commits ==")
    repo_path = workdir / "repo"
    repo = pygit2.init_repository(str(repo_path), initial_head="main")
    signature = pygit2.Signature("Galleon Bench", "bench@galleon.invalid")
    files = dict(snapshot.files)
    changed_path = first_file(snapshot)

    def commit(message: str) -> pygit2.Oid:
        index = pygit2.Index()
        for path, data in sorted(files.items()):
            index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
        tree = index.write_tree(repo)
        parents = [] if repo.head_is_unborn else [repo.head.target]
        return repo.create_commit("refs/heads/main", signature, signature, message, tree, parents)

    commit("the mesh")
    watched = HOME_CLUSTER
    cluster_name = f"outbound|8080||{FIRST_HOST}"  # the sidecar's cluster that holds the endpoint that moves
    galleon = Galleon(repo_path, watched, "--debounce", str(args.debounce))
    envoy = None
    samples = []
    try:
        with SdsServer() as sds:
            galleon.start()
            options = BootstrapOptions(cluster=watched, node_id="sidecar~127.0.0.1~bench.ns-00~ns-00.svc.cluster.local",
                                       ads=galleon.ads, admin="127.0.0.1:0", listen_address="127.0.0.1",
                                       sds_socket=str(sds.socket), delta=args.delta)
            envoy = Envoy(bootstrap_yaml(options), workdir, "envoy").start()

            # The host set Envoy uses for one cluster: what /clusters prints, but for that cluster only
            # (/clusters?format=json of the whole mesh takes ~0.2 s at 300 services and occupies Envoy's
            # main thread, which also applies xDS). Confirmed with /clusters?format=json after each commit.
            probe = ("/config_dump?include_eds&resource=dynamic_endpoint_configs&name_regex="
                     + urllib.parse.quote("^" + re.escape(cluster_name) + "$"))

            def addresses() -> tuple[set[str], float]:
                t0 = time.time()
                dump = json.loads(envoy.get(probe))
                found = set()
                for config in dump.get("configs", []):
                    for group in config.get("endpoint_config", {}).get("endpoints", []):
                        for lb in group.get("lb_endpoints", []):
                            found.add(lb["endpoint"]["address"]["socket_address"]["address"])
                return found, time.time() - t0

            def confirmed(address: str) -> bool:
                return address in {a for a, _, _ in envoy.endpoints().get(cluster_name, [])}

            deadline = time.monotonic() + 60
            while FIRST_ADDRESS not in addresses()[0]:
                if time.monotonic() > deadline or envoy.process.poll() is not None:
                    raise SystemExit(f"Envoy never showed {FIRST_ADDRESS} in {cluster_name}; its log:\n"
                                     f"{envoy.log.read_text()[-3000:]}\ngalleon:\n{galleon.log()}")
                time.sleep(0.05)
            envoy.wait_live(30)
            stats = envoy.stats()
            print(f"Envoy LIVE: {stats.get('cluster_manager.active_clusters', '?')} clusters, "
                  f"watching {cluster_name}")
            current = FIRST_ADDRESS
            pushed = push_latencies(galleon.get("/metrics")[1])
            for k in range(args.envoy_repeats):
                new = f"10.254.{k // 250}.{k % 250 + 1}"
                files[changed_path] = move_endpoint(files[changed_path].decode(), current, new).encode()
                published = galleon.count("configuration published")
                noticed = galleon.count("change noticed")
                time.sleep(0.3)  # let the watcher go quiet, so each commit is timed on its own
                committed = time.time()
                commit(f"move {current} -> {new}")
                polls = []
                while True:
                    seen, took = addresses()
                    polls.append(took)
                    if new in seen:
                        applied = time.time()
                        break
                    time.sleep(0.005)
                    if time.time() - committed > 60:
                        raise SystemExit(f"Envoy did not show {new} within 60 s; galleon:\n{galleon.log()}")
                if not confirmed(new):
                    raise SystemExit(f"the config dump shows {new} in {cluster_name} but /clusters does not")
                event = wait_event(galleon, "configuration published", published, 30)
                notice = wait_event(galleon, "change noticed", noticed, 30)
                current = new
                publish_end = when(event)
                publish_start = publish_end - event["seconds"]
                pushes = push_latencies(galleon.get("/metrics")[1])
                written = {t: (pushes[t][0] - pushed.get(t, (0.0, 0.0))[0]) / (pushes[t][1] - pushed.get(t, (0.0, 0.0))[1])
                           for t in pushes if pushes[t][1] > pushed.get(t, (0.0, 0.0))[1]}
                pushed = pushes
                envoy_stats = stats_of(envoy, r"^(cluster_manager\.cds|listener_manager\.lds)\.update_time$")
                cds_applied = envoy_stats.get("cluster_manager.cds.update_time", 0) / 1000
                samples.append({"total": applied - committed,
                                "noticed": when(notice) - committed,
                                "publish_start": publish_start - committed,
                                "publish_end": publish_end - committed,
                                "cds_written": publish_start + written["clusters"] - committed
                                if "clusters" in written else float("nan"),
                                "last_written": publish_start + max(written.values()) - committed
                                if written else float("nan"),
                                "cds_applied": cds_applied - committed if cds_applied > committed else float("nan"),
                                "poll": statistics.median(polls), "polls": len(polls)})
            rejected = envoy.stats().get("cluster_manager.cds.update_rejected", 0) + \
                envoy.stats().get("listener_manager.lds.update_rejected", 0)
    finally:
        if envoy is not None:
            envoy.stop()
        galleon.stop()
    print("milliseconds from the commit: the watcher noticed it; the server began to publish (read, validated, "
          "built the mesh), had compiled the view, had written CDS and the last type; Envoy had applied CDS "
          "(its cds.update_time); Envoy's host set held the new address")
    print(f"{'':>3} {'noticed':>8} {'publish':>8} {'compiled':>9} {'CDS sent':>9} {'all sent':>9} "
          f"{'CDS applied':>12} {'Envoy shows it':>15}")
    for k, s in enumerate(samples, 1):
        print(f"{k:>3} {s['noticed'] * 1000:>8,.0f} {s['publish_start'] * 1000:>8,.0f} {s['publish_end'] * 1000:>9,.0f} "
              f"{s['cds_written'] * 1000:>9,.0f} {s['last_written'] * 1000:>9,.0f} {s['cds_applied'] * 1000:>12,.0f} "
              f"{s['total'] * 1000:>15,.0f}")
    totals = [s["total"] for s in samples]
    after_publish = [s["total"] - s["publish_start"] for s in samples]
    print(f"commit to Envoy applying it (watcher + {args.debounce * 1000:g} ms debounce + read, validate, "
          f"compile, push, Envoy): median {ms(statistics.median(totals))}, max {ms(max(totals))}; "
          f"of which publish start to Envoy: median {ms(statistics.median(after_publish))}; "
          f"Envoy rejected {rejected} updates")
    print(f"  (times from just before the commit is written until Envoy's host set for {cluster_name} holds the "
          f"new address, polled with /config_dump?include_eds&resource=dynamic_endpoint_configs&name_regex=... "
          f"(~{ms(statistics.median(s['poll'] for s in samples))} a poll) and confirmed with /clusters?format=json)")
    print()
    print(f"target: commit to a real Envoy applying it < {TARGET_ENVOY:g} s (no poll wait): "
          f"{verdict(max(totals) < TARGET_ENVOY)} (median {ms(statistics.median(totals))}, max {ms(max(totals))})")
    return {"samples": samples}


# =========================================================================== main

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        return client_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000, help="ADS streams (each its own connection); default 1000")
    ap.add_argument("--views", type=int, default=5, help="distinct proxy views the streams are spread over; "
                                                         "default 5 (the last an ingress router)")
    ap.add_argument("--services", type=int, default=300, help="services in the mesh; default 300")
    ap.add_argument("--clusters", type=int, default=3, help="clusters, alternating over 2 networks; default 3")
    ap.add_argument("--endpoints", type=int, default=3, help="endpoints per service per cluster; default 3")
    ap.add_argument("--changes", type=int, default=5, help="changes pushed to the streams; default 5")
    ap.add_argument("--envoy-repeats", type=int, default=5, help="commits timed into a real Envoy; default 5")
    ap.add_argument("--envoy-services", type=int, default=None,
                    help="services in the mesh of part 2 (default: --services)")
    ap.add_argument("--debounce", type=float, default=0.1, help="galleon serve --debounce; default 0.1")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for a change to settle")
    ap.add_argument("--quiet", type=float, default=0.5,
                    help="a change has settled once no stream received anything for this long; default 0.5")
    ap.add_argument("--no-gateway", action="store_true", help="no ingress Gateway, every view a sidecar")
    ap.add_argument("--no-envoy", action="store_true", help="skip part 2 (the real Envoy)")
    ap.add_argument("--no-streams", action="store_true", help="skip part 1 (the streams)")
    ap.add_argument("--tls", action="store_true",
                    help="part 1 twice, plaintext then mutual TLS (a client certificate per namespace), side by side")
    ap.add_argument("--quick", action="store_true",
                    help="a small run (100 streams, 3 views, 50 services, 2 changes, 3 Envoy commits), ~15 s")
    add_delta_option(ap, "the client's streams (and part 2's Envoy)")
    args = ap.parse_args(argv)
    if args.quick:
        args.streams, args.views, args.services, args.changes, args.envoy_repeats = 100, 3, 50, 2, 3
    if min(args.streams, args.views, args.services, args.clusters, args.endpoints) < 1 or args.changes < 1 \
            or args.envoy_repeats < 1:
        ap.error("every size must be at least 1")
    if args.tls and args.no_streams:
        ap.error("--tls measures part 1 (the streams): not with --no-streams")
    raise_fd_limit()

    from bench.compile import make_snapshot
    from google.protobuf.internal import api_implementation

    workdir = Path(tempfile.mkdtemp(prefix="galleon-bench-ads-"))
    try:
        started = time.perf_counter()
        snapshot, count = make_snapshot(args.services, args.clusters, args.endpoints, not args.no_gateway)
        size = sum(len(b) for b in snapshot.files.values())
        print(f"mesh: {count:,} objects ({args.services:,} services x 3 + mesh{'' if args.no_gateway else ' and gateway'}), "
              f"{args.clusters} clusters, {args.services * args.clusters * args.endpoints:,} endpoints, "
              f"{len(snapshot.files)} files, {size:,} bytes; generated in {time.perf_counter() - started:.2f} s; "
              f"{os.cpu_count()} CPUs; protobuf {api_implementation.Type()}, grpcio {grpc.__version__}")
        load = os.getloadavg()[0]
        if load > 0.5:
            print(f"warning: load average {load:.2f} before starting: other work on this machine will inflate "
                  "the timings (the client and server share its CPUs already)")
        if not args.no_streams and args.tls:
            plain = run_streams(args, snapshot, workdir)
            router = args.views >= 2 and not args.no_gateway
            secure = run_streams(args, snapshot, workdir, make_tls(workdir / "tls", args.views, router))
            compare_tls(args, plain, secure)
        elif not args.no_streams:
            run_streams(args, snapshot, workdir)
        if not args.no_envoy:
            envoy_snapshot = snapshot
            if args.envoy_services and args.envoy_services != args.services:
                envoy_snapshot, _ = make_snapshot(args.envoy_services, args.clusters, args.endpoints,
                                                  not args.no_gateway)
            run_envoy(args, envoy_snapshot, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
