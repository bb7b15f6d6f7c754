"""Parses kept between runs: a file is parsed and checked once, then read back until it changes.

Parsing and checking YAML is most of what reading a revision costs (a 28 MB mesh: about 9 s of
parse and validation against under 1 s to read the records back), and most files are the same
from one run to the next. Each file's parse, with its objects' schema and local-analyzer
results (compiler/records.py), is stored in ``STATE_DIR/parses/SALT/`` under a hash of its path
and bytes. SALT names everything that could change a record: the record format, Galleon's
compiler sources and schemas, and the Python, PyYAML and jsonschema versions; a new version of
any starts an empty directory, and directories unused for a week are removed.

Records are written with marshal (plain data: reading one runs no code, unlike pickle's), with a
length and CRC-32 checked on reading, to a temporary file renamed into place. A record that does
not read back is a miss, never an error. The directory is created private (0700); whoever can
write to it can make Galleon believe a file holds other objects, as they could by writing to the
repository clone beside it. A full or read-only disk turns the cache off with one warning.
"""
from __future__ import annotations

import contextlib
import hashlib
import marshal
import operator
import os
import shutil
import struct
import sys
import threading
import time
import weakref
import zlib
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Callable, Mapping

import compiler
from compiler import records
from compiler.parse import FileParse, ParseResult
from compiler.snapshot import Snapshot

from .files import write_atomic

MAGIC = b"galleon parse\n"
HEADER = struct.Struct("<QI")  # payload length, CRC-32
LIMIT_BYTES = 1 << 30  # records beyond this, least recently used first, are removed
UNUSED_SALT_SECONDS = 7 * 24 * 3600
STALE_TEMPORARY_SECONDS = 3600  # a write in progress takes well under a second


@cache
def salt() -> str:
    """A hash of everything a record's content depends on besides the file itself."""
    digest = hashlib.sha256()
    for part in (f"format {records.FORMAT}", sys.version, f"marshal {marshal.version}",
                 *(f"{name} {metadata.version(name)}" for name in ("PyYAML", "jsonschema"))):
        digest.update(part.encode() + b"\0")
    package = Path(compiler.__file__).parent
    sources = [(p.relative_to(package).as_posix(), p) for p in sorted(package.rglob("*.py"))]
    schemas = sorted((e.name, e) for e in resources.files("schemas").iterdir() if e.name.endswith(".json"))
    for name, entry in [*sources, *schemas]:
        digest.update(name.encode() + b"\0" + entry.read_bytes())
    return digest.hexdigest()[:16]


def _key(file: str, data: bytes) -> str:
    return hashlib.sha256(file.encode() + b"\0" + data).hexdigest()


class ParseCache:
    """Records of parsed files in ``directory`` (STATE_DIR/parses; None: no cache, every file is
    parsed); ``warn`` is told, once, when the cache cannot be written and is turned off."""

    def __init__(self, directory: Path | None, warn: Callable[[str], None], limit_bytes: int = LIMIT_BYTES):
        self.enabled = directory is not None
        self.root = Path(directory) if directory is not None else Path()
        self.folder = self.root / salt() if self.enabled else self.root
        self.warn = warn
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()  # the daemon reads revisions and previews on worker threads
        # Parses this cache read or wrote, with their objects' checks as they were then: keep() writes
        # a record again only when validation changed those (facts an analyzer read had changed).
        self._known: dict[int, tuple[weakref.ref, list]] = {}

    def _path(self, file: str, data: bytes) -> Path:
        key = _key(file, data)
        return self.folder / key[:2] / key

    def stored(self, snapshot: Snapshot, have: Mapping[str, FileParse] | None = None) -> dict[str, FileParse]:
        """The stored parses of the snapshot's files (for compiler.parse's ``stored``), but for files
        whose bytes ``have`` (another revision's parses) already holds."""
        if not self.enabled:
            return {}
        with self._lock:
            return self._restore(snapshot, have or {})

    def _restore(self, snapshot: Snapshot, have: Mapping[str, FileParse]) -> dict[str, FileParse]:
        found: dict[str, FileParse] = {}
        for file, data in snapshot.files.items():
            other = have.get(file)
            if other is not None and other.data == data:
                continue
            path = self._path(file, data)
            try:
                parsed = records.restore(file, data, _read(path))
                os.utime(path)  # recently used: pruned last
            except (OSError, ValueError, EOFError, TypeError):  # missing or damaged: parsed, then written
                continue
            found[file] = parsed
            self._remember(parsed)
        if found:
            with contextlib.suppress(OSError):
                os.utime(self.folder)  # in use: not another version's to remove (_prune)
        return found

    def keep(self, parsed: ParseResult) -> None:
        """Store the parses of ``parsed`` (after validation, so their checks are in) that are not
        stored yet or whose checks changed, then remove what is over the limit."""
        if not self.enabled:
            return
        with self._lock:
            self._keep(parsed)

    def _keep(self, parsed: ParseResult) -> None:
        self._known = {k: v for k, v in self._known.items() if v[0]() is not None}
        wrote = False
        try:
            for file, result in parsed.files.items():
                if self._unchanged(result):
                    continue
                _write(self._path(file, result.data), records.file_record(result))
                self._remember(result)
                wrote = True
            if wrote:
                self._prune()
        except OSError as exc:
            self.enabled = False
            self.warn(f"the parse cache in {self.root} cannot be written ({exc.strerror or exc}); "
                      "going on without it")

    def _remember(self, parsed: FileParse) -> None:
        self._known[id(parsed)] = (weakref.ref(parsed), _checks(parsed))

    def _unchanged(self, parsed: FileParse) -> bool:
        known = self._known.get(id(parsed))
        if known is None or known[0]() is not parsed:
            return False
        now = _checks(parsed)
        # A check found again is a new tuple (validate.framework): identity tells without comparing.
        return len(now) == len(known[1]) and all(map(operator.is_, now, known[1]))

    def _prune(self) -> None:
        """Remove other versions' folders unused for a week, temporary files a crash left, and the
        least recently used records beyond the limit. Other galleon processes may be pruning too:
        a file gone meanwhile is skipped."""
        now = time.time()
        for other in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if other != self.folder and other.is_dir() and now - other.stat().st_mtime > UNUSED_SALT_SECONDS:
                    shutil.rmtree(other, ignore_errors=True)
        entries = []
        for sub in os.scandir(self.folder):
            for entry in os.scandir(sub.path) if sub.is_dir() else ():
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                if not entry.name.startswith("."):
                    entries.append((stat.st_mtime, stat.st_size, entry.path))
                elif now - stat.st_mtime > STALE_TEMPORARY_SECONDS:
                    Path(entry.path).unlink(missing_ok=True)
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                break
            Path(path).unlink(missing_ok=True)
            total -= size


def _checks(parsed: FileParse) -> list:
    """What validation found in each object (checks are only ever added or replaced)."""
    return [found for obj in parsed.objects for found in obj.checks.values()]


def _read(path: Path):
    blob = path.read_bytes()
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + HEADER.size:
        raise ValueError("not a parse record")
    length, crc = HEADER.unpack_from(blob, len(MAGIC))
    payload = memoryview(blob)[len(MAGIC) + HEADER.size:]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise ValueError("a truncated or damaged parse record")
    return marshal.loads(payload)


def _frame(payload: bytes) -> bytes:
    return MAGIC + HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _write(path: Path, record: tuple) -> None:
    for folder in (path.parents[2], path.parents[1], path.parent):  # parses/, SALT/, the key's first two
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, _frame(marshal.dumps(record)), durable=False)  # a record lost to a crash is parsed again
