"""The last known good snapshot, kept on disk so a restarted daemon can serve without its source.

Every revision the daemon serves is written to ``STATE_DIR/last-good/CLUSTER.json`` (its files,
revision and origin, with a checksum). The write is atomic: a temporary file in the same folder,
flushed and fsynced, then renamed over the old one (and the folder fsynced), so a crash at any
moment leaves the old snapshot or the new one, never a torn file. A file that does not read back
(corrupt, truncated by hand, another format) is set aside with a warning, never trusted.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import structlog

from compiler.snapshot import Snapshot

FORMAT = 1
log = structlog.get_logger("galleon.state")


class LastGood:
    def __init__(self, state_dir: Path, cluster: str) -> None:
        self.path = Path(state_dir) / "last-good" / f"{cluster}.json"
        self.cluster = cluster

    def save(self, snapshot: Snapshot) -> None:
        """Replace the stored snapshot with ``snapshot``, atomically. Raises OSError."""
        content = {"format": FORMAT, "cluster": self.cluster, "revision": snapshot.revision,
                   "origin": snapshot.origin,
                   "files": {path: base64.b64encode(data).decode() for path, data in snapshot.files.items()}}
        body = json.dumps(content, sort_keys=True)
        data = json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "snapshot": content},
                          sort_keys=True).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a power loss
        finally:
            os.close(folder)

    def load(self) -> Snapshot | None:
        """The stored snapshot; None when there is none or it does not read back (then it is set aside)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("last known good snapshot unreadable; not used", path=str(self.path), error=str(exc))
            return None
        try:
            document = json.loads(data)
            content = document["snapshot"]
            if hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest() != document["sha256"]:
                raise ValueError("checksum mismatch")
            if content["format"] != FORMAT or content["cluster"] != self.cluster:
                raise ValueError(f"format {content['format']} for cluster {content['cluster']!r}")
            files = {path: base64.b64decode(text, validate=True) for path, text in content["files"].items()}
            return Snapshot(content["revision"], files, content["origin"])
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, aside)
            log.warning("last known good snapshot is corrupt; set aside", path=str(aside), error=str(exc))
            return None
