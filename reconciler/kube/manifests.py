"""DESIGN.md's ``dir:PATH`` target: one Kubernetes manifest per object, at
``PATH/<cluster>/<namespace>/<Kind>/<name>.yaml``, usable with ``kubectl apply -f``.

It keeps the API server's rule for writers: a write replaces what was read, or fails with
``ConflictError`` when the file changed since (another run, a person with an editor), and the
writer reads and decides again. Writes are atomic (a reader sees the old file or the new one) and
durable (fsync of the file and of its directory). Files are created 0600: a Secret holds a key.

Below ``PATH`` nothing is followed through a symbolic link: each folder is opened relative to the
one above it with ``O_NOFOLLOW`` and the file likewise, so a link planted in the tree (a cluster
folder pointing elsewhere) can neither receive a key nor hand one of its files to the reader, even
if it appears between a check and a write. ``PATH`` itself is the operator's choice and may be one.
"""
from __future__ import annotations

import difflib
import errno
import fcntl
import os
import secrets
import stat
import sys
from pathlib import Path

import structlog
import yaml

from compiler.parse import UnreadableFile, read_document

from .conflict import ConflictError

TEMPORARY_SUFFIX = ".tmp"


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (a Corefile, a PEM) as literal blocks, as a person would in a manifest."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _string)


