"""What every writer to a cluster does when the object changed since it was read (no Kubernetes
import here: the commands that never reach a cluster must not pay for the client's)."""
from __future__ import annotations

# A conflict means another writer just finished: read again soon (client-go's RetryOnConflict waits 10 ms).
CONFLICT_ATTEMPTS, CONFLICT_BACKOFF = 5, 0.01


class ConflictError(Exception):
    """The object changed between the read and the write: nothing was written."""
