"""Protobuf's wire encoding, written by hand where messages are assembled from serialized parts.

A message's encoding is the concatenation of its fields' encodings, in any order, and parsing a
repeated field appends: so a message can be put together from parts serialized once (compiler's
cache.py, the ADS server's responses) and reads exactly as if it had been built whole.
"""
from __future__ import annotations


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, data: bytes | str) -> bytes:
    """A length-delimited field (strings, bytes, embedded messages)."""
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def tag(number: int, length: int) -> bytes:
    """The tag and length of a length-delimited field whose ``length`` bytes follow."""
    return varint(number << 3 | 2) + varint(length)
