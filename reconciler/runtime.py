"""The process's garbage-collector and exit policy, chosen once at its entry.

Galleon's work allocates a great many small, acyclic, long-lived objects (parsed objects, a mesh,
compiled resources). Python's cyclic collector would traverse them again and again while they are
made, for nothing: they hold no cycles worth collecting. How to avoid that depends on how long the
process lives, so it is decided here, at the entry, for the whole process, and nowhere else (no
thread turns the collector off and on under another: the daemon's one pause, ``bulk``, is counted
across threads):

- a **command** (``galleon validate``, ``compile``, ``diff``...) runs once: the collector is off
  for its whole life, and it leaves without freeing its heap object by object (``leave``);
- the **daemon** (``galleon serve``) runs for weeks: the collector stays on, with a young
  generation large enough that a compile does not trigger it every few thousand allocations. Work
  that makes long-lived objects in bulk (a revision's or a registry's mesh made and compiled;
  a cluster's list taken in) runs in ``bulk``: the collector waits until it is over, and what it
  made is then frozen as it is, never traversed (on a large mesh a pass over it stops every thread
  for long, only to find it alive). After a live registry's endpoint publishes, at most once every
  RECENT_INTERVAL, ``settle_recent`` freezes what they made the same way (see there why it must).
  Freezing is safe because what is kept makes no reference cycles (tests hold the mesh, its views and their
  relisting to that), so reference counting frees it when it is replaced. What cycles other work
  froze are freed by a full ``settle`` (every object traversed once): after the first publish, then
  whenever the heap has grown by HEAP_GROWTH since the last, the collector's own rule for its
  oldest generation (``settle_due``). At most once every RELEASE_INTERVAL after a publish, the C
  allocator's freed pages go back to the system (``release_freed``).

Benchmarks choose the policy of what they measure, as the programs do.
"""
from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

# Allocations (net of deallocations) between two collections of the youngest generation: with
# Python's default, a compile would start a collection every few hundred of its objects.
DAEMON_YOUNG_GENERATION = 50_000


# How long a publish's settling (and the rest of its after-work) waits for the streams to be sent their
# update: the collector's pass over the heap takes the CPU and the GIL that the pushes need first.
DELIVERY_WAIT = 5.0


# The policy chosen ("command", "daemon"; None: neither, as in tests), and how many bulk works are
# under way (the daemon's collector is paused while there is one).
_policy: dict = {"chosen": None, "bulk": 0}
_bulk_lock = threading.Lock()


def for_command() -> None:
    """A process that runs one command and exits."""
    gc.disable()
    _policy["chosen"] = "command"


def for_daemon() -> None:
    """A process that serves until stopped."""
    gc.enable()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(DAEMON_YOUNG_GENERATION, older, oldest)
    _policy["chosen"] = "daemon"


@contextmanager
def bulk() -> Iterator[None]:
    """Work that makes long-lived objects in bulk: under the daemon's policy, the collector
    is paused until every such work under way, on any thread, is over, and what was made meanwhile is
    then frozen (a pass would traverse all of it, only to find it alive). Each such work is short, so
    garbage waits little longer; a cycle made meanwhile and dropped waits for the next full
    settle. Under any other policy it changes nothing."""
    if _policy["chosen"] != "daemon":
        yield
        return
    with _bulk_lock:
        _policy["bulk"] += 1
        gc.disable()
    try:
        yield
    finally:
        with _bulk_lock:
            _policy["bulk"] -= 1
            if not _policy["bulk"]:
                gc.freeze()  # (before the collector resumes: its next pass would be over all of it)
                gc.enable()


# How often settle_recent freezes at most: what a live registry's publishes leave in this long is a
# young generation small enough never to reach the collector's threshold.
RECENT_INTERVAL = 1.0  # seconds
# How often settle_recent asks whether a full settle is due: the question visits every pool of the
# heap, so it is not asked at every publish (a publish anew asks it each time: those are rare).
GROWTH_CHECK = 60.0  # seconds
# A full settle is due once the heap has grown by this fraction since the last one (the collector's
# own rule for its oldest generation).
HEAP_GROWTH = 0.25

# The heap's size after the last full settle (allocated blocks); when settle_recent last froze;
# when it last asked whether a full settle is due.
_settled = {"heap": 0, "frozen": 0.0, "checked": 0.0}


def settle() -> None:
    """Collect what is garbage now, then freeze what remains: the collector then never traverses it
    again. Safe from any thread: it changes no setting another thread relies on."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    now = time.monotonic()
    _settled.update(heap=sys.getallocatedblocks(), frozen=now, checked=now)


def settle_due() -> bool:
    """Whether a full ``settle`` is due (the daemon asks after a publish anew, once its streams are
    sent it): the first time, and once the heap has grown by HEAP_GROWTH since the last. Frozen
    objects that become cyclic garbage are freed by nothing else; this bounds what they can hold to a
    part of the heap, however long the daemon runs."""
    return sys.getallocatedblocks() > _settled["heap"] * (1 + HEAP_GROWTH)


def settle_recent() -> bool:
    """Freeze what was made since the last settle (the daemon, after a live registry's endpoint
    publish; at most every RECENT_INTERVAL); True when a full ``settle`` is due (asked every
    GROWTH_CHECK seconds).

    Each endpoint publish replaces a few services' endpoints, freeing frozen objects as it makes new
    ones. The collector counts allocations net of deallocations, so it would seldom collect the young
    generation, and then traverse everything made since, in one long pause of every thread. Frozen
    this often instead, the young generation stays small, and is not traversed at all: what a
    publish keeps makes no cycles (tests/test_live.py holds relisting and serving to that), and a
    cycle other work made waits for the next full settle, as after ``bulk``."""
    now = time.monotonic()
    if now - _settled["frozen"] < RECENT_INTERVAL:
        return False
    gc.freeze()
    _settled["frozen"] = now
    if now - _settled["checked"] < GROWTH_CHECK:
        return False
    _settled["checked"] = now
    return settle_due()


# How often, at most, the daemon gives the C allocator's freed pages back to the system.
RELEASE_INTERVAL = 60.0  # seconds
_released = {"at": 0.0}


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_trim = _malloc_trim()


def release_due() -> bool:
    """Whether ``release_freed`` is due: at most every RELEASE_INTERVAL (the daemon asks after a
    publish, once its streams were woken)."""
    return _trim is not None and time.monotonic() - _released["at"] >= RELEASE_INTERVAL


def release_freed() -> None:
    """Give back to the system the pages of memory the C allocator holds free (glibc's
    ``malloc_trim(0)``). Safe from any thread; ctypes lets go of the GIL meanwhile.

    Under churn every publish replaces buffers of megabytes (serialized responses, gRPC's messages)
    from the arenas of several threads. glibc returns an arena's freed memory to the system only from
    its top, so pages freed in the middle stay resident, and a daemon running for weeks would hold
    the most it ever had free at once, in every arena. The pages given back cost a page fault each
    when used again, which is why this runs at most once every RELEASE_INTERVAL, not after every
    publish."""
    _released["at"] = time.monotonic()
    if _trim is not None:
        _trim(0)


def leave(code: int) -> None:
    """End a command's process: its output flushed, its heap not freed object by object (for a large
    mesh that takes longer than reading it). Every file it wrote was closed when written."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # its reader went away, or the command closed it
            pass
    os._exit(code)
