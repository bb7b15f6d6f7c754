"""Files named on the command line, and standard input (``-``), as ``istioctl analyze a.yaml b.yaml``
takes them. Each file keeps the name it was given by, so findings name it as the user wrote it."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import BinaryIO

from compiler.snapshot import Snapshot

from .base import Source, SourceError

STDIN = "-"
STDIN_NAME = "<stdin>"  # how findings name what standard input held


class FilesSource(Source):
    def __init__(self, names: list[str], stdin: BinaryIO | None = None):
        if not names:
            raise SourceError("no file to read")
        if names.count(STDIN) > 1:
            raise SourceError("standard input (-) is named more than once")
        self.names = list(dict.fromkeys(names))  # each file once, in the order given
        self.location = " ".join(self.names)
        self._stdin = stdin
        self._read: dict[str, bytes] | None = None

    def check_rev(self, rev: str | None) -> None:
        if rev not in (None, "HEAD"):
            raise SourceError(f"--rev {rev} needs a Git repository; files named on the command line have no "
                              "revisions")

    def snapshot(self, rev: str | None = None) -> Snapshot:
        self.check_rev(rev)
        if self._read is None:  # standard input can be read once: the files are read once
            self._read = {self._name(name): self._bytes(name) for name in self.names}
        digest = hashlib.sha256()
        for name, data in sorted(self._read.items()):
            digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
        return Snapshot(f"sha256:{digest.hexdigest()[:40]}", self._read, self.location)

    @staticmethod
    def _name(name: str) -> str:
        return STDIN_NAME if name == STDIN else name

    def _bytes(self, name: str) -> bytes:
        if name == STDIN:
            data = (self._stdin or sys.stdin.buffer).read()
            if not data.strip():  # what a failed command before the | leaves
                raise SourceError("standard input (-) is empty: expected YAML documents (did the command "
                                  "before the | fail?)")
            return data
        path = Path(name)
        if path.is_dir():
            raise SourceError(f"{name}: a directory; give one directory or repository alone, or files")
        try:
            # Read as named, pipes too: `galleon validate <(kubectl get vs -o yaml)` names one.
            return path.read_bytes()
        except OSError as exc:
            raise SourceError(f"{name}: cannot read: {exc.strerror or exc}") from None
