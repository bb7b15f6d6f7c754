"""Where a generated resource came from, carried in its metadata under ``galleon``.

Builders name the source objects (the first is the main one) of a resource and of its parts (a
route, a virtual host, a locality group): kind/namespace/name, file and line. A resource's own
metadata then gets the revision too, stamped by xds.py once its content is known: the revision
compiled, or, in what ``galleon serve`` sends, the revision at which the resource last changed.
"""
from __future__ import annotations

from envoy.config.core.v3 import base_pb2

from . import cache, wire
from .parse import SourceObject

FILTER = "galleon"


def set_sources(target: base_pb2.Metadata, *sources: SourceObject) -> None:
    """Name ``sources`` in ``target`` (a Metadata field of the message being built)."""
    where = tuple((s.ref, s.file, s.line) for s in sources)
    cache.merge(target, cache.PROVENANCE, where, lambda: metadata(where))


def metadata(where: tuple[tuple[str, str, int], ...]) -> base_pb2.Metadata:
    """Metadata naming each (ref, file, line), the first as the main source."""
    md = base_pb2.Metadata()
    fields = md.filter_metadata[FILTER]
    ref, file, line = where[0]
    fields.update({"source": ref, "file": file, "line": line})
    if len(where) > 1:
        fields.update({"also": [f"{ref} ({file}:{line})" for ref, file, line in where[1:]]})
    return md


def stamp(metadata_field: int, provenance: bytes, revision: str) -> bytes:
    """The metadata field to append to a resource serialized without its own: ``provenance`` (its
    sources, serialized) naming ``revision`` too."""
    def stamped() -> bytes:
        md = base_pb2.Metadata.FromString(provenance)
        md.filter_metadata[FILTER].fields["revision"].string_value = revision
        return wire.field(metadata_field, md.SerializeToString(deterministic=True))
    return cache.STAMPS.get((metadata_field, provenance, revision), stamped)
