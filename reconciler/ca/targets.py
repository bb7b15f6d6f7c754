"""Where a cluster's ``cacerts`` Secret lives, and the reconcile step that reads, plans and writes.

A target is anything with ``read(cluster) -> dict | None`` and ``write(cluster, secret)``.
``DirTarget`` is DESIGN.md's ``dir:PATH``: one manifest per object at
``PATH/<cluster>/<namespace>/<Kind>/<name>.yaml``, usable with ``kubectl apply -f``. The ``kube``
target (``kube.KubeTarget``: official client, resourceVersion, retries) implements the same two
methods; its ``write`` may raise ``ConflictError``, and ``reconcile`` then reads and plans again.
"""
from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Mapping, Protocol

import yaml

from .errors import CAError
from .intermediate import Policy, issue
from .plan import NAME, NAMESPACE, SECRET, Plan, plan, secret_manifest
from .root import RootCA


# A conflict means another writer just finished: read again soon (client-go's RetryOnConflict waits 10 ms).
CONFLICT_ATTEMPTS, CONFLICT_BACKOFF = 5, 0.01


class ConflictError(Exception):
    """The Secret changed between the target's read and its write: nothing was written."""


class Target(Protocol):
    def read(self, cluster: str) -> dict | None:
        """The cluster's ``istio-system/cacerts`` Secret, or None when it does not exist."""

    def write(self, cluster: str, secret: dict) -> None:
        """Replace the Secret as a whole: a reader sees the old one or the new one, never a mix.

        Raises ``ConflictError`` when the Secret is no longer the one ``read`` returned."""


class DirTarget:
    def __init__(self, path: Path):
        self.path = Path(path)

    def file(self, cluster: str) -> Path:
        if cluster in ("", ".", "..") or "/" in cluster or "\\" in cluster:
            raise CAError(f"cluster name {cluster!r} cannot be a directory name")
        return self.path / cluster / NAMESPACE / "Secret" / f"{NAME}.yaml"

    def read(self, cluster: str) -> dict | None:
        path = self.file(cluster)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CAError(f"cannot read {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
        try:
            secret = yaml.safe_load(text)
        except yaml.YAMLError:
            # The parser's message quotes the text, which holds a private key.
            raise CAError(f"{path} is not YAML; fix or remove it") from None
        if not isinstance(secret, dict) or secret.get("kind") != "Secret":
            raise CAError(f"{path} is not a Secret manifest; fix or remove it")
        return secret

    def write(self, cluster: str, secret: dict) -> None:
        path = self.file(cluster)
        text = yaml.safe_dump(secret, sort_keys=False, default_flow_style=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # mkstemp creates the file 0600, which it keeps: the manifest holds the CA's private key.
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{NAME}.", suffix=".tmp")
        except OSError as exc:
            raise CAError(f"cannot write {path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)  # atomic on one file system: readers see the old or the new file
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            raise CAError(f"cannot write {path}: {exc.strerror}") from None
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable across a crash.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def target_from(spec: str, contexts: Mapping[str, str | None] | None = None,
                kubeconfig: Path | None = None) -> Target:
    """A ``--target`` value: ``dir:PATH``, or ``kube`` (each cluster's kubeContext from ``contexts``,
    in ``kubeconfig`` or kubectl's default one)."""
    if spec.startswith("dir:") and len(spec) > len("dir:"):
        return DirTarget(Path(spec[len("dir:"):]))
    if spec == "kube":
        from .kube import KubeTarget  # imports the Kubernetes client: only when it is used
        return KubeTarget(contexts or {}, kubeconfig)
    raise CAError(f"unknown target {spec!r}; use dir:PATH or kube")


def reconcile(target: Target, root: RootCA, cluster: str, policy: Policy, now: datetime,
              dry_run: bool = False, adopt: bool = False) -> Plan:
    """Read ``cluster``'s Secret, decide, and write a new intermediate only when the plan says so.

    When the write meets a Secret changed since the read, the decision is made again on the new
    one: it may now be ours and current (someone else reconciled), or no longer ours (refused).
    """
    issued = None
    for attempt in range(CONFLICT_ATTEMPTS):
        if attempt:
            time.sleep(CONFLICT_BACKOFF * 2 ** (attempt - 1))
        current = target.read(cluster)
        decided = plan(current, root, cluster, policy, now, adopt)
        if not decided.writes or dry_run:
            return decided
        # Issued once: the certificate depends only on the root, cluster, policy and clock, which a
        # conflict does not change (and an RSA-4096 key takes a second to make).
        issued = issued or issue(root, cluster, policy, now)
        try:
            target.write(cluster, secret_manifest(issued, root, policy, current))
            return decided
        except ConflictError as exc:
            last = exc
    raise CAError(f"{cluster}: {SECRET} kept changing while it was written ({CONFLICT_ATTEMPTS} attempts), "
                  f"last: {last}")
