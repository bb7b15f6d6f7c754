"""Envoy building blocks every generator uses, so each is written once."""
from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

# Istio's agent serves every SDS secret (workload certificates, gateway credentials) on a local
# socket the bootstrap names "sds-grpc"; Galleon keeps that convention.
SDS_CLUSTER = "sds-grpc"


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)  # same config, same bytes: versions are content hashes
    return packed


def ads() -> config_source_pb2.ConfigSource:
    """Where a proxy gets a resource's updates: over its ADS stream."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def sds_secret(name: str) -> secret_pb2.SdsSecretConfig:
    """A secret the proxy gets from its SDS server (Istio's agent)."""
    source = config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC, transport_api_version=config_source_pb2.V3,
            grpc_services=[grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER))]),
        resource_api_version=config_source_pb2.V3)
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)
