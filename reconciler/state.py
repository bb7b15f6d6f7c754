"""The last known good snapshot, kept on disk so a restarted daemon can serve without its source.

Every revision the daemon serves is written to ``STATE_DIR/last-good/CLUSTER.json`` (its files,
revision and origin, the source it is of, with a checksum). Only a snapshot of the source the daemon
is given is served, not another source's (another daemon's of the same cluster name, sharing the state
directory); a snapshot an older galleon wrote is named by its origin. The write is
atomic: a temporary file in the same folder, flushed and fsynced, then renamed over the old one (and
the folder fsynced), so a crash at any moment leaves the old snapshot or the new one, never a torn
file. A file that does not read back (corrupt, truncated by hand, another format) is set aside with a
warning, never trusted. The temporary files a write killed midway leaves are removed when the daemon
starts again (``remove_temporaries``).
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

from .files import write_atomic
from .parse_cache import STALE_TEMPORARY_SECONDS
from .sources import is_remote
from .sources.git import redact

FORMAT = 1
FOLDER = "last-good"  # in the state directory
TEMPORARY = ".{name}.*.tmp"  # what write_atomic names its temporary file for NAME
log = structlog.get_logger("galleon.state")


def source_identity(location: str, rev: str | None) -> str:
    """Which source a snapshot is of: a URL without its credentials, or a local path made absolute
    (links not followed: a link moved to a new checkout names the same source), with ``--rev`` when it
    names more than the default."""
    where = redact(location) if is_remote(location) else os.path.abspath(location)
    return where if rev in (None, "HEAD") else f"{where} --rev {rev}"


def check_writable(state_dir: Path) -> None:
    """Make the snapshots' folder in ``state_dir`` and write a file there, removed at once: a state
    directory that cannot keep the snapshot is refused at start, not found out once the source is
    gone. Raises OSError."""
    folder = Path(state_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", suffix=".tmp"):
        pass


class LastGood:
    def __init__(self, state_dir: Path, cluster: str, source: str) -> None:
        """The snapshots of ``cluster`` served from ``source`` (``source_identity``)."""
        self.path = Path(state_dir) / FOLDER / f"{cluster}.json"
        # The VIPs served with it, apart: small, read at every start (compiler/vips.py keeps them).
        self.vips_path = self.path.with_name(f"{cluster}.vips.json")
        self.cluster, self.source = cluster, source

    def save_vips(self, vips: dict[str, str]) -> None:
        """Replace the stored VIPs (name -> address), atomically. Raises OSError."""
        write_atomic(self.vips_path, json.dumps({"format": FORMAT, "vips": vips}, sort_keys=True).encode())

    def load_vips(self) -> dict[str, str]:
        """The stored VIPs; {} when there are none or they do not read back (logged)."""
        try:
            document = json.loads(self.vips_path.read_bytes())
            vips = document["vips"]
            if document["format"] != FORMAT or not all(isinstance(v, str) for v in vips.values()):
                raise ValueError(f"format {document['format']}")
            return dict(vips)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("stored VIPs unreadable; not used", path=str(self.vips_path), error=str(exc))
            return {}

    def save(self, snapshot: Snapshot) -> None:
        """Replace the stored snapshot with ``snapshot``, atomically. Raises OSError."""
        content = {"format": FORMAT, "cluster": self.cluster, "source": self.source, "revision": snapshot.revision,
                   "origin": snapshot.origin,
                   "files": {path: base64.b64encode(data).decode() for path, data in snapshot.files.items()}}
        body = json.dumps(content, sort_keys=True)
        data = json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "snapshot": content},
                          sort_keys=True).encode()
        write_atomic(self.path, data)

    def load(self) -> Snapshot | None:
        """The stored snapshot; None when there is none, when it is another source's (left in place, said
        in the log), or when it does not read back (then it is set aside)."""
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
            # (an older galleon wrote no source: its origin, the source as given, names it, at the default --rev)
            of = content.get("source") or source_identity(content["origin"], None)
            if of != self.source:
                log.warning("last known good snapshot is of another source; not used", path=str(self.path),
                            source=self.source, snapshot_of=of)
                return None
            files = {path: base64.b64decode(text, validate=True) for path, text in content["files"].items()}
            return Snapshot(content["revision"], files, content["origin"])
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, aside)
            log.warning("last known good snapshot is corrupt; set aside", path=str(aside), error=str(exc))
            return None


def remove_temporaries(last_good: LastGood, parses: Path | None) -> None:
    """At start, remove the temporary files writes killed midway left in the state directory: those of
    this cluster's snapshot and VIPs, which only this daemon writes, and parse records' (``parses``:
    the parse cache's folder, None when it is off) older than the parse cache's own limit, since other
    galleon processes share that folder and one may be writing there now. Logged once, with how many."""
    found = [temporary for path in (last_good.path, last_good.vips_path)
             for temporary in path.parent.glob(TEMPORARY.format(name=path.name))]
    if parses is not None:
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        found += [temporary for temporary in parses.glob(f"*/*/{TEMPORARY.format(name='*')}")
                  if _modified(temporary) < cutoff]
    removed = 0
    for temporary in found:
        try:
            temporary.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove a temporary file an interrupted write left", path=str(temporary),
                        error=exc.strerror)
    if removed:
        log.warning("removed temporary files interrupted writes left in the state directory", files=removed,
                    state_dir=str(last_good.path.parent.parent))


def _modified(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return time.time()  # gone meanwhile: another process renamed or removed it
