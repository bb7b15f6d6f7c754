"""Envoy building blocks every generator uses, so each is written once."""
from __future__ import annotations

from functools import lru_cache
from typing import Hashable

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

# Istio's agent serves every SDS secret (workload certificates, gateway credentials) on a local
# socket the bootstrap names "sds-grpc"; Galleon keeps that convention.
SDS_CLUSTER = "sds-grpc"


class Pieces:
    """Serialized parts of messages by what decides them, shared by every mesh and view: a part that
    many resources have alike is built once and merged into each (parsing appends, as a message's
    serialized form is its fields concatenated). Bounded: emptied when full, so a long-running
    server does not grow it without end. For a part decided by a function's own (hashable)
    arguments, ``functools.lru_cache`` on the function does the same."""

    def __init__(self, limit: int):
        self._parts: dict[Hashable, bytes] = {}
        self._limit = limit
        self.get = self._parts.get  # the look-up hot loops make once per endpoint: no call of ours

    def put(self, key: Hashable, message: Message | None) -> bytes:
        """Keep ``message`` serialized (None: nothing, b"") under ``key``; returns the bytes."""
        if len(self._parts) >= self._limit:
            self._parts.clear()
        data = self._parts[key] = b"" if message is None else message.SerializeToString(deterministic=True)
        return data


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)  # same config, same bytes: versions are content hashes
    return packed


@lru_cache(maxsize=1)
def ads() -> config_source_pb2.ConfigSource:
    """Shared: callers copy it into their messages and must not change it."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


@lru_cache(maxsize=1024)
def sds_secret(name: str) -> secret_pb2.SdsSecretConfig:
    """Shared: callers copy it into their messages and must not change it."""
    source = config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC, transport_api_version=config_source_pb2.V3,
            grpc_services=[grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER))]),
        resource_api_version=config_source_pb2.V3)
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)
