"""Benchmark: the live registry at scale -- first sync, endpoint events reaching every stream, CPU and memory (prints figures, not a test).

Runs ``galleon serve``'s daemon in this process (reconciler.daemon.Daemon, on a
thread of its own, with its ADS server on a local port) on a directory source
of --services Kubernetes Services (v1 Service and DestinationRule each, in 10
namespaces) and --clusters Clusters, and feeds its live registry directly
through the Sink API (reconciler/registry/sink.py: ``listed`` and ``event``,
from a thread of their own, as a cluster's watch would): per cluster Nodes,
Pods (status.podIP, Ready) and one EndpointSlice per Service, --endpoints pods
per Service per cluster. A client process (bench/ads.py's streams) holds
--streams state-of-the-world ADS streams (with --delta, incremental ones)
subscribed as Envoy does, spread over --views views.

(a) First sync: the streams are connected and synced on the Services alone
(no endpoints); then every cluster is listed, and the time runs until every
stream has ACKed the EDS version that holds all of them.
(b) Events: pods starting, stopping, turning unready (each a Pod and an
EndpointSlice watch event), spread over the clusters and many Services, at
--rate events a second for --seconds, then at twice that rate, and so on while
p99 holds: per event, from the event until every stream that should see it has
ACKed the first EDS response holding it (its slowest stream); the same per
event and stream is printed beside it.
(c) Server CPU per event and memory per endpoint.

    .venv/bin/python bench/registry.py --services 200 --streams 50 --seconds 10   # small: under a minute
    .venv/bin/python bench/registry.py                                            # the issue's size
    .venv/bin/python bench/registry.py --sidecars                                 # each proxy scoped to its namespace
    .venv/bin/python bench/registry.py --services 1000 --profile                  # where the time goes
    .venv/bin/python bench/registry.py --services 200 --streams 50 --seconds 10 --delta  # delta xDS streams

See bench/README.md.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import bisect
import cProfile
import collections
import gc
import itertools
import json
import os
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# As in bench/compile.py: bench/validate.py must not shadow protoc-gen-validate's `validate` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from bench import ads  # noqa: E402  (the client's streams, /proc sampling, percentiles)
from bench.validate import NAMESPACES, REGIONS, SERVICE_NAME_LABEL, TLS_MODE_LABEL, mesh_objects, \
    routing_objects  # noqa: E402
from compiler.xds_types import CLUSTER as CDS, ENDPOINT as EDS  # noqa: E402

HOME = "cluster-0"                 # the cluster the daemon serves (--cluster)
TARGET_FIRST_SYNC = 5.0            # seconds, first list to every stream holding the endpoints
TARGET_P99 = 1.0                   # seconds, event to the last affected stream's ACK, at TARGET_RATE
TARGET_RATE = 100                  # endpoint events a second
PORT = 8080
ZONES = "abc"                      # each cluster's nodes are spread over three zones of its region


def cluster_name(c: int) -> str:
    return f"cluster-{c}"


def service_name(s: int) -> tuple[str, str]:
    return f"svc-{s:05d}", f"ns-{s % NAMESPACES:02d}"


def default_cluster(s: int) -> str:
    """The EDS name of service ``s``'s port: the cluster every endpoint of it is in."""
    name, namespace = service_name(s)
    return f"outbound|{PORT}||{name}.{namespace}.svc.cluster.local"


# =========================================================================== the source (what Git holds)

# Istio's mesh-wide default Sidecar of its documentation: a proxy imports its own namespace's services
# and istio-system's, what Istio advises for a mesh of this size.
NAMESPACE_SIDECAR = {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                     "metadata": {"name": "default", "namespace": "istio-system"},
                     "spec": {"egress": [{"hosts": ["./*", "istio-system/*"]}]}}


def source_files(services: int, clusters: int, sidecars: bool = False) -> dict[str, str]:
    """The repository: the Clusters, MeshNetworks and MeshConfig of bench/validate.py's federation,
    and per service a v1 Service (selector app: NAME, port 8080 http) and its DestinationRule (subsets
    v1/v2, ISTIO_MUTUAL, outlier detection: locality failover), one file per namespace; with
    ``sidecars``, the mesh-wide default Sidecar that scopes each proxy to its namespace."""
    dump = lambda objs: "---\n".join(yaml.dump(o, Dumper=yaml.CSafeDumper, sort_keys=False) for o in objs)  # noqa: E731
    by_namespace: dict[str, list[dict]] = collections.defaultdict(list)
    for s in range(services):
        name, namespace = service_name(s)
        by_namespace[namespace].append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": PORT}]}})
        by_namespace[namespace].append(routing_objects(name, namespace, f"{name}.{namespace}.svc.cluster.local")[0])
    files = {"mesh.yaml": dump(mesh_objects(clusters) + ([NAMESPACE_SIDECAR] if sidecars else []))}
    files.update({f"{namespace}.yaml": dump(objs) for namespace, objs in sorted(by_namespace.items())})
    return files


# =========================================================================== the registry's feed (what runs)

@dataclass(slots=True)
class Event:
    """One endpoint event: a pod of ``service`` in ``cluster`` started, stopped or turned unready,
    reported as two watch events (the Pod, its EndpointSlice); ``at``: when the first was delivered.
    Kept only until a publish holds it (then it is an EventRecord's row)."""
    at: float
    action: str
    cluster: int
    service: int
    slice_version: int  # the EndpointSlice's resourceVersion after it


class Rows:
    """A growing record of numbers, one array per column: however many rows it holds, it adds no Python
    objects, so that a long run's count of Python's blocks (sys.getallocatedblocks) is the daemon's and
    not the benchmark's record of what it did. Iterated, each row is a dict of its columns."""

    def __init__(self, **columns: str) -> None:  # column -> its array's typecode
        self.columns = {name: array.array(code) for name, code in columns.items()}

    def append(self, **row: float) -> None:
        for name, column in self.columns.items():
            column.append(row[name])

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def since(self, first: int):
        names = list(self.columns)
        for values in zip(*(column[first:] for column in self.columns.values())):
            yield dict(zip(names, values))

    def __iter__(self):
        return self.since(0)


class EventRecord:
    """The events a publish has held, as arrays (see Rows): when each was delivered, its service, and
    for each view it changed, the index in that view's history of the service's EDS of the state that
    first held it."""

    def __init__(self) -> None:
        self.at, self.service, self.first = array.array("d"), array.array("i"), array.array("q")
        self.view, self.state = array.array("h"), array.array("i")  # every event's views, one after another

    def add(self, at: float, service: int, views: dict[int, int]) -> None:
        self.at.append(at)
        self.service.append(service)
        self.first.append(len(self.view))
        for view, state in views.items():
            self.view.append(view)
            self.state.append(state)

    def __len__(self) -> int:
        return len(self.at)

    def views(self, event: int) -> dict[int, int]:
        end = self.first[event + 1] if event + 1 < len(self.first) else len(self.view)
        return dict(zip(self.view[self.first[event]:end], self.state[self.first[event]:end]))


