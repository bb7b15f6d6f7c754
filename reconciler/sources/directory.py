"""A plain directory of YAML files; its revision is a hash of paths and contents."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from compiler.snapshot import Snapshot

from .base import Source, SourceError, is_config_file


class DirectorySource(Source):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(root)

    def check_rev(self, rev: str | None) -> None:
        if rev not in (None, "HEAD"):
            raise SourceError(f"{self.location}: --rev {rev} needs a Git repository; "
                              "a plain directory has only its working files")

    def snapshot(self, rev: str | None = None) -> Snapshot:
        self.check_rev(rev)
        files = self.read_files()
        digest = hashlib.sha256()
        for path, data in sorted(files.items()):
            digest.update(path.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
        return Snapshot(f"sha256:{digest.hexdigest()[:40]}", files, self.location)

    def read_files(self) -> dict[str, bytes]:
        root = self.root.resolve()
        files: dict[str, bytes] = {}
        for folder, dirnames, filenames in os.walk(root, onerror=self._walk_error):
            here = Path(folder)
            for name in list(dirnames):
                if name.startswith("."):
                    dirnames.remove(name)
                elif (here / name).is_symlink():
                    self._check_link(root, here / name)
                    dirnames.remove(name)  # a link inside the tree leads to files read anyway
            for name in filenames:
                if not is_config_file(name):
                    continue
                path = here / name
                if path.is_symlink():
                    self._check_link(root, path)
                relative = path.relative_to(root).as_posix()
                if not _is_utf8(relative):
                    raise SourceError(f"{os.fsencode(path)!r}: the file name is not valid UTF-8 text; "
                                      "rename it")
                files[relative] = read_regular_file(path)
        return files

    def _check_link(self, root: Path, path: Path) -> None:
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(root):
            raise SourceError(f"{path}: symbolic link to {os.readlink(path)} points outside {self.location} "
                              "(not followed); copy the file into the repository instead")
        if not target.exists():
            raise SourceError(f"{path}: symbolic link to {os.readlink(path)} is broken")

    def _walk_error(self, exc: OSError) -> None:
        raise SourceError(f"{exc.filename}: cannot read: {exc.strerror}")


def read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file. A FIFO or a device named *.yaml would block the read, or never end:
    it is opened without blocking and refused when it is not a regular file (checked on the open file,
    so it cannot be swapped for one in between)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"{path}: not a regular file (a FIFO, socket or device); remove it, or rename it "
                              "so it does not end in .yaml/.yml")
        try:
            return file.read()
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror}") from None


def _is_utf8(name: str) -> bool:
    # os.walk hands undecodable bytes over as lone surrogates
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