class ManifestDir:
    """One object's manifests, one per cluster, under ``path``."""

    def __init__(self, path: Path, namespace: str, kind: str, name: str, error: type[Exception]):
        """``error``: the exception type the caller reports its failures with."""
        self.path = Path(path)
        self.namespace, self.kind, self.name = namespace, kind, name
        self.error = error
        # The text each file had when last read (None: absent): the next write is conditional on it.
        self._read: dict[Path, str | None] = {}
        self._swept: set[str] = set()  # clusters whose folder was cleared of a killed write's leftovers

    def file(self, cluster: str) -> Path:
        if cluster in ("", ".", "..") or "/" in cluster or "\\" in cluster:
            raise self.error(f"cluster name {cluster!r} cannot be a directory name")
        return self.path / cluster / self.namespace / self.kind / f"{self.name}.yaml"

    def read(self, cluster: str) -> dict | None:
        path = self.file(cluster)
        folder = self._folder(path, create=False)
        if folder is None:
            text = None
        else:
            try:
                if cluster not in self._swept:
                    fcntl.flock(folder, fcntl.LOCK_EX)  # a writer's temporary file is its own until it is done
                    self._sweep(folder, path, cluster)
                text = self._text(folder, path)
            finally:
                os.close(folder)
        self._read[path] = text
        if text is None:
            return None
        try:
            manifest = read_document(str(path), text.encode())
        except UnreadableFile as exc:
            raise self.error(f"{path}: {exc.message}; fix or remove it") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != self.kind:
            raise self.error(f"{path} is not a {self.kind} manifest; fix or remove it")
        return manifest

    def write(self, cluster: str, manifest: dict) -> None:
        """Replace the file with ``manifest``; when it was read before, only if it is unchanged since."""
        path = self.file(cluster)
        text = yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
        folder = self._folder(path, create=True)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)  # another galleon writing the same file waits for this one
            if cluster not in self._swept:
                self._sweep(folder, path, cluster)
            current = self._text(folder, path)  # read even when not asked to compare: it refuses a link
            if path in self._read and self._read.pop(path) != current:  # a read allows one write
                raise ConflictError(f"{path} changed since it was read")
            self._replace(folder, path, text)
        finally:
            os.close(folder)

    def _folder(self, path: Path, create: bool) -> int | None:
        """The folder of ``path``, opened (flock works on a directory: no lock file left behind);
        None when it does not exist and ``create`` is false."""
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self.error(f"cannot write {path}: {exc.strerror}") from None
        try:
            folder = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.error(f"cannot {'write' if create else 'read'} {path}: {exc.strerror}") from None
        below = self.path
        for name in path.relative_to(self.path).parts[:-1]:
            below = below / name
            try:
                if create:
                    try:
                        os.mkdir(name, dir_fd=folder)
                    except FileExistsError:
                        pass
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            except FileNotFoundError:
                os.close(folder)
                return None
            except OSError as exc:
                refused = self._refused(folder, name, below, exc, "write" if create else "read")
                os.close(folder)
                raise refused from None
            os.close(folder)
            folder = inner
        return folder

    def _refused(self, folder: int, name: str, path: Path, exc: OSError, doing: str) -> Exception:
        """Why ``name`` in ``folder`` could not be opened, as one line: a symbolic link, or the system's word."""
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                if stat.S_ISLNK(os.lstat(name, dir_fd=folder).st_mode):
                    return self.error(f"{path} is a symbolic link; Galleon does not write through links in a "
                                      "dir: target")
            except OSError:
                pass
        return self.error(f"cannot {doing} {path}: {exc.strerror}")

    def _text(self, folder: int, path: Path) -> str | None:
        # Without blocking: a FIFO put in the file's place would hang the read, and is refused below.
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._refused(folder, path.name, path, exc, "read") from None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self.error(f"{path} is not a regular file; replace it with the {self.kind} manifest")
            try:
                return file.read().decode("utf-8")
            except OSError as exc:
                raise self.error(f"cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise self.error(f"cannot read {path}: not UTF-8 text") from None

    def _replace(self, folder: int, path: Path, text: str) -> None:
        """A temporary file beside ``path``, created 0600 (a Secret holds a key), fsynced, renamed
        over it, the folder fsynced."""
        temporary = f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(text.encode())
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                os.unlink(temporary, dir_fd=folder)
                raise
            os.fsync(folder)
        except OSError as exc:
            raise self.error(f"cannot write {path}: {exc.strerror}") from None

    def _sweep(self, folder: int, path: Path, cluster: str) -> None:
        """Remove the temporary files a write of ``path`` killed midway left (the caller holds the
        folder's lock, so none is a write in progress), once per cluster. One that cannot be removed
        is reported, not an error: a dry run by someone who may not write there still reads."""
        prefix = f".{path.name}."
        removed, kept = 0, []
        for name in os.listdir(folder):
            if name.startswith(prefix) and name.endswith(TEMPORARY_SUFFIX):
                try:
                    os.unlink(name, dir_fd=folder)
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    kept.append(f"{name}: {exc.strerror}")
        self._swept.add(cluster)
        if removed:
            _log().warning("removed temporary files an interrupted write left", folder=str(path.parent),
                           files=removed)
        if kept:
            _log().warning("cannot remove temporary files an interrupted write left", folder=str(path.parent),
                           files=kept)


def _log():
    # The daemon sets logs up (JSON lines on stderr); `galleon ca reconcile` and `galleon dns reconcile`
    # do not, and structlog's default is stdout, where they print their plan.
    if structlog.is_configured():
        return structlog.get_logger("galleon.targets")
    return structlog.wrap_logger(structlog.PrintLogger(sys.stderr))


def parse_target(spec: str, error: type[Exception]) -> Path | None:
    """A ``--target`` value: the directory of ``dir:PATH``, or None for ``kube``."""
    try:
        return kube_or_dir(spec)
    except ValueError as exc:
        raise error(f"unknown target {spec!r}; {exc}") from None


def kube_or_dir(spec: str) -> Path | None:
    """A ``kube`` or ``dir:PATH`` value (a --target, a --registry): the directory of ``dir:PATH``, or
    None for ``kube``; else ValueError saying what to give instead."""
    if spec == "kube":
        return None
    if spec.startswith("dir:") and len(spec) > len("dir:"):
        return Path(spec[len("dir:"):])
    if spec == "dir:":
        raise ValueError("the path after dir: is empty; give dir:PATH")
    if spec == "dir":
        raise ValueError("give dir:PATH, the folder after dir:")
    if difflib.get_close_matches(spec, ["kube"], n=1):
        raise ValueError("did you mean kube? (or dir:PATH)")
    raise ValueError("use dir:PATH or kube")
