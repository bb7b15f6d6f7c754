"""DESIGN.md's ``dir:PATH`` target: one Kubernetes manifest per object, at
``PATH/<cluster>/<namespace>/<Kind>/<name>.yaml``, usable with ``kubectl apply -f``.

It keeps the API server's rule for writers: a write replaces what was read, or fails with
``ConflictError`` when the file changed since (another run, a person with an editor), and the
writer reads and decides again. Writes are atomic (a reader sees the old file or the new one) and
durable (fsync of the file and of its directory). Files are created 0600: a Secret holds a key.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import yaml

from reconciler.files import write_atomic

from .conflict import ConflictError


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

    def file(self, cluster: str) -> Path:
        if cluster in ("", ".", "..") or "/" in cluster or "\\" in cluster:
            raise self.error(f"cluster name {cluster!r} cannot be a directory name")
        return self.path / cluster / self.namespace / self.kind / f"{self.name}.yaml"

    def read(self, cluster: str) -> dict | None:
        path = self.file(cluster)
        text = self._text(path)
        self._read[path] = text
        if text is None:
            return None
        try:
            manifest = yaml.safe_load(text)
        except yaml.YAMLError:
            # Not the parser's message: it quotes the text, which may hold a private key.
            raise self.error(f"{path} is not YAML; fix or remove it") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != self.kind:
            raise self.error(f"{path} is not a {self.kind} manifest; fix or remove it")
        return manifest

    def write(self, cluster: str, manifest: dict) -> None:
        """Replace the file with ``manifest``; when it was read before, only if it is unchanged since."""
        path = self.file(cluster)
        text = yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(path.parent, os.O_RDONLY)  # flock works on a directory: no lock file left behind
        except OSError as exc:
            raise self.error(f"cannot write {path}: {exc.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another galleon writing the same file waits for this one
            if path in self._read:
                expected = self._read.pop(path)  # a read allows one write
                if self._text(path) != expected:
                    raise ConflictError(f"{path} changed since it was read")
            self._replace(path, text)
        finally:
            os.close(lock)

    def _text(self, path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise self.error(f"cannot read {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None

    def _replace(self, path: Path, text: str) -> None:
        try:
            write_atomic(path, text.encode())
        except OSError as exc:
            raise self.error(f"cannot write {path}: {exc.strerror}") from None


def parse_target(spec: str, error: type[Exception]) -> Path | None:
    """A ``--target`` value: the directory of ``dir:PATH``, or None for ``kube``."""
    if spec.startswith("dir:") and len(spec) > len("dir:"):
        return Path(spec[len("dir:"):])
    if spec == "kube":
        return None
    raise error(f"unknown target {spec!r}; use dir:PATH or kube")