class Feed:
    """Every cluster's Nodes, Pods and EndpointSlices, kept as the API server would (each write a new
    object with a new resourceVersion; objects are never changed once reported, since the store keeps
    them), and the watch events that change them, reported to a Sink."""

    def __init__(self, services: int, clusters: int, endpoints: int, nodes: int, seed: int) -> None:
        self.services, self.clusters, self.endpoints_per = services, clusters, endpoints
        self.random = random.Random(seed)
        self.versions = itertools.count(1)  # resourceVersions: one counter for the federation is enough
        self.addresses = itertools.count(1)
        self.names = itertools.count(1)
        self.nodes: list[list[tuple[str, str]]] = []  # per cluster: (node name, zone)
        for c in range(clusters):
            region = REGIONS[c % 2]
            self.nodes.append([(f"{cluster_name(c)}-node-{k:03d}", f"{region}-{c // 2 + 1}{ZONES[k % len(ZONES)]}")
                               for k in range(max(1, nodes))])
        # (cluster, service) -> the EndpointSlice's endpoints: [pod name, address, ready, node, zone]
        self.listed: dict[tuple[int, int], list[list]] = {}
        self.pods: dict[tuple[int, str], dict] = {}  # (cluster, pod name) -> its current object
        self.slices: dict[tuple[int, int], dict] = {}  # (cluster, service) -> its current object
        self.order = collections.deque(self.random.sample(range(services), services))  # least recently changed first

    # --- objects

    def _address(self, c: int) -> str:
        n = next(self.addresses)
        return f"10.{c * 16 + n // 65536 % 16}.{n // 256 % 256}.{n % 256}"

    def _pod(self, c: int, s: int, pod: str, address: str, version: str, node: str, ready: bool) -> dict:
        name, namespace = service_name(s)
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace, "resourceVersion": str(next(self.versions)),
                             "labels": {"app": name, "version": version, TLS_MODE_LABEL: "istio"}},
                "spec": {"serviceAccountName": name, "nodeName": node,
                         "containers": [{"name": "app", "image": "bench/app:1", "ports": [
                             {"name": "http", "containerPort": PORT}]}]},
                "status": {"phase": "Running", "podIP": address,
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    def _slice(self, c: int, s: int) -> dict:
        name, namespace = service_name(s)
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": f"{name}-c{c}", "namespace": namespace,
                             "resourceVersion": str(next(self.versions)), "labels": {SERVICE_NAME_LABEL: name}},
                "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
                "endpoints": [{"addresses": [address], "conditions": {"ready": ready, "serving": ready,
                                                                     "terminating": False},
                               "nodeName": node, "zone": zone,
                               "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod}}
                              for pod, address, ready, node, zone in self.listed[c, s]]}
        self.slices[c, s] = body
        return body

    def build(self) -> None:
        """Every cluster's objects at the start (before the first list)."""
        for c in range(self.clusters):
            nodes = self.nodes[c]
            for s in range(self.services):
                name, _ = service_name(s)
                entries = []
                for e in range(self.endpoints_per):
                    node, zone = nodes[(s * self.endpoints_per + e) % len(nodes)]
                    pod, address = f"{name}-c{c}-{next(self.names):x}", self._address(c)
                    self.pods[c, pod] = self._pod(c, s, pod, address, "v1" if e % 2 == 0 else "v2", node, True)
                    entries.append([pod, address, True, node, zone])
                self.listed[c, s] = entries
                self._slice(c, s)

    def _node(self, c: int, node: str, zone: str) -> dict:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "resourceVersion": str(next(self.versions)),
                             "labels": {"kubernetes.io/hostname": node, "topology.kubernetes.io/region": REGIONS[c % 2],
                                        "topology.kubernetes.io/zone": zone}}}

    def lists(self, c: int) -> list[tuple[str, list[dict]]]:
        """What a list of each kind of cluster ``c`` returns."""
        nodes = [self._node(c, node, zone) for node, zone in self.nodes[c]]
        return [("Node", nodes), ("Pod", [p for (pc, _), p in self.pods.items() if pc == c]),
                ("EndpointSlice", [b for (sc, _), b in self.slices.items() if sc == c]), ("Service", [])]

    def endpoints(self) -> int:
        return sum(len(entries) for entries in self.listed.values())

    def own_bytes(self) -> int:
        """About what the feed holds beside the objects the store keeps: its indexes, and its copies of
        each object's top, metadata and labels mappings (the store keeps copies of its own; strings and
        the rest are shared)."""
        size = sys.getsizeof
        total = size(self.listed) + size(self.pods) + size(self.slices)
        for key, entries in self.listed.items():
            total += size(key) + size(entries) + sum(size(entry) for entry in entries)
        for index in (self.pods, self.slices):
            for key, body in index.items():
                total += size(key) + size(body) + size(body["metadata"]) + size(body["metadata"]["labels"])
        return total

    # --- events

    def move_node(self, c: int) -> dict:
        """Cluster ``c``'s first Node relabelled with another zone of its region: the Node as watched."""
        node, zone = self.nodes[c][0]
        moved = next(z for _, z in self.nodes[c] if z != zone)
        self.nodes[c][0] = (node, moved)
        return self._node(c, node, moved)

    def next_event(self) -> tuple[str, int, int, list[tuple[str, str, dict]]]:
        """The next endpoint event: (action, cluster, service, [(kind, type, object)...]) on the least
        recently changed service, in a random cluster."""
        s = self.order.popleft()
        self.order.append(s)
        c = self.random.randrange(self.clusters)
        entries = self.listed[c, s]
        ready = [i for i, entry in enumerate(entries) if entry[2]]
        roll = self.random.random()
        if len(entries) < 100 and (roll < 0.4 or len(entries) <= 1):
            action = "start"
        elif roll < 0.8 or not ready:
            action = "stop"
        else:
            action = "unready"
        name, _ = service_name(s)
        if action == "start":
            node, zone = self.random.choice(self.nodes[c])
            pod, address = f"{name}-c{c}-{next(self.names):x}", self._address(c)
            version = self.random.choice(("v1", "v2"))
            body = self.pods[c, pod] = self._pod(c, s, pod, address, version, node, True)
            self.listed[c, s] = entries + [[pod, address, True, node, zone]]
            watch = [("Pod", "ADDED", body), ("EndpointSlice", "MODIFIED", self._slice(c, s))]
        elif action == "stop":
            i = self.random.randrange(len(entries))
            pod = entries[i][0]
            self.listed[c, s] = entries[:i] + entries[i + 1:]
            watch = [("EndpointSlice", "MODIFIED", self._slice(c, s)), ("Pod", "DELETED", self.pods.pop((c, pod)))]
        else:
            i = self.random.choice(ready)
            pod, address, _, node, zone = entries[i]
            old = self.pods[c, pod]
            body = self.pods[c, pod] = self._pod(c, s, pod, address, old["metadata"]["labels"]["version"], node,
                                                 False)
            self.listed[c, s] = entries[:i] + [[pod, address, False, node, zone]] + entries[i + 1:]
            watch = [("Pod", "MODIFIED", body), ("EndpointSlice", "MODIFIED", self._slice(c, s))]
        return action, c, s, watch


# =========================================================================== the daemon, in this process

