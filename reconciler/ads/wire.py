"""Discovery responses written as protobuf wire bytes from pieces serialized once.

A view's resources are serialized once and shared by every proxy of that view; a
response is the concatenation of those pieces plus the few fields that differ per
stream (nonce). Protobuf defines a message's encoding as the concatenation of its
fields' encodings, so this is byte for byte what ``SerializeToString`` would give.
Field numbers are those of envoy.service.discovery.v3.discovery.proto.
"""
from __future__ import annotations

from compiler.wire import field


def any_message(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any: type_url = 1, value = 2."""
    return field(1, type_url) + field(2, value)


# DiscoveryResponse: version_info = 1, resources = 2, type_url = 4, nonce = 5.
def sotw_body(version: str, resources: list[bytes], type_url: str) -> bytes:
    """Everything of a DiscoveryResponse but its nonce; ``resources`` are encoded Any messages."""
    return field(1, version) + b"".join(field(2, r) for r in resources) + field(4, type_url)


def sotw_response(body: bytes, nonce: str) -> bytes:
    return body + field(5, nonce)


# Resource: version = 1, resource = 2 (Any), name = 3, in field-number order as SerializeToString writes them.
def delta_resource(name: str, version: str, any_bytes: bytes) -> bytes:
    return field(1, version) + field(2, any_bytes) + field(3, name)


# DeltaDiscoveryResponse: system_version_info = 1, resources = 2, type_url = 4, nonce = 5,
# removed_resources = 6.
def delta_body(system_version: str, resources: list[bytes], type_url: str) -> bytes:
    """What of a DeltaDiscoveryResponse comes before its nonce; ``resources`` are encoded Resources."""
    return field(1, system_version) + b"".join(field(2, r) for r in resources) + field(4, type_url)


def delta_response(body: bytes, nonce: str, removed: list[str]) -> bytes:
    return body + field(5, nonce) + b"".join(field(6, name) for name in removed)
