"""Where a generated resource came from, carried in its metadata under ``galleon``."""
from __future__ import annotations

from functools import lru_cache

from envoy.config.core.v3 import base_pb2

from .parse import SourceObject

FILTER = "galleon"


@lru_cache(maxsize=65536)
def metadata(revision: str, *sources: SourceObject) -> base_pb2.Metadata:
    """Metadata naming the source objects (first is the main one), their file and line, and the revision.

    Shared between the resources of one source: callers copy it (protobuf fields copy on
    assignment) and must never change it.
    """
    md = base_pb2.Metadata()
    fields = md.filter_metadata[FILTER]
    main = sources[0]
    fields.update({"source": main.ref, "file": main.file, "line": main.line, "revision": revision})
    if len(sources) > 1:
        fields.update({"also": [f"{s.ref} ({s.file}:{s.line})" for s in sources[1:]]})
    return md


def restamp(md: base_pb2.Metadata, revision: str) -> None:
    """Name another revision in metadata made by ``metadata`` (a copy the caller owns)."""
    md.filter_metadata[FILTER].fields["revision"].string_value = revision
