"""Where configuration comes from: a Git repository (local or remote) or a plain directory.

Both produce the same compiler.snapshot.Snapshot. ``open_source`` picks the
right one from what the user typed.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import Source, SourceError
from .directory import DirectorySource
from .git import GitCredentials, LocalGitSource, RemoteGitSource

__all__ = ["Source", "SourceError", "DirectorySource", "LocalGitSource", "RemoteGitSource",
           "GitCredentials", "open_source", "is_remote"]

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")


def is_remote(location: str) -> bool:
    return bool(_URL.match(location) or _SCP_LIKE.match(location))


def open_source(location: str, state_dir: Path | None = None,
                credentials: GitCredentials | None = None) -> Source:
    """A Source for a Git URL, a local Git repository or a directory."""
    if is_remote(location):
        if state_dir is None:
            raise SourceError(f"{location}: a remote Git source needs a state directory to clone into "
                              "(--state-dir)")
        return RemoteGitSource(location, state_dir, credentials or GitCredentials())
    path = Path(location)
    if not path.exists():
        raise SourceError(f"{location}: no such file or directory")
    if not path.is_dir():
        raise SourceError(f"{location}: not a directory or Git repository")
    if LocalGitSource.is_repository(path):
        return LocalGitSource(path)
    return DirectorySource(path)
