"""Where configuration comes from: a Git repository (local or remote), a plain directory, or files
named on the command line (and standard input).

All produce the same compiler.snapshot.Snapshot. ``open_source`` picks the right one from what the
user typed.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from .base import Source, SourceError, SourceMissing
from .directory import DirectorySource
from .files import STDIN, FilesSource
from .git import GitCredentials, LocalGitSource, RemoteGitSource

__all__ = ["Source", "SourceError", "SourceMissing", "DirectorySource", "FilesSource", "LocalGitSource",
           "RemoteGitSource", "GitCredentials", "open_source", "open_sources", "is_remote"]

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
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceMissing(f"{location}: no such file or directory") from None
    except OSError as exc:  # a folder on the way not searchable, a link loop
        raise SourceMissing(f"{location}: cannot read: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        return FilesSource([location])
    if not os.access(path, os.R_OK | os.X_OK):
        # pygit2 could not open it either: an unreadable repository would pass for a plain directory.
        raise SourceMissing(f"{location}: cannot read: permission denied")
    if LocalGitSource.is_repository(path):
        return LocalGitSource(path)
    return DirectorySource(path)