class Server:
    """``galleon serve`` (reconciler.daemon.Daemon) on a thread with its own event loop; its registry's
    store is fed by this process through the Sink API. Its live part needs a registry source to run:
    it is given an empty ``dir:`` folder, which holds no cluster."""

    def __init__(self, source: Path, work: Path, quiet: float, max_wait: float) -> None:
        from reconciler.daemon import Daemon, RegistryOptions, ServeOptions
        empty = work / "empty-registry"
        empty.mkdir()
        options = ServeOptions(source=str(source), cluster=HOME, ads="127.0.0.1:0", http="127.0.0.1:0",
                               state_dir=work / "state",
                               registry=RegistryOptions((f"dir:{empty}",), quiet=quiet, max_wait=max_wait))
        self.daemon = Daemon(options)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tid = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="galleon-serve", daemon=True)
        self.tracker = Tracker(self)
        self.collections = Collections()
        self.profiling = False  # cProfile the daemon's threads (--profile)

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.daemon.run()

    def start(self, timeout: float = 600) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while self.daemon.loader.state.served_revision is None or not self.daemon.ads_port:
            if self.error or not self.thread.is_alive():
                raise SystemExit(f"galleon serve did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise SystemExit(f"galleon serve not serving after {timeout:.0f} s: "
                                 f"{self.daemon.loader.state.error or self.daemon.loader.state.findings[:3]}")
            time.sleep(0.05)

    @property
    def ads_address(self) -> str:
        return f"127.0.0.1:{self.daemon.ads_port}"

    def call(self, fn, timeout: float = 60):
        """Run ``fn()`` on the daemon's loop and return its value."""
        done = threading.Event()
        box: list = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
        if not done.wait(timeout):
            raise SystemExit("the daemon's event loop did not answer for a minute")
        return box[0]

    def settled(self) -> bool:
        """Nothing the registry reported waits to be published, and nothing is being published."""
        live = self.daemon.live
        return self.call(lambda: not live._waiting and live._whole is None and self.tracker.busy == 0)

    def wait_settled(self, timeout: float, after: float = 0.0) -> float:
        """Wait until settled (and a publish started after ``after``, when given); when it was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled() and (not after or self.tracker.last_publish_start >= after):
                return time.time()
            time.sleep(0.02)
        raise SystemExit(f"the daemon did not settle within {timeout:.0f} s")

    def stop(self) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.daemon.stop, "benchmark done")
            self.thread.join(30)


class Collections:
    """The cyclic collector's passes (gc.callbacks), which stop every thread of the daemon for as long
    as they take: over the oldest generation, how many and how long; of any generation, the longest
    (a young generation can grow large unseen: runtime.settle_recent). Since ``reset``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: list[float] = []  # over the oldest generation
        self.longest = 0.0  # of any generation
        gc.callbacks.append(self._on)

    def _on(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        self.longest = max(self.longest, took)
        if info["generation"] == 2:
            self.pauses.append(took)

    def reset(self) -> None:
        self.pauses, self.longest = [], 0.0

    def summary(self) -> str:
        return (f"{len(self.pauses)} passes of the cyclic collector over the oldest generation (what is not frozen), "
                f"{sum(self.pauses):.2f} s in all, the longest {ads.ms(max(self.pauses, default=0.0))}; "
                f"the longest pass of any generation {ads.ms(self.longest)}")


class Tracker:
    """What each publish of registry changes held: wraps the live part's ``_publish`` (busy, batches)
    and the ADS server's ``publish`` (after it, each view's EDS of the services that changed), so that
    every event can be told from the responses that hold it. Its own CPU is counted apart."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.busy = 0
        self.last_publish_start = 0.0
        self.endpoints_only = False  # whether the last publish was of endpoints alone
        # when the daemon waited for every woken stream to be written to, and whether they were
        self.delivered = Rows(at="d", done="b")
        # the resident set (kB) before and after each time the daemon gave the allocator's freed pages back
        self.released = Rows(before="q", after="q")
        self.batches = self.new_batches()
        self.pending: collections.deque[Event] = collections.deque()  # events not yet seen published
        self.open: list[Event] = []  # (loop thread) events waiting for a publish that holds them
        self.record = EventRecord()  # (loop thread) the events published
        self.views: dict[object, int] = {}  # ProxyView -> the client's view index
        # (service, view) -> publish index, crc of its EDS default cluster, publish index, crc, ...: the
        # states streams may hold, in order
        self.history: dict[tuple[int, int], array.array] = {}
        self.publishes = 0
        self.cpu = 0.0  # thread CPU spent here (subtracted from the server's)
        # label -> [calls, wall, CPU, the longest call's wall]
        self.timings: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])

    def install(self) -> None:
        import reconciler.ads.server as ads_server
        import reconciler.daemon.live as live_module
        from reconciler import runtime
        daemon = self.server.daemon
        live, ads_ = daemon.live, daemon.ads
        original_publish, original_live_publish = ads_.publish, live._publish

        async def live_publish(batch):
            self.busy += 1
            started = time.time()
            waited = time.monotonic() - batch.oldest if batch.oldest else 0.0  # its oldest change's wait
            try:
                await original_live_publish(batch)
            finally:
                self.busy -= 1
            self.batches.append(whole=batch.whole, objects=len(batch.changed) + len(batch.gone), waited=waited,
                                seconds=time.time() - started, at=started, endpoints_only=self.endpoints_only)

        async def publish(mesh, endpoints_of=None):
            self.last_publish_start = time.time()
            self.endpoints_only = endpoints_of is not None
            await original_publish(mesh, endpoints_of)
            cpu = time.thread_time()
            self.published(mesh, endpoints_of)
            self.cpu += time.thread_time() - cpu

        original_delivered = ads_.delivered

        async def delivered(timeout):
            done = await original_delivered(timeout)
            self.delivered.append(at=time.time(), done=done)
            return done

        live._publish, ads_.publish, ads_.delivered = live_publish, publish, delivered
        for module, name in ((live_module, "relisted"), (ads_server, "serve_view")):
            setattr(module, name, self.timed(name, getattr(module, name)))
        timed_release = self.timed("release_freed", runtime.release_freed)

        def release_freed():  # (timed as the others, and the resident set it gave back)
            before = ads.process_memory(os.getpid())["VmRSS"]
            timed_release()
            self.released.append(before=before, after=ads.process_memory(os.getpid())["VmRSS"])

        runtime.release_freed = release_freed

    def timed(self, label: str, fn):
        def run(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                if self.server.profiling:
                    return Profiles.call(fn, *args, **kwargs)
                return fn(*args, **kwargs)
            finally:
                entry = self.timings[label]
                entry[0] += 1
                entry[1] += time.perf_counter() - wall
                entry[2] += time.thread_time() - cpu
                entry[3] = max(entry[3], time.perf_counter() - wall)
        return run

    @staticmethod
    def new_batches() -> Rows:
        return Rows(whole="b", objects="q", waited="d", seconds="d", at="d", endpoints_only="b")

    def reset(self) -> None:
        """(on the loop) From now on: the publishes, and the events published."""
        self.batches, self.record = self.new_batches(), EventRecord()

    def baseline(self, view_indices: dict[object, int], services: int) -> None:
        """(on the loop) Each view's EDS of every service now: the state events start from."""
        self.views = view_indices
        views = self.server.daemon.ads.views
        for view, index in view_indices.items():
            served = views.get(view)
            if served is None:
                continue
            held = served.resources[EDS]
            for s in range(services):
                resource = held.get(default_cluster(s))
                if resource is not None:
                    self.history[s, index] = array.array("q", (0, zlib.crc32(resource.data)))

    def published(self, mesh, endpoints_of) -> None:
        """(on the loop, after a publish) Which waiting events this publish holds, and each view's new
        EDS of their services."""
        self.publishes += 1
        while self.pending:
            self.open.append(self.pending.popleft())
        if not self.open:
            return
        held, waiting = [], []
        slices = mesh.listings.slices
        for event in self.open:
            name, namespace = service_name(event.service)
            objects = slices.get((namespace, name), {}).get(cluster_name(event.cluster), ())
            version = max((int(o.body["metadata"]["resourceVersion"]) for o in objects), default=0)
            (held if version >= event.slice_version else waiting).append(event)
        self.open = waiting
        if not held:
            return
        views = self.server.daemon.ads.views
        states: dict[tuple[int, int], int] = {}
        for event in held:
            changed: dict[int, int] = {}  # view -> the index of the state this publish gave it
            for view, index in self.views.items():
                key = (event.service, index)
                if key not in states:
                    served = views.get(view)
                    resource = served.resources[EDS].get(default_cluster(event.service)) if served else None
                    if resource is None:
                        continue
                    crc = zlib.crc32(resource.data)
                    history = self.history.setdefault(key, array.array("q"))
                    if not history or history[-1] != crc:
                        history.extend((self.publishes, crc))
                    states[key] = crc
                history = self.history[key]
                if history[-2] == self.publishes:  # this publish changed what the view gets
                    changed[index] = len(history) // 2 - 1
            self.record.add(event.at, event.service, changed)

    def expectations(self) -> list:
        """Per event published: (when, its service's EDS name, {view: every state from the one holding it
        on})."""
        record = self.record
        return [[record.at[event], default_cluster(record.service[event]),
                 {index: self.history[record.service[event], index][2 * state + 1::2].tolist()
                  for index, state in record.views(event).items()}]
                for event in range(len(record))]


class Profiles:
    """One cProfile.Profile per thread (a profile records the thread it was enabled in), merged."""
    by_thread: dict[int, cProfile.Profile] = {}
    whole: set[int] = set()  # threads profiled throughout (the loop's), where a timed call adds nothing
    lock = threading.Lock()

    @classmethod
    def throughout(cls, on: bool) -> None:
        """Profile this thread from now on (or no longer)."""
        profile = cls.of_thread()
        if on:
            cls.whole.add(threading.get_ident())
            profile.enable()
        else:
            cls.whole.discard(threading.get_ident())
            profile.disable()

    @classmethod
    def call(cls, fn, *args, **kwargs):
        """``fn`` profiled: on a thread profiled throughout, its profile records it already (and
        ``runcall`` would turn it off on return)."""
        if threading.get_ident() in cls.whole:
            return fn(*args, **kwargs)
        return cls.of_thread().runcall(fn, *args, **kwargs)

    @classmethod
    def of_thread(cls) -> cProfile.Profile:
        ident = threading.get_ident()
        with cls.lock:
            if ident not in cls.by_thread:
                cls.by_thread[ident] = cProfile.Profile()
            return cls.by_thread[ident]

    @classmethod
    def report(cls, title: str) -> None:
        profiles = [p for p in cls.by_thread.values()]
        if not profiles:
            return
        for p in profiles:
            p.create_stats()
        stats = pstats.Stats(profiles[0])
        for p in profiles[1:]:
            stats.add(p)
        print(f"\n== profile: {title} (every thread that ran the daemon's work, merged) ==")
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(25)


# =========================================================================== the client process

def client_main(argv: list[str]) -> int:
    """``bench/registry.py --client ADS STREAMS VIEWS CLUSTERS DELTA(0|1)``: bench/ads.py's Client (its
    Proxy, or with DELTA its DeltaProxy), whose streams also log each EDS ACK (when, the response's id);
    responses are analysed once per id (in state of the world the id is the nonce, and the daemon sends
    the same bytes, nonce included, to every stream of a view that is in step; a delta stream's nonces
    are its own)."""
    address, streams, views, clusters = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    base = ads.DeltaProxy if argv[4] == "1" else ads.Proxy
    analyses: dict[str, dict[str, int]] = {}
    state = {"recording": False}

    class RecordingProxy(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.eds: list[tuple[float, str]] = []

        def on_ack(self, response, at: float) -> None:
            if response.type_url != EDS or not state["recording"]:
                return
            key = self.response_id(response)
            self.eds.append((at, key))
            if key not in analyses:
                analyses[key] = {_cla_name(value): zlib.crc32(value) for value in self.values(response)}

    lags: list[float] = []  # while recording: how late the client's loop ran a 10 ms timer
    pauses: list[float] = []  # while recording: the client's cyclic collector passes, any generation
    collecting = [0.0]

    def on_collect(phase: str, info: dict) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        elif state["recording"]:
            pauses.append(time.perf_counter() - collecting[0])

    gc.callbacks.append(on_collect)

    async def watch_lag() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            if state["recording"]:
                lags.append(time.perf_counter() - before - 0.01)

    class RegistryClient(ads.Client):
        since_open = {"responses": 0, "bytes": 0, "user": 0.0, "kernel": 0.0}  # (received() when the last open ended)

        async def main(self) -> None:
            loop = asyncio.get_running_loop()
            self.tasks.append(asyncio.ensure_future(watch_lag()))
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            try:
                while True:
                    line = (await reader.readline()).decode().split()
                    if not line or line[0] == "quit":
                        break
                    command, rest = line[0], line[1:]
                    if command == "open":
                        opened = await self.open(int(rest[0]))
                        self.since_open = self.received()
                        self.say(event="opened", **opened)
                    elif command == "eds":  # wait until every stream holds every assignment of its view
                        self.say(event="eds", **await self.await_eds(json.loads(Path(rest[0]).read_text()),
                                                                      float(rest[1])))
                    elif command == "record":
                        for p in self.proxies:
                            p.eds = []
                        analyses.clear()
                        lags.clear()
                        pauses.clear()
                        state["recording"] = True
                        self.say(event="recording")
                    elif command == "quiet":
                        self.say(event="quiet", **await self.quiet(float(rest[0]), float(rest[1])))
                    elif command == "match":
                        state["recording"] = False
                        self.say(event="matched", **self.match(json.loads(Path(rest[0]).read_text())))
            finally:
                for task in self.tasks:
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                for channel in self.channels:
                    await channel.close()

        async def await_eds(self, targets: dict[str, list], timeout: float) -> dict:
            """Wait until every stream holds its view's every assignment (``targets``: view -> [the view's
            EDS version, its number of assignments]; ads.Proxy.holds)."""
            def synced(p) -> bool:
                target = targets.get(str(p.view))
                return target is not None and p.holds(EDS, *target)

            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if all(synced(p) or p.error for p in self.proxies):
                    break
                await asyncio.sleep(0.01)
            done = [p.last_ack.get(EDS) for p in self.proxies if synced(p)]
            now = self.received()
            return {"times": done, "missing": len(self.proxies) - len(done),
                    **{key: now[key] - self.since_open[key] for key in now},
                    "errors": [p.error for p in self.proxies if p.error][:3]}

        def received(self) -> dict:
            """What every stream has received since it opened, and the process's CPU, user and kernel."""
            times = os.times()
            return {"responses": sum(p.since_mark for p in self.proxies), "bytes": sum(p.bytes for p in self.proxies),
                    "user": times.user, "kernel": times.system}

        async def quiet(self, seconds: float, timeout: float) -> dict:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and time.time() - self.last_receive < seconds:
                await asyncio.sleep(0.05)
            return {"quiet": time.time() - self.last_receive >= seconds}

        def match(self, expected: list) -> dict:
            """For each event and each stream of a view it changed: from the event to the stream's ACK of
            the first EDS response holding its service's assignment in a state at or after it."""
            by_view: dict[int, list] = collections.defaultdict(list)
            for number, (at, name, views_) in enumerate(expected):
                for view, states in views_.items():
                    by_view[int(view)].append((number, at, name, set(states)))
            # The responses (nonces) of each event's states, per view: every stream of a view in step
            # gets the same ones; one that lags gets others, found the same way.
            latencies: list[float] = []
            worst: dict[int, float] = {}
            missing = 0
            streams_of: dict[int, list] = collections.defaultdict(list)
            for p in self.proxies:
                streams_of[p.view].append(p)
            for view, events in by_view.items():
                for p in streams_of[view]:
                    # Each response's first ACK, in time order: the first at or after an event holding its
                    # service's assignment in a state at or after it is found by a search and a short scan
                    # (a SotW response holds every assignment, so indexing by name would cost more).
                    acked: dict[str, float] = {}
                    for at, nonce in p.eds:
                        acked.setdefault(nonce, at)
                    order = sorted((at, nonce) for nonce, at in acked.items())
                    times = [at for at, _ in order]
                    for number, at, name, states in events:
                        for index in range(bisect.bisect_left(times, at), len(order)):
                            if analyses.get(order[index][1], {}).get(name) in states:
                                latency = times[index] - at
                                latencies.append(latency)
                                worst[number] = max(worst.get(number, 0.0), latency)
                                break
                        else:
                            missing += 1
            latencies.sort()
            per_event = sorted(worst.values())
            return {"pairs": len(latencies), "missing": missing,
                    "p50": ads.percentile(latencies, 50), "p90": ads.percentile(latencies, 90),
                    "p99": ads.percentile(latencies, 99), "max": latencies[-1] if latencies else float("nan"),
                    "event_worst_p50": ads.percentile(per_event, 50), "event_worst_p99": ads.percentile(per_event, 99),
                    "responses": sum(len(p.eds) for p in self.proxies),
                    "client_lag_p99": ads.percentile(sorted(lags), 99), "client_lag_max": max(lags, default=0.0),
                    "client_gc": len(pauses), "client_gc_max": max(pauses, default=0.0)}

    ads.client_runtime()
    asyncio.run(RegistryClient(address, streams, views, clusters, False, proxy=RecordingProxy).main())
    return 0


def _cla_name(data: bytes) -> str:
    """A ClusterLoadAssignment's cluster_name (field 1, which Galleon writes first) without parsing it."""
    if data[:1] == b"\n":
        length, shift, i = 0, 0, 1
        while True:
            byte = data[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if byte < 0x80:
                break
            shift += 7
        return data[i:i + length].decode()
    from envoy.config.endpoint.v3 import endpoint_pb2
    return endpoint_pb2.ClusterLoadAssignment.FromString(data).cluster_name


class ClientProcess(ads.ClientProcess):
    def __init__(self, address: str, streams: int, views: int, clusters: int,  # noqa: D107
                 delta: bool = False) -> None:
        # Responses of tens of MB, one after another on a thousand connections: glibc would keep each
        # freed buffer in its heap (its mmap threshold grows with the largest freed), gigabytes in all.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--client", address, str(streams), str(views),
             str(clusters), "1" if delta else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)


# =========================================================================== measuring this process

class FeedThread:
    """Runs the feed's work on a thread of its own, as a cluster's watch runs on its own thread in the
    daemon; ``fn`` says how much of its thread's CPU went to making the objects (the benchmark's work,
    not the server's), and ``cpu`` is the thread's CPU in all."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def run(self, fn) -> None:
        def main():
            started = time.thread_time()
            fn()
            self.cpu = time.thread_time() - started
        thread = threading.Thread(target=main, name="registry-feed")
        thread.start()
        thread.join()


# =========================================================================== main

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        return client_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=5000, help="Kubernetes Services in the source; default 5000")
    ap.add_argument("--clusters", type=int, default=3, help="clusters, alternating over 2 networks; default 3")
    ap.add_argument("--endpoints", type=int, default=10,
                    help="pods per service per cluster at the start; default 10 (150,000 endpoints)")
    ap.add_argument("--nodes", type=int, default=30, help="Nodes per cluster, over 3 zones; default 30")
    ap.add_argument("--streams", type=int, default=1000, help="ADS streams (each its own connection); default 1000")
    ap.add_argument("--open-batch", type=int, default=100, help="streams opened at a time; default 100")
    ap.add_argument("--views", type=int, default=5, help="distinct sidecar views the streams are spread over; "
                                                         "default 5")
    ap.add_argument("--rate", type=float, default=TARGET_RATE, help="endpoint events a second of the first step; "
                                                                    "default 100")
    ap.add_argument("--max-rate", type=float, default=3200, help="the last step's rate at most; default 3200")
    ap.add_argument("--steps", type=int, default=None, help="at most this many steps (default: until p99 fails)")
    ap.add_argument("--seconds", type=float, default=60, help="seconds each rate is sustained; default 60")
    ap.add_argument("--registry-quiet", type=float, default=0.1, help="galleon serve --registry-quiet; default 0.1")
    ap.add_argument("--registry-max-wait", type=float, default=1.0,
                    help="galleon serve --registry-max-wait; default 1")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the events; default 1")
    ap.add_argument("--profile", nargs="?", const="both", choices=("sync", "events", "both"), default=None,
                    help="cProfile the daemon's threads during the first sync, the first step of events, or both "
                         "(--profile alone), and print where the time goes")
    ap.add_argument("--sidecars", action="store_true",
                    help="add Istio's mesh-wide default Sidecar (egress ./* and istio-system/*): each proxy sees "
                         "its namespace's services, a tenth of the mesh, instead of every service")
    ads.add_delta_option(ap)
    args = ap.parse_args(argv)
    if min(args.services, args.clusters, args.endpoints, args.streams, args.views, args.open_batch) < 1 \
            or args.rate <= 0 \
            or args.seconds <= 0:
        ap.error("every size must be at least 1")
    args.views = min(args.views, args.streams)
    ads.raise_fd_limit()
    from reconciler import logs, runtime
    runtime.for_daemon()  # the policy of what is measured: galleon serve's
    logs.configure("warning", json_lines=True)
    from google.protobuf.internal import api_implementation
    import grpc

    work = Path(tempfile.mkdtemp(prefix="galleon-bench-registry-"))
    server = client = None
    try:
        started = time.perf_counter()
        files = source_files(args.services, args.clusters, args.sidecars)
        source = work / "source"
        source.mkdir()
        for name, text in files.items():
            (source / name).write_text(text)
        endpoints = args.services * args.clusters * args.endpoints
        print(f"mesh: {args.services:,} Kubernetes Services (a Service and a DestinationRule each) in "
              f"{NAMESPACES} namespaces{', a default Sidecar scoping each proxy to its namespace' if args.sidecars else ''}, "
              f"{args.clusters} clusters on 2 networks; registry: {endpoints:,} pods "
              f"({args.endpoints} per service per cluster, one EndpointSlice per service per cluster), "
              f"{args.nodes} Nodes per cluster; {args.streams:,} {ads.protocol_name(args)} streams over "
              f"{args.views} views; source "
              f"written in {time.perf_counter() - started:.2f} s; {os.cpu_count()} CPUs; protobuf "
              f"{api_implementation.Type()}, grpcio {grpc.__version__}")
        load = os.getloadavg()[0]
        if load > 0.5:
            print(f"warning: load average {load:.2f} before starting: other work on this machine will inflate "
                  "the timings (the client and the daemon share its CPUs already)")

        t0 = time.perf_counter()
        server = Server(source, work, args.registry_quiet, args.registry_max_wait)
        server.tracker.install()
        server.start()
        print(f"galleon serve (in this process) serving the source in {time.perf_counter() - t0:.2f} s; "
              f"ADS {server.ads_address}")

        client = ClientProcess(server.ads_address, args.streams, args.views, args.clusters, args.delta)
        first = client.ask(f"open {args.views}")
        if first["failed"]:
            raise SystemExit(f"streams failed: {first['errors']}")
        rest, opening = args.streams - args.views, time.perf_counter()
        while rest > 0:  # in batches: a thousand views' worth of clusters at once is more than memory holds
            opened = client.ask(f"open {min(rest, args.open_batch)}")
            if opened["failed"]:
                raise SystemExit(f"{opened['failed']} streams failed: {opened['errors']}")
            rest -= opened["streams"]
        print(f"streams: {args.views} (one per view) synced in {first['seconds']:.2f} s, "
              f"{args.streams - args.views:,} more in {time.perf_counter() - opening:.2f} s, {args.open_batch} at a "
              f"time (Services only: clusters, empty assignments, listeners, routes)")

        # Which of the client's views is which ProxyView of the daemon's.
        from reconciler.ads.views import view_of_node
        mesh = server.daemon.ads.mesh
        view_indices = {view_of_node(mesh, ads.view_node(v, v, args.clusters, False), HOME): v
                        for v in range(args.views)}
        known = {server.tid: "loop", threading.get_native_id(): "main"}

        # ---------------------------------------------------------------- (a) the first sync
        feed = Feed(args.services, args.clusters, args.endpoints, args.nodes, args.seed)
        feeder = FeedThread()
        registry = server.daemon.live.registry
        time.sleep(0.5)
        rss_before = ads.process_memory(os.getpid())["VmRSS"]
        cpu_before, process_before = ads.thread_cpu(os.getpid(), known), ads.process_cpu(os.getpid())
        client_before = ads.proc_sample(client.process.pid)["cpu"]
        server.collections.reset()
        server.tracker.timings.clear()  # (the start's compiles are not the first sync's)
        making = time.thread_time()
        feed.build()
        build_seconds = time.thread_time() - making
        if args.profile in ("sync", "both"):
            server.profiling = True
            server.call(lambda: Profiles.throughout(True))
        listed_at: list[float] = []
        listed_objects = [0]
        making_lists = [0.0]

        def list_all() -> None:
            # Kind after kind, each in every cluster: as the daemon's feeds list the clusters at once, each
            # on its own thread (a cluster whose list is done while the others' are under way waits for
            # them: one rebuild for all).
            made = time.thread_time()
            lists = [feed.lists(c) for c in range(args.clusters)]
            making_lists[0] += time.thread_time() - made
            for k in range(len(lists[0])):
                for c in range(args.clusters):
                    kind, objects = lists[c][k]
                    listed_at.append(time.time())
                    listed_objects[0] += len(objects)
                    registry.listed(cluster_name(c), kind, objects)
            listed_at.append(time.time())

        feeder.run(list_all)
        first_list, last_list = listed_at[0], listed_at[-1]
        server.wait_settled(1800, after=last_list)
        settled_at = time.time()
        if server.profiling:
            server.call(lambda: Profiles.throughout(False))
        synced = streams_hold_served_eds(server, client, view_indices, work / "eds.json")
        cpu_synced, process_synced = ads.thread_cpu(os.getpid(), known), ads.process_cpu(os.getpid())
        client_synced = ads.proc_sample(client.process.pid)["cpu"]
        time.sleep(1.0)
        rss_synced = ads.process_memory(os.getpid())["VmRSS"]
        times = [t - first_list for t in synced["times"]]
        sync_total = max(times) if times and not synced["missing"] else float("nan")
        batches = list(server.tracker.batches)
        publishes = ", ".join(f"{b['seconds']:.2f} s" for b in batches)
        status = registry.status()
        never = (f"; {synced['missing']} streams never did, for example: {'; '.join(synced['errors']) or 'no error'}"
                 if synced["missing"] else "")
        print(f"\n== (a) first sync: {args.clusters} clusters listed ({listed_objects[0]:,} objects: Nodes, Pods, "
              f"EndpointSlices), {endpoints:,} endpoints ==")
        print(f"lists reported in {last_list - first_list:.2f} s (the store: schema checks, labels); the daemon "
              f"settled {settled_at - first_list:.2f} s after the first list: {len(batches)} publishes of the "
              f"registry's changes ({publishes}); clusters synced: "
              f"{sum(c['synced'] for c in status)}/{args.clusters}")
        sizes = server.call(lambda: [(len(v.resources[EDS]), len(v.sotw(EDS, None)[2]), len(v.sotw(CDS, None)[2]))
                                     for v in server.daemon.ads.views.values()])
        print(f"each view: {max(s[0] for s in sizes):,} assignments; its whole EDS response "
              f"{max(s[1] for s in sizes) / 2 ** 20:,.1f} MB (CDS {max(s[2] for s in sizes) / 2 ** 20:,.1f} MB), "
              f"{max(s[1] for s in sizes) * args.streams / 2 ** 30:,.1f} GB for the {args.streams:,} streams")
        held = ", holding as many assignments as the view has" if args.delta else ""
        written = [(row["at"] - first_list, row["done"]) for row in server.tracker.delivered if row["at"] >= last_list]
        if written:
            print(f"the daemon had written every stream's update {written[0][0]:.2f} s after the first list"
                  if written[0][1] else f"the daemon had not written every stream's update {written[0][0]:.2f} s "
                  f"after the first list (it waits {runtime.DELIVERY_WAIT:g} s at most)")
        print(f"every stream holds the endpoints (ACKed its view's EDS version{held}) {sync_total:.2f} s after the "
              f"first list (per stream: p50 {ads.ms(ads.percentile(times, 50))}, p99 {ads.ms(ads.percentile(times, 99))}"
              f"{never}); the client received {synced['responses']:,} responses, {synced['bytes'] / 2 ** 30:.2f} GB "
              f"(CDS too: a cluster lists its endpoints' identities), its CPU {synced['user']:.2f} s in user space and "
              f"{synced['kernel']:.2f} s in the kernel")
        cpu = {k: cpu_synced.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_synced}
        store = feeder.cpu - making_lists[0]
        server_cpu = process_synced - process_before - cpu.get("main", 0.0) - feeder.cpu + store \
            - server.tracker.cpu
        print(f"server CPU for the first sync: {server_cpu:.2f} s (event loop {cpu.get('loop', 0):.2f} s, gRPC "
              f"threads {cpu.get('grpc', 0):.2f} s, the store (Sink calls, on the feed's thread) {store:.2f} s, "
              f"others (mesh, compile) {server_cpu - cpu.get('loop', 0) - cpu.get('grpc', 0) - store:.2f} s); "
              f"making the objects ({build_seconds + making_lists[0]:.2f} s) left out; the client process "
              f"{client_synced - client_before:.2f} s on the same {os.cpu_count()} CPUs")
        timings = server.tracker.timings
        print("  where: " + "; ".join(f"{label} {int(calls)} calls, {wall:.2f} s wall, {cpu_:.2f} s CPU"
                                      for label, (calls, wall, cpu_, _) in timings.items())
              + f"; {server.collections.summary()}")
        own = feed.own_bytes()
        per_endpoint = ((rss_synced - rss_before) * 1024 - own) / endpoints
        print(f"server RSS: {ads.mb(rss_before)} before the objects were made -> {ads.mb(rss_synced)} synced: "
              f"{per_endpoint:,.0f} bytes per endpoint ((RSS synced - RSS before - the feed's own "
              f"{own / 2 ** 20:,.1f} MB) / {endpoints:,}: the objects as the store holds them, the mesh, "
              f"{args.views} views' EDS and their responses)")
        if server.profiling:
            Profiles.report("the first sync")
            Profiles.by_thread.clear()
            server.profiling = False

        # ---------------------------------------------------------------- (a2) a whole rebuild
        rebuild_step(server, client, feed, feeder, known, view_indices, work)
        server.profiling = args.profile in ("events", "both")
        server.tracker.timings.clear()
        server.call(lambda: server.tracker.baseline(view_indices, args.services))

        # ---------------------------------------------------------------- (b) events
        steps = []
        rate = args.rate
        while rate <= args.max_rate and (args.steps is None or len(steps) < args.steps):
            step = run_step(args, server, client, feed, feeder, known, rate, work)
            steps.append(step)
            if server.profiling and len(steps) == 1:
                Profiles.report(f"{rate:g} events/s")
                Profiles.by_thread.clear()
                server.profiling = False
            if not step["holds"]:
                break
            rate *= 2

        # ---------------------------------------------------------------- the verdicts
        print()
        size = "" if (args.services, args.clusters * args.services * args.endpoints, args.streams) == \
            (5000, 150_000, 1000) else (f" [measured with {args.services:,} services, {endpoints:,} endpoints, "
                                        f"{args.streams:,} streams: not the target's 5,000, 150,000, 1,000]")
        floor = "" if sync_total < TARGET_FIRST_SYNC else \
            "; bench/sync_floor.py measures the part of it that is the client receiving on these CPUs"
        print(f"target: first sync of {args.clusters} clusters to every stream < {TARGET_FIRST_SYNC:g} s: "
              f"{ads.verdict(sync_total < TARGET_FIRST_SYNC)} ({sync_total:.2f} s{floor}){size}")
        at_target = next((s for s in steps if s["rate"] == TARGET_RATE), None)
        if at_target is not None:
            print(f"target: {TARGET_RATE} events/s, every affected stream ACKed (the slowest of each event) "
                  f"p99 < {TARGET_P99:g} s: "
                  f"{ads.verdict(at_target['holds'])} (p99 {ads.ms(at_target['p99'])}, {at_target['missing']} "
                  f"stream-events missing){size}")
        held = [s["rate"] for s in steps if s["holds"]]
        tried = ", ".join(f"{s['rate']:g}/s p99 {ads.ms(s['p99'])}" for s in steps)
        print(f"highest rate tried that holds p99 < {TARGET_P99:g} s: "
              f"{f'{max(held):g} events/s' if held else 'none'} (steps: "
              f"{tried})")
        if steps:
            per_step = ", ".join(f"{s['cpu_per_event'] * 1000:.2f} ms at {s['rate']:g}/s" for s in steps)
            print(f"server CPU per event: {per_step} (a publish costs about the same however many events it "
                  f"holds); memory per endpoint: {per_endpoint:,.0f} bytes")
        print(f"Istio's anchor: one istiod serves 1,000 services and 2,000 sidecars on 1 vCPU and 1.5 GB, endpoint "
              f"pushes debounced 100 ms; here {args.services:,} services, {args.streams:,} streams, peak RSS "
              f"{ads.mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)} (the benchmark's own objects included)")
    finally:
        if client is not None:
            client.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def memo_entries() -> dict[str, int]:
    """How many entries each of the compiler's process-wide memos holds (compiler/cache.py)."""
    from compiler import cache
    return {memo.name: len(memo._values) for memo in vars(cache).values() if isinstance(memo, cache.Memo)}


def statistics_median(values: list[float]) -> float:  # noqa: D103
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def streams_hold_served_eds(server: Server, client, view_indices: dict, path: Path) -> dict:
    """Wait until every stream holds (has ACKed) the EDS its view is served now; the client's answer."""
    views = server.daemon.ads.views
    targets = server.call(lambda: {str(v): [views[view].versions[EDS], len(views[view].resources[EDS])]
                                   for view, v in view_indices.items() if view in views})
    path.write_text(json.dumps(targets))
    return client.ask(f"eds {path} 1800", timeout=1900)


def rebuild_step(server: Server, client, feed: Feed, feeder: FeedThread, known: dict[int, str],
                 view_indices: dict, work: Path) -> None:
    """A Node moved to another zone in the first cluster, once the first sync is over: the mesh built
    anew from every object and every view compiled, as a Service changed or a commit does; until
    every stream holds the endpoints' new localities."""
    registry = server.daemon.live.registry
    server.collections.reset()
    server.call(server.tracker.reset)
    written_before = len(server.tracker.delivered)
    cpu0, process0 = ads.thread_cpu(os.getpid(), known), ads.process_cpu(os.getpid())
    tracker_cpu0 = server.tracker.cpu
    at: list[float] = []
    node = feed.move_node(0)
    feeder.run(lambda: (at.append(time.time()), registry.event(cluster_name(0), "Node", "MODIFIED", node)))
    server.wait_settled(600, after=at[0])
    settled = time.time() - at[0]
    synced = streams_hold_served_eds(server, client, view_indices, work / "eds-rebuilt.json")
    cpu1, process1 = ads.thread_cpu(os.getpid(), known), ads.process_cpu(os.getpid())
    server_cpu = process1 - process0 - (cpu1.get("main", 0.0) - cpu0.get("main", 0.0)) \
        - (server.tracker.cpu - tracker_cpu0)
    publishes = ", ".join(f"{b['seconds']:.2f} s" for b in server.tracker.batches if b["whole"])
    written = [row["at"] - at[0] for row in server.tracker.delivered.since(written_before) if row["done"]]
    written_text = f"{written[0]:.2f} s after the event" if written else "not within the wait"
    held = max((t - at[0] for t in synced["times"]), default=float("nan"))
    never = (f" ({synced['missing']} streams never did, for example: {'; '.join(synced['errors']) or 'no error'})"
             if synced["missing"] else "")
    print("\n== (a2) a Node moved to another zone: the mesh built anew from every object and every view compiled, "
          "as a Service changed or a commit does ==")
    print(f"whole publishes: {publishes} (with the after-work); the daemon had written every stream's update "
          f"{written_text}, settled {settled:.2f} s after; every stream holds the new endpoints {held:.2f} s "
          f"after{never}")
    print(f"server CPU: {server_cpu:.2f} s; {server.collections.summary()}")


def run_step(args, server: Server, client, feed: Feed, feeder: FeedThread, known: dict[int, str], rate: float,
             work: Path) -> dict:
    """Events at ``rate`` a second for --seconds; then every stream's latency to each event."""
    registry = server.daemon.live.registry
    tracker = server.tracker
    server.call(tracker.reset)
    server.collections.reset()
    client.ask("record")
    actions: collections.Counter[str] = collections.Counter()  # the events fed, by what each did
    total = int(rate * args.seconds)
    lag = array.array("d")  # how late each event that was fed late was
    sinking = [0.0]
    making = [0.0]
    if server.profiling:
        server.call(lambda: Profiles.throughout(True))
    cpu0, process0, client_cpu0 = ads.thread_cpu(os.getpid(), known), ads.process_cpu(os.getpid()), ads.proc_sample(client.process.pid)["cpu"]
    tracker_cpu0 = tracker.cpu
    rss0 = ads.process_memory(os.getpid())["VmRSS"]
    released0 = len(tracker.released)
    # the resident set, Python's allocated blocks, the C heap's bytes in use and kept free, and the entries
    # of the compiler's process-wide memos
    by_minute = [(rss0, sys.getallocatedblocks(), ads.malloc_totals(), memo_entries())]
    began = time.time()

    def run() -> None:
        profile = Profiles.of_thread() if server.profiling else None
        start = time.monotonic()
        minute = max(1, int(rate * 60))
        for k in range(total):
            if k and not k % minute:
                by_minute.append((ads.process_memory(os.getpid())["VmRSS"], sys.getallocatedblocks(),
                                  ads.malloc_totals(), memo_entries()))
            due = start + k / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                lag.append(now - due)
            t = time.thread_time()
            action, c, s, watch = feed.next_event()
            making[0] += time.thread_time() - t
            at = time.time()
            t = time.perf_counter()
            if profile is not None:
                profile.enable()
            for kind, kind_type, body in watch:
                registry.event(cluster_name(c), kind, kind_type, body)
            if profile is not None:
                profile.disable()
            sinking[0] += time.perf_counter() - t
            actions[action] += 1
            tracker.pending.append(Event(at, action, c, s, int(feed.slices[c, s]["metadata"]["resourceVersion"])))

    feeder.run(run)
    fed = time.time()
    server.wait_settled(600)
    client.ask("quiet 1.0 120", timeout=200)
    if server.profiling:
        server.call(lambda: Profiles.throughout(False))
    cpu1, process1, client_cpu1 = ads.thread_cpu(os.getpid(), known), ads.process_cpu(os.getpid()), ads.proc_sample(client.process.pid)["cpu"]
    expected = server.call(tracker.expectations)
    fed_events = sum(actions.values())
    unpublished = fed_events - len(expected)
    path = work / f"expected-{rate:g}.json"
    path.write_text(json.dumps(expected))
    matched = client.ask(f"match {path}", timeout=1800)
    cpu = {k: cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1}
    store = feeder.cpu - making[0]
    server_cpu = process1 - process0 - cpu.get("main", 0.0) - making[0] - (tracker.cpu - tracker_cpu0)
    batches = tracker.batches
    achieved = fed_events / (fed - began)
    holds = matched["event_worst_p99"] < TARGET_P99 and not matched["missing"] and not unpublished
    affected = len(tracker.record.view)
    print(f"\n== (b) {rate:g} endpoint events/s for {args.seconds:g} s: {fed_events:,} events "
          f"({', '.join(f'{n:,} {a}' for a, n in sorted(actions.items()))}), each a Pod and an EndpointSlice "
          f"watch event ==")
    print(f"fed at {achieved:,.0f} events/s (late by > 10 ms: {sum(x > 0.01 for x in lag):,}); the store took "
          f"{sinking[0] / max(1, fed_events) * 1000:.2f} ms a event (wall, in the feed thread)")
    print(f"published in {len(batches):,} batches ({len(batches) / args.seconds:.1f}/s; objects per batch median "
          f"{statistics_median([b['objects'] for b in batches]):.0f}; waited in the debounce p50 "
          f"{ads.ms(ads.percentile([b['waited'] for b in batches], 50))}; publish p50 "
          f"{ads.ms(ads.percentile([b['seconds'] for b in batches], 50))}, p99 "
          f"{ads.ms(ads.percentile([b['seconds'] for b in batches], 99))}, max "
          f"{ads.ms(max((b['seconds'] for b in batches), default=float('nan')))})")
    print("  where: " + "; ".join(f"{label} {int(calls)} calls, {wall / max(1, calls) * 1000:.1f} ms wall, "
                                  f"{cpu_ / max(1, calls) * 1000:.1f} ms CPU a call, the longest {ads.ms(longest)}"
                                  for label, (calls, wall, cpu_, longest) in tracker.timings.items())
          + f"; {server.collections.summary()}")
    def kind(batch: dict) -> str:
        return "anew" if batch["whole"] else "endpoints" if batch["endpoints_only"] else "recompiled"

    slowest = sorted(batches, key=lambda b: b["seconds"])[-3:][::-1]
    kinds = collections.Counter(kind(b) for b in batches)
    print("  the slowest publishes: " + ", ".join(
        f"{ads.ms(b['seconds'])} (at {b['at'] - began:.1f} s, {b['objects']} objects, {kind(b)})" for b in slowest)
          + f" (of all: {', '.join(f'{n:,} {k}' for k, n in sorted(kinds.items()))})"
          + f"; the client's loop late by p99 {ads.ms(matched['client_lag_p99'])}, at most "
            f"{ads.ms(matched['client_lag_max'])}; its collector {matched['client_gc']} passes, the longest "
            f"{ads.ms(matched['client_gc_max'])}")
    print(f"event -> every affected stream ACKed (its slowest stream; {affected:,} event-views, "
          f"{matched['responses']:,} EDS responses ACKed): p50 {ads.ms(matched['event_worst_p50'])}, p99 "
          f"{ads.ms(matched['event_worst_p99'])}; per stream and event ({matched['pairs']:,}): p50 "
          f"{ads.ms(matched['p50'])}, p90 {ads.ms(matched['p90'])}, p99 {ads.ms(matched['p99'])}, max "
          f"{ads.ms(matched['max'])}"
          + (f"; MISSING {matched['missing']:,} stream-events" if matched["missing"] else "")
          + (f"; {unpublished} events never published" if unpublished else ""))
    per_event = server_cpu / max(1, fed_events)
    print(f"server CPU: {server_cpu:.2f} s = {per_event * 1000:.2f} ms per event ({server_cpu / args.seconds * 100:.0f} % "
          f"of a core; event loop {cpu.get('loop', 0):.2f} s, gRPC threads {cpu.get('grpc', 0):.2f} s, the store (Sink "
          f"calls, on the feed's thread) {store:.2f} s, others (relist, compile) "
          f"{server_cpu - cpu.get('loop', 0) - cpu.get('grpc', 0) - store:.2f} s); "
          f"client process {client_cpu1 - client_cpu0:.2f} s on the same {os.cpu_count()} CPUs; "
          f"p99 < {TARGET_P99:g} s: {ads.verdict(holds)}")
    print(f"server RSS: {ads.mb(rss0)} before the step -> {ads.mb(ads.process_memory(os.getpid())['VmRSS'])} after "
          f"(the benchmark's own record of the events included, tens of bytes an event)")
    released = [row["before"] - row["after"] for row in tracker.released.since(released0)]
    if released:
        print(f"  the allocator's freed pages given back ({len(released)} times, runtime.release_freed): the resident "
              f"set fell by p50 {ads.mb(ads.percentile(released, 50))}, at most {ads.mb(max(released))}")
    if len(by_minute) > 2:  # where a longer step's growth is: Python's objects, or the allocator's pages
        print("  by minute: resident set " + " -> ".join(ads.mb(rss) for rss, _, _, _ in by_minute) + "; Python's "
              "allocated blocks (none of them the benchmark's record, which is kept in arrays) "
              + " -> ".join(f"{blocks / 1e6:,.2f} M" for _, blocks, _, _ in by_minute))
        print("  by minute: the C heap in use " + " -> ".join(f"{used / 2 ** 20:,.0f}" for _, _, (used, _), _ in by_minute)
              + " MB; freed but kept by the allocator "
              + " -> ".join(f"{kept / 2 ** 20:,.0f}" for _, _, (_, kept), _ in by_minute) + " MB")
        for name in by_minute[0][3]:
            entries = [memos[name] for _, _, _, memos in by_minute]
            if entries[0] != entries[-1]:
                print(f"  by minute: the compiler's memo of {name}, entries " + " -> ".join(f"{n:,}" for n in entries))
    tracker.timings.clear()
    return {"rate": rate, "p99": matched["event_worst_p99"], "missing": matched["missing"] + unpublished, "holds": holds,
            "cpu_per_event": per_event}


if __name__ == "__main__":
    sys.exit(main())
