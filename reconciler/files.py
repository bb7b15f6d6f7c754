"""Writing a file so that a crash at any moment leaves the old content or the new, never a torn file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """A temporary file in the same folder (created 0600, which it keeps), flushed and fsynced, renamed
    over ``path``, then the folder fsynced so the rename itself survives a power loss. Raises OSError.
    ``durable=False`` skips both fsyncs, for a cache: a power loss may lose the write, never tear it
    for a reader that checks what it reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if not durable:
        return
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
