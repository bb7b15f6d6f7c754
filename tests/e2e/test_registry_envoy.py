"""The live registry end to end: what runs in the clusters reaches a real Envoy and gRPC's own xDS
client, endpoint changes by EDS alone.

``galleon serve`` runs as its own process on a directory (the mesh's Clusters, networks, Services
and policies) with ``--registry dir:`` a folder of manifests (tests/e2e/registry.py): the pods,
their EndpointSlices and Nodes of three clusters, cluster-a and cluster-b on network-1, cluster-c on
network-2. One sidecar Envoy in cluster-a (bootstrapped by ``galleon bootstrap``, listeners on
loopback) and one proxyless gRPC client are attached; backends are local servers, each pod's
EndpointSlice giving its port. The source is never changed: everything that moves is a registry
file, and every test waits for what it expects with a deadline, then asserts.

The services, each its own so the tests do not disturb each other:

- ``web``: pods in both clusters of network-1, localities from a pod label, a Node, or the Cluster;
  outlierDetection gives Istio's failover priorities, so cluster-a's own zone takes every request.
- ``far``: a pod in each network; network-2's is reached through its east-west gateway.
- ``churn``: pods added, made not ready and deleted, each timed from the file write to Envoy.
- ``ver``: subsets by the pods' ``version`` label, a route to v2, a pod relabelled v1 to v2.
- ``jobs`` (namespace ``batch``, in cluster-a and cluster-b): cluster-a's namespace folder removed.
- ``echo``: a Service only the registry holds, called by grpcio through ``xds:///``.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.e2e.backends import Backend
from tests.e2e.daemon import GALLEON, Galleon
from tests.e2e.envoy import Envoy, answers, wait_for
from tests.ports import free_port
from tests.e2e.registry import RegistryDir
from tests.e2e.sds import SdsServer
from tests.e2e.test_grpc_xds import Backend as GrpcBackend
from tests.e2e.test_grpc_xds import Client

pytestmark = pytest.mark.e2e

A, B, C = "cluster-a", "cluster-b", "cluster-c"
LOCALITY = {A: "us-east/us-east-1a", B: "us-west/us-west-1a", C: "eu-west/eu-west-1a"}
GATEWAY_C = ("198.51.100.10", 15443)  # network-2's east-west gateway
SIDECAR = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
PROXYLESS = "sidecar~127.0.0.1~grpc-client.default~default.svc.cluster.local"
MTLS = {"security.istio.io/tlsMode": "istio"}  # a sidecar terminates Istio mTLS: reachable across networks
# From a registry file written to Envoy applying it: the file watcher's batching (50 ms), the
# daemon's quiet time per object (100 ms), EDS. About 150 ms measured, with both cores busy too.
DEADLINE = 1.0


def fqdn(name: str, namespace: str = "default") -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def mesh_files(port: int) -> dict[str, str]:
    def obj(api: str, kind: str, name: str, spec: dict, namespace: str = "default") -> dict:
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}

    def service(name: str, namespace: str = "default") -> dict:
        return obj("v1", "Service", name, {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
                   namespace)

    galleon, istio = "galleon.io/v1alpha1", "networking.istio.io/v1"
    plain = {"mode": "DISABLE"}  # the backends speak plain HTTP
    mesh = [
        obj(galleon, "MeshNetworks", "mesh-networks", {"networks": {
            "network-1": {"endpoints": [{"fromRegistry": A}, {"fromRegistry": B}],
                          "gateways": [{"address": "192.0.2.10", "port": 15443}]},
            "network-2": {"endpoints": [{"fromRegistry": C}],
                          "gateways": [{"address": GATEWAY_C[0], "port": GATEWAY_C[1]}]}}}, "istio-system"),
        *(obj(galleon, "Cluster", cluster, {"network": "network-2" if cluster == C else "network-1",
                                            "locality": LOCALITY[cluster]}, "istio-system") for cluster in (A, B, C)),
    ]
    services = [
        service("web"), service("far"), service("churn"), service("ver"), service("jobs", "batch"),
        obj(istio, "DestinationRule", "web", {"host": fqdn("web"), "trafficPolicy": {
            "tls": plain,
            # Istio applies locality failover only with outlier detection
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s"}}}),
        obj(istio, "DestinationRule", "ver", {
            "host": fqdn("ver"), "trafficPolicy": {"tls": plain},
            "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]}),
        obj(istio, "VirtualService", "ver", {
            "hosts": [fqdn("ver")], "http": [{"route": [{"destination": {"host": fqdn("ver"), "subset": "v2"}}]}]}),
    ]
    return {"mesh.yaml": yaml.safe_dump_all(mesh, sort_keys=False),
            "services.yaml": yaml.safe_dump_all(services, sort_keys=False)}


class World:
    """The repository, the registry, the backends, galleon serve and the sidecar Envoy."""

    def __init__(self, root: Path, sds: SdsServer) -> None:
        self.root, self.sds = root, sds
        self.port, self.grpc_port = free_port(), free_port()
        self.repo = root / "repo"
        self.repo.mkdir()
        for name, text in mesh_files(self.port).items():
            (self.repo / name).write_text(text)
        self.registry = RegistryDir(root / "registry")
        self.backends: dict[str, Backend] = {}
        self.grpc_backends: dict[str, GrpcBackend] = {}
        self._write_registry()
        self.galleon = Galleon(self.repo, A, "--registry", f"dir:{self.registry.root}")
        self.envoy: Envoy | None = None

    def backend(self, pod: str, address: str = "127.0.0.1") -> int:
        """A local HTTP server standing for a pod (answering with the pod's name); its port."""
        self.backends[pod] = Backend(pod, address)
        return self.backends[pod].port

    def _write_registry(self) -> None:
        r = self.registry
        r.node(A, "node-a2", "us-east", "us-east-1b")
        r.pod(A, "web-a1", "default", "web", "127.0.0.11", self.backend("web-a1", "127.0.0.11"))
        r.pod(A, "web-a2", "default", "web", "127.0.0.12", self.backend("web-a2", "127.0.0.12"), node="node-a2")
        r.pod(B, "web-b1", "default", "web", "127.0.0.21", self.backend("web-b1", "127.0.0.21"),
              labels={"topology.istio.io/locality": "us-west.us-west-1c"})
        r.pod(B, "web-b2", "default", "web", "127.0.0.22", self.backend("web-b2", "127.0.0.22"))

        r.pod(A, "far-a1", "default", "far", "10.10.0.5", 8080, labels=MTLS)
        r.pod(C, "far-c1", "default", "far", "10.20.0.5", 8080, labels=MTLS)
        r.pod(C, "far-c2", "default", "far", "10.20.0.6", 8080, labels=MTLS)

        for pod, address in (("churn-1", "10.10.0.41"), ("churn-2", "10.10.0.42")):
            r.pod(A, pod, "default", "churn", address, 8080, service_account="churn")

        r.pod(A, "ver-1", "default", "ver", "127.0.0.51", self.backend("ver-1", "127.0.0.51"), labels={"version": "v1"})
        r.pod(A, "ver-2", "default", "ver", "127.0.0.52", self.backend("ver-2", "127.0.0.52"), labels={"version": "v2"})

        r.pod(A, "jobs-a1", "batch", "jobs", "10.10.1.5", 8080)
        r.pod(B, "jobs-b1", "batch", "jobs", "10.11.1.5", 8080)

        # echo: its Service is in the registry alone, not in the repository
        self.grpc_backends["echo-1"] = GrpcBackend("echo-1")
        r.service(A, "echo", "default", {"grpc": self.grpc_port})
        r.pod(A, "echo-1", "default", "echo", "127.0.0.1", self.grpc_backends["echo-1"].port, port_name="grpc")

    def start(self) -> "World":
        self.galleon.start()
        boot = subprocess.run(
            [*GALLEON, "bootstrap", "--cluster", A, "--node-id", SIDECAR, "--ads", self.galleon.ads,
             "--admin", "127.0.0.1:0", "--listen-address", "127.0.0.1", "--locality", LOCALITY[A],
             "--sds-socket", str(self.sds.socket)],
            check=True, capture_output=True, text=True).stdout
        self.envoy = Envoy(boot, self.root).start()
        self.envoy.wait_live(15)
        wait_for(lambda: answers(self.port, fqdn("web"), 1) == Counter({"web-a1": 1}), 10,
                 lambda: f"no route to web: {answers(self.port, fqdn('web'), 1)}\n{self.galleon.log()}")
        return self

    def hosts(self, name: str, subset: str = "") -> dict[tuple[str, int], dict]:
        """The hosts Envoy holds for a service's cluster (on the HTTP port), by (address, port): their
        weight, priority and locality, from the admin's /clusters."""
        cluster = f"outbound|{self.port}|{subset}|{name if '.' in name else fqdn(name)}"
        data = json.loads(self.envoy.get("/clusters?format=json"))
        for status in data.get("cluster_statuses", []):
            if status["name"] == cluster:
                found = {}
                for host in status.get("host_statuses", []):
                    address = host["address"]["socket_address"]
                    locality = host.get("locality", {})
                    found[(address["address"], address["port_value"])] = {
                        "weight": host.get("weight", 1), "priority": host.get("priority", 0),
                        "locality": "/".join(filter(None, (locality.get("region"), locality.get("zone"))))}
                return found
        raise AssertionError(f"Envoy has no cluster {cluster}")

    def addresses(self, name: str, subset: str = "") -> set[str]:
        return {address for address, _ in self.hosts(name, subset=subset)}

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.galleon.process is not None:
            self.galleon.stop()
        for backend in self.backends.values():
            backend.stop()
        for grpc_backend in self.grpc_backends.values():
            grpc_backend.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with SdsServer() as sds:
        w = World(tmp_path_factory.mktemp("registry"), sds)
        try:
            yield w.start()
        finally:
            w.close()


def timed(change, applied, what: str, world: World) -> float:
    """Make ``change`` and wait until ``applied()``; the seconds from the one to the other (printed:
    shown with -s or -rP)."""
    started = time.monotonic()
    change()
    wait_for(applied, 10, lambda: f"{what}: not applied in 10 s\n{world.galleon.log()}", interval=0.01)
    took = time.monotonic() - started
    print(f"{what}: applied by Envoy {took * 1000:.0f} ms after the file write")
    return took


def xds_stats(envoy: Envoy) -> dict[str, int]:
    """Envoy's counts of accepted CDS, LDS and RDS updates."""
    return {name: value for name, value in envoy.stats().items()
            if name in ("cluster_manager.cds.update_success", "listener_manager.lds.update_success")
            or (".rds." in name and name.endswith(".update_success"))}


def pushes(galleon: Galleon) -> dict[str, float]:
    """galleon_xds_pushes by type, from the daemon's /metrics."""
    found = re.findall(r'^galleon_xds_pushes_total\{type="(\w+)"\} (\S+)$', galleon.get("/metrics")[1], re.M)
    return {kind: float(value) for kind, value in found}


def test_the_proxys_own_cluster_and_zone_take_the_traffic(world):
    hosts = world.hosts("web")
    port = {pod: backend.port for pod, backend in world.backends.items()}
    # Each endpoint's locality: the Cluster's (web-a1, web-b2), a Node's (web-a2), a pod label (web-b1);
    # Istio's failover priorities from the proxy's us-east/us-east-1a: same zone, same region, the rest.
    assert {address: (h["locality"], h["priority"]) for (address, _), h in hosts.items()} == {
        "127.0.0.11": ("us-east/us-east-1a", 0), "127.0.0.12": ("us-east/us-east-1b", 1),
        "127.0.0.21": ("us-west/us-west-1c", 2), "127.0.0.22": ("us-west/us-west-1a", 2)}, hosts
    assert set(hosts) == {(f"127.0.0.{n}", port[pod]) for n, pod in
                          ((11, "web-a1"), (12, "web-a2"), (21, "web-b1"), (22, "web-b2"))}
    assert answers(world.port, fqdn("web"), 200) == Counter({"web-a1": 200})
    assert [world.backends[pod].hits for pod in ("web-a2", "web-b1", "web-b2")] == [0, 0, 0]


def test_another_networks_pods_are_reached_through_its_gateway(world):
    hosts = world.hosts("far")
    # cluster-a's pod directly; cluster-c's two behind network-2's gateway, which weighs for both
    assert {key: h["weight"] for key, h in hosts.items()} == {("10.10.0.5", 8080): 1, GATEWAY_C: 2}, hosts


def test_pods_added_made_not_ready_and_deleted_reach_envoy_by_eds_alone(world):
    r, envoy, galleon = world.registry, world.envoy, world.galleon
    served = galleon.json("/debug/configz")["served_revision"]
    wait_for(lambda: world.addresses("churn") == {"10.10.0.41", "10.10.0.42"}, 5, lambda: str(world.hosts("churn")))
    stats, sent = xds_stats(envoy), pushes(galleon)
    eds = f"cluster.outbound|{world.port}||{fqdn('churn')}.update_success"
    eds_before = envoy.stats()[eds]
    assert stats and sent.get("endpoints"), (stats, sent)

    took = [
        timed(lambda: r.pod(A, "churn-3", "default", "churn", "10.10.0.43", 8080, service_account="churn"),
              lambda: world.addresses("churn") == {"10.10.0.41", "10.10.0.42", "10.10.0.43"}, "pod added", world),
        timed(lambda: r.pod(A, "churn-2", "default", "churn", "10.10.0.42", 8080, service_account="churn",
                            ready=False),
              lambda: world.addresses("churn") == {"10.10.0.41", "10.10.0.43"}, "pod not ready", world),
        timed(lambda: r.remove_pod(A, "churn-3", "default"),
              lambda: world.addresses("churn") == {"10.10.0.41"}, "pod deleted", world),
    ]
    assert max(took) < DEADLINE, took

    # EDS alone: Envoy accepted new assignments and no cluster, listener or route configuration; the
    # daemon sent none, and served the same revision of the source throughout.
    assert envoy.stats()[eds] >= eds_before + 3
    assert xds_stats(envoy) == stats
    after = pushes(galleon)
    assert {t: after.get(t) for t in ("clusters", "listeners", "routes")} == \
        {t: sent.get(t) for t in ("clusters", "listeners", "routes")}, (sent, after)
    assert after["endpoints"] >= sent["endpoints"] + 3
    assert galleon.json("/debug/configz")["served_revision"] == served
    # the pod made not ready is still listed, and said to be not ready (sent to no proxy)
    a = next(c for c in galleon.json("/debug/registryz")["clusters"] if c["cluster"] == A)
    assert a["not_ready"] == 1 and a["endpoints"] > a["not_ready"], a


def test_a_subset_route_follows_the_pods_labels(world):
    r = world.registry
    assert answers(world.port, fqdn("ver"), 20) == Counter({"ver-2": 20})
    took = timed(lambda: r.pod(A, "ver-1", "default", "ver", "127.0.0.51", world.backends["ver-1"].port,
                               labels={"version": "v2"}),
                 lambda: world.addresses("ver", "v2") == {"127.0.0.51", "127.0.0.52"}, "pod relabelled", world)
    assert took < DEADLINE
    assert world.addresses("ver", "v1") == set()
    seen = answers(world.port, fqdn("ver"), 100)
    assert set(seen) == {"ver-1", "ver-2"}, seen


def test_a_registry_and_its_clusters_are_reported_synced(world):
    galleon = world.galleon

    def reported() -> dict[str, dict] | None:
        status = galleon.json("/debug/registryz")
        clusters = {c["cluster"]: c for c in status["clusters"]}
        settled = all(c["synced"] and not c["stale"]
                      and {k: c[k] for k in world.registry.counts(name)} == world.registry.counts(name)
                      for name, c in clusters.items())
        return clusters if settled and set(clusters) == {A, B, C} else None

    clusters = wait_for(reported, 5, lambda: galleon.get("/debug/registryz")[1])
    assert galleon.json("/debug/registryz")["registries"] == [f"dir:{world.registry.root}"]
    assert clusters[A]["services"] == 1 and clusters[C]["endpoints"] == 2, clusters  # echo; far-c1, far-c2

    status, ready = galleon.get("/readyz")
    assert status == 200 and all(f"registry {c}: synced\n" in ready for c in (A, B, C)), ready

    shown = subprocess.run([*GALLEON, "status", "--server", galleon.ads], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for name, c in clusters.items():
        assert (f"registry {name}: synced, lists {c['services']} Services, {c['pods']} pods, {c['endpoints']} endpoints "
                f"({c['not_ready']} not ready),") in shown.stdout, \
            shown.stdout


def test_a_namespace_folder_removed_removes_its_endpoints(world):
    import threading

    import grpc

    from reconciler.api import reconciler_pb2 as pb
    from reconciler.api import reconciler_pb2_grpc as pb_grpc
    assert world.addresses(fqdn("jobs", "batch")) == {"10.10.1.5", "10.11.1.5"}
    # galleon status --watch sees what the registry changed, not only what a revision did
    channel = grpc.insecure_channel(world.galleon.ads)
    stream = pb_grpc.ReconcilerStub(channel).WatchStatus(pb.WatchStatusRequest())
    watched: list = []

    def read():
        try:
            watched.extend(stream)
        except grpc.RpcError:
            pass  # cancelled, below
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: watched, 5)
    endpoints_before = {c.cluster: c.endpoints for c in watched[-1].registry}[A]
    world.registry.remove_namespace(A, "batch")
    # cluster-a runs nothing in batch any more; cluster-b's pod is still there
    wait_for(lambda: world.addresses(fqdn("jobs", "batch")) == {"10.11.1.5"}, 5,
             lambda: f"{world.hosts(fqdn('jobs', 'batch'))}\n{world.galleon.log()}")

    def settled():
        a = next(c for c in world.galleon.json("/debug/registryz")["clusters"] if c["cluster"] == A)
        return a["synced"] and not a["stale"] and a["pods"] == world.registry.counts(A)["pods"]
    wait_for(settled, 5, lambda: world.galleon.get("/debug/registryz")[1])
    try:
        wait_for(lambda: {c.cluster: c.endpoints for c in watched[-1].registry}[A] < endpoints_before, 5,
                 lambda: [str(m.registry) for m in watched])
    finally:
        stream.cancel()
        channel.close()


def test_grpcs_xds_client_calls_a_pod_of_a_registry_service(world, tmp_path):
    bootstrap = subprocess.run(
        [*GALLEON, "bootstrap", "--grpc", "--cluster", A, "--node-id", PROXYLESS, "--ads", world.galleon.ads,
         "--locality", LOCALITY[A]], check=True, capture_output=True, text=True).stdout
    client = Client(tmp_path, bootstrap, target=f"xds:///{fqdn('echo')}:{world.grpc_port}")
    try:
        answer = client.ask({"calls": 5})
        assert answer == {"answers": ["echo-1"] * 5, "errors": []}, client.tail()
        assert world.grpc_backends["echo-1"].calls == 5

        # echo-1 replaced by echo-2: gRPC's EDS follows the registry too
        world.grpc_backends["echo-2"] = GrpcBackend("echo-2")
        world.registry.pod(A, "echo-2", "default", "echo", "127.0.0.1", world.grpc_backends["echo-2"].port,
                           port_name="grpc")
        world.registry.pod(A, "echo-1", "default", "echo", "127.0.0.1", world.grpc_backends["echo-1"].port,
                           port_name="grpc", ready=False)
        seen = client.ask({"until": "echo-2", "timeout": 10})
        assert seen["seen"], f"{seen}\n{client.tail()}"
        assert world.galleon.count("proxy rejected configuration") == 0, world.galleon.log()
    finally:
        client.close()


def test_a_registry_cluster_that_is_no_cluster_of_the_mesh_is_said(tmp_path):
    """A dir: registry's folder named for no Cluster (a typo, or the registry given one level too
    deep) has its endpoints served without a network or locality: registryz, galleon status and the
    log say so, naming the Clusters there are."""
    import shutil
    from tests.conftest import SAMPLE_REPO
    registry = tmp_path / "registry"
    shutil.copytree(SAMPLE_REPO.parent / "sample-registry", registry)
    shutil.copytree(registry / "cluster-a", registry / "cluster-q")
    with Galleon(SAMPLE_REPO, A, "--registry", f"dir:{registry}") as galleon:
        def said():
            clusters = {c["cluster"]: c for c in galleon.json("/debug/registryz")["clusters"]}
            return clusters if clusters.get("cluster-q", {}).get("not_in_mesh") else None
        clusters = wait_for(said, 10, lambda: galleon.get("/debug/registryz")[1])
        assert clusters[A]["not_in_mesh"] is None
        assert clusters["cluster-q"]["not_in_mesh"].startswith(
            "registry cluster cluster-q is no Cluster of the repository (cluster-a, cluster-b, cluster-c)")
        shown = subprocess.run([*GALLEON, "status", "--server", galleon.ads], capture_output=True, text=True,
                               timeout=30)
        assert "\n  warning: registry cluster cluster-q is no Cluster of the repository" in shown.stdout, shown.stdout
        wait_for(lambda: galleon.count("registry cluster not in the mesh") == 1, 5, galleon.log)
