"""What every source offers."""
from __future__ import annotations

from abc import ABC, abstractmethod

from compiler.errors import InputError
from compiler.snapshot import Snapshot

YAML_SUFFIXES = (".yaml", ".yml")


class SourceError(InputError):
    """The source cannot be read: a one-line message for a person, never a traceback."""


class SourceMissing(SourceError):
    """A local source path that is not there or cannot be read: it may be soon (a volume mounted
    late, a checkout put in place), so ``galleon serve`` can wait for it."""


class Source(ABC):
    location: str

    @abstractmethod
    def snapshot(self, rev: str | None = None) -> Snapshot:
        """The YAML files of revision ``rev`` (None: the default, HEAD or the working files)."""

    def check_rev(self, rev: str | None) -> None:
        """Raise SourceError when this source can never have revision ``rev`` (a directory has none but
        its working files), whatever it holds later."""

    def refresh(self) -> None:
        """Bring the local view up to date with the origin (a fetch for remotes)."""

    def head(self, rev: str | None = None) -> str | None:
        """The revision ``rev`` names, when the source can tell without reading its files (a commit
        id); None otherwise. Lets a poll that finds nothing new skip all work."""
        return None


def is_config_file(name: str) -> bool:
    return name.endswith(YAML_SUFFIXES)


def outside(parts: list[str]) -> bool:
    """Whether a normalised relative path climbs out of its root."""
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            return True
    return False
