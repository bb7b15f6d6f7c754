"""The unit of input for everything downstream: one revision's files."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Snapshot:
    """The YAML files of one revision.

    ``revision`` is a commit id for Git, a content hash for a directory.
    ``files`` maps repository-relative POSIX paths to their bytes.
    ``origin`` says where it came from, for messages only.
    """

    revision: str
    files: Mapping[str, bytes] = field(repr=False)
    origin: str = ""

    def __post_init__(self) -> None:
        # A dict sorted by path makes iteration order, and so every output, deterministic.
        object.__setattr__(self, "files", dict(sorted(self.files.items())))


def short_revision(revision: str) -> str:
    """A revision as people read it: 12 hex digits (after the ``sha256:`` of a directory's)."""
    prefix, sep, digest = revision.rpartition(":")
    return f"{prefix}{sep}{digest[:12]}"
