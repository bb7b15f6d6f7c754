"""``galleon bootstrap``: the Envoy bootstrap that connects a proxy to ``galleon serve``.

Built as Envoy's own Bootstrap message, so a misspelt field cannot slip through,
then printed as YAML (proto3 JSON names), which Envoy reads with ``-c``.
``--grpc`` gives gRPC's own JSON bootstrap instead, for a proxyless gRPC client.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, grpc_service_pb2, protocol_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from compiler.locality import Locality
from compiler.protos import SDS_CLUSTER, pack, sds_secret
from compiler.proxyless import CERTIFICATE_PROVIDER
from compiler.view import ANY_ADDRESS, parse_node_id

from . import defaults
from .defaults import split_address
from .ads.views import CLUSTER_ID, GENERATOR, GRPC_GENERATOR, LABELS, LISTEN_ADDRESS, NETWORK

XDS_CLUSTER = "xds-grpc"
# Where Istio's agent serves workload certificates (SDS) inside a pod.
DEFAULT_SDS_SOCKET = defaults.SDS_SOCKET
# Where Istio's agent writes a proxyless gRPC client's certificates (OUTPUT_CERTS in its injection
# template), and how often gRPC's file watcher rereads them (Istio's value).
DEFAULT_GRPC_CERTIFICATE_DIR = defaults.GRPC_CERTIFICATE_DIR
GRPC_CERTIFICATE_REFRESH = "900s"


@dataclass
class BootstrapOptions:
    cluster: str
    node_id: str
    ads: str = "127.0.0.1:15010"
    labels: dict[str, str] = field(default_factory=dict)
    locality: str | None = None
    network: str | None = None
    admin: str = "127.0.0.1:15000"
    listen_address: str = ANY_ADDRESS
    delta: bool = False
    sds_socket: str = DEFAULT_SDS_SOCKET
    xds_tls: XdsTls | None = None  # how the proxy reaches a galleon serve that serves TLS


@dataclass
class XdsTls:
    """The client side of a TLS (or mutual TLS) ADS connection: the roots that sign the server's
    certificate, and the proxy's own certificate and key, from files (``ca``, ``cert``, ``key``) or,
    for Envoy, from the SDS of Istio's agent (``sds``: its ``default`` certificate and ``ROOTCA``)."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    sds: bool = False

    def check(self) -> None:
        if self.sds and (self.ca or self.cert or self.key):
            raise ValueError("--xds-sds takes the certificates from SDS: give it without --xds-ca, --xds-cert, --xds-key")
        if not self.sds and not self.ca:
            raise ValueError("TLS to galleon serve needs --xds-ca (the roots that sign its certificate) or --xds-sds")
        if bool(self.cert) != bool(self.key):
            raise ValueError("--xds-cert and --xds-key go together")


def _socket(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _upstream_cluster(name: str, address: address_pb2.Address, dns: bool) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STRICT_DNS if dns else cluster_pb2.Cluster.STATIC)
    cluster.connect_timeout.seconds = 1
    # xDS and SDS are gRPC: the cluster must speak HTTP/2.
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(
        pack(options))
    cluster.load_assignment.cluster_name = name
    cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.CopyFrom(address)
    return cluster


def build_bootstrap(o: BootstrapOptions) -> bootstrap_pb2.Bootstrap:
    parse_node_id(o.node_id)  # a ViewError names what is wrong with it
    if not _is_ip(o.listen_address):
        raise ValueError(f"--listen-address {o.listen_address!r} is not an IP address")
    ads_host, ads_port = split_address(o.ads, "--ads")
    admin_host, admin_port = split_address(o.admin, "--admin")
    boot = bootstrap_pb2.Bootstrap()
    node = boot.node
    node.id, node.cluster = o.node_id, o.cluster
    node.metadata.fields[CLUSTER_ID].string_value = o.cluster
    if o.network:
        node.metadata.fields[NETWORK].string_value = o.network
    if o.labels:
        labels = node.metadata.fields[LABELS].struct_value
        for key, value in sorted(o.labels.items()):
            labels.fields[key].string_value = value
    if o.listen_address != ANY_ADDRESS:
        node.metadata.fields[LISTEN_ADDRESS].string_value = o.listen_address
    if o.locality:
        locality = Locality.parse(o.locality)
        node.locality.region, node.locality.zone, node.locality.sub_zone = (
            locality.region, locality.zone, locality.subzone)

    ads = boot.dynamic_resources.ads_config
    ads.api_type = (config_source_pb2.ApiConfigSource.DELTA_GRPC if o.delta
                    else config_source_pb2.ApiConfigSource.GRPC)
    ads.transport_api_version = config_source_pb2.V3
    ads.set_node_on_first_message_only = True  # Envoy's node message is ~60 KB
    ads.grpc_services.append(grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=XDS_CLUSTER)))
    for source in (boot.dynamic_resources.cds_config, boot.dynamic_resources.lds_config):
        source.ads.SetInParent()
        source.resource_api_version = config_source_pb2.V3

    xds = _upstream_cluster(XDS_CLUSTER, _socket(ads_host, ads_port), dns=not _is_ip(ads_host))
    if o.xds_tls is not None:
        o.xds_tls.check()
        xds.transport_socket.name = "envoy.transport_sockets.tls"
        xds.transport_socket.typed_config.CopyFrom(pack(_xds_tls_context(o.xds_tls, ads_host)))
    boot.static_resources.clusters.append(xds)
    boot.static_resources.clusters.append(_upstream_cluster(
        SDS_CLUSTER, address_pb2.Address(pipe=address_pb2.Pipe(path=o.sds_socket)), dns=False))
    boot.admin.address.CopyFrom(_socket(admin_host, admin_port))
    return boot


