"""Where configuration comes from: a Git repository (local or remote), a plain directory, or files
named on the command line (and standard input).

All produce the same compiler.snapshot.Snapshot. ``open_source`` picks the right one from what the
user typed.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import Source, SourceError
from .directory import DirectorySource
from .files import STDIN, FilesSource
from .git import GitCredentials, LocalGitSource, RemoteGitSource

__all__ = ["Source", "SourceError", "DirectorySource", "FilesSource", "LocalGitSource", "RemoteGitSource",
           "GitCredentials", "open_source", "open_sources", "is_remote"]

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")


def is_remote(location: str) -> bool:
    return bool(_URL.match(location) or _SCP_LIKE.match(location))


def open_sources(locations: list[str], state_dir: Path | None = None,
                 credentials: GitCredentials | None = None) -> Source:
    """One Source for what a command that reads configuration was given: a repository or directory
    alone, or any number of files and ``-``."""
    if len(locations) == 1:
        return open_source(locations[0], state_dir, credentials)
    for location in locations:
        if location != STDIN and (is_remote(location) or Path(location).is_dir()):
            raise SourceError(f"{location}: a repository or directory is read alone; give one, or only files")
    return FilesSource(locations)


def open_source(location: str, state_dir: Path | None = None,
                credentials: GitCredentials | None = None) -> Source:
    """A Source for a Git URL, a local Git repository, a directory, a file or ``-`` (standard input)."""
    if location == STDIN:
        return FilesSource([location])
    if is_remote(location):
        if state_dir is None:
            raise SourceError(f"{location}: a remote Git source needs a state directory to clone into "
                              "(--state-dir)")
        return RemoteGitSource(location, state_dir, credentials or GitCredentials())
    path = Path(location)
    if not path.exists():
        raise SourceError(f"{location}: no such file or directory")
    if not path.is_dir():
        return FilesSource([location])
    if LocalGitSource.is_repository(path):
        return LocalGitSource(path)
    return DirectorySource(path)