def _xds_tls_context(t: XdsTls, host: str) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext(sni="" if _is_ip(host) else host)
    common = context.common_tls_context
    common.alpn_protocols.append("h2")
    if t.sds:
        common.tls_certificate_sds_secret_configs.append(sds_secret("default"))
        common.validation_context_sds_secret_config.CopyFrom(sds_secret("ROOTCA"))
        return context
    common.validation_context.trusted_ca.filename = str(t.ca)
    if t.cert:
        certificate = common.tls_certificates.add()
        certificate.certificate_chain.filename, certificate.private_key.filename = str(t.cert), str(t.key)
    return context


def bootstrap_yaml(o: BootstrapOptions) -> str:
    data = json.loads(json_format.MessageToJson(build_bootstrap(o)))  # plain dicts, which yaml can write
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def grpc_bootstrap(o: BootstrapOptions, certificate_dir: str = DEFAULT_GRPC_CERTIFICATE_DIR) -> dict:
    """gRPC's xDS bootstrap (what ``GRPC_XDS_BOOTSTRAP`` names, or ``GRPC_XDS_BOOTSTRAP_CONFIG``
    holds) for a proxyless client of ``galleon serve``, as Istio's agent writes it.

    The node is the one ``build_bootstrap`` gives an Envoy, plus ``GENERATOR: grpc``, which asks for
    the proxyless view (compiler/proxyless.py). gRPC speaks state of the world only, so ``delta``
    is refused; admin, listen address and SDS socket mean nothing to it and are left out. Its
    certificates come from the ``default`` file-watcher provider declared here, which clusters
    with Istio mTLS name (gRPC NACKs a cluster naming a provider its bootstrap lacks); gRPC reads
    the files only on channels with xDS credentials.
    """
    parse_node_id(o.node_id)  # a ViewError names what is wrong with it
    if not _is_ip(o.listen_address):
        raise ValueError(f"--listen-address {o.listen_address!r} is not an IP address")
    split_address(o.ads, "--ads")
    if o.delta:
        raise ValueError("gRPC's xDS client speaks state of the world only: --delta does not apply to it")
    metadata: dict = {CLUSTER_ID: o.cluster, GENERATOR: GRPC_GENERATOR}
    if o.network:
        metadata[NETWORK] = o.network
    if o.labels:
        metadata[LABELS] = dict(sorted(o.labels.items()))
    node: dict = {"id": o.node_id, "cluster": o.cluster, "metadata": metadata}
    if o.locality:
        locality = Locality.parse(o.locality)
        node["locality"] = {key: value for key, value in (("region", locality.region), ("zone", locality.zone),
                                                          ("sub_zone", locality.subzone)) if value}
    directory = certificate_dir.rstrip("/") or "/"
    credentials: dict = {"type": "insecure"}
    if o.xds_tls is not None:
        o.xds_tls.check()
        if o.xds_tls.sds:
            raise ValueError("gRPC reads no SDS: give --xds-ca (and --xds-cert, --xds-key) files")
        # gRPC's TLS channel credentials in an xDS bootstrap (gRFC A65), files watched for rotation
        credentials = {"type": "tls", "config": {"ca_certificate_file": o.xds_tls.ca,
                                                 "refresh_interval": GRPC_CERTIFICATE_REFRESH}}
        if o.xds_tls.cert:
            credentials["config"].update(certificate_file=o.xds_tls.cert, private_key_file=o.xds_tls.key)
    return {
        "xds_servers": [{
            "server_uri": o.ads,
            "channel_creds": [credentials],
            "server_features": ["xds_v3"],
        }],
        "node": node,
        "certificate_providers": {
            CERTIFICATE_PROVIDER: {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": f"{directory}/cert-chain.pem",
                    "private_key_file": f"{directory}/key.pem",
                    "ca_certificate_file": f"{directory}/root-cert.pem",
                    "refresh_interval": GRPC_CERTIFICATE_REFRESH,
                },
            },
        },
    }


def grpc_bootstrap_json(o: BootstrapOptions, certificate_dir: str = DEFAULT_GRPC_CERTIFICATE_DIR) -> str:
    """``grpc_bootstrap`` as the JSON text gRPC reads."""
    return json.dumps(grpc_bootstrap(o, certificate_dir), indent=2) + "\n"
