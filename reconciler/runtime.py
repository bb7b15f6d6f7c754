"""The process's garbage-collector and exit policy, chosen once at its entry.

Galleon's work allocates millions of small, acyclic, long-lived objects (parsed objects, a mesh,
compiled resources). Python's cyclic collector would traverse them again and again while they are
made, for nothing: they hold no cycles worth collecting. How to avoid that depends on how long the
process lives, so it is decided here, at the entry, for the whole process, and nowhere else (no
thread turns the collector off and on under another):

- a **command** (``galleon validate``, ``compile``, ``diff``...) runs once: the collector is off
  for its whole life, and it leaves without freeing its heap object by object (``leave``);
- the **daemon** (``galleon serve``) runs for weeks: the collector stays on, with a young
  generation large enough that a compile does not trigger it every few thousand allocations, and
  after each revision is published, and after each rebuild from a live registry's every object (a
  cluster's first list), ``settle`` collects what the previous one left and freezes the rest, so the
  collector never traverses the served mesh again (on a large mesh a pass over it stops every
  thread for seconds).

Benchmarks choose the policy of what they measure, as the programs do.
"""
from __future__ import annotations

import gc
import os
import sys

# Allocations (net of deallocations) between two collections of the youngest generation: Python's
# default (700) makes a compile collect thousands of times.
DAEMON_YOUNG_GENERATION = 50_000


# How long a publish's settling (and the rest of its after-work) waits for the streams to be sent their
# update: the collector's pass over the heap takes the CPU and the GIL that the pushes need first.
DELIVERY_WAIT = 5.0


def for_command() -> None:
    """A process that runs one command and exits."""
    gc.disable()


def for_daemon() -> None:
    """A process that serves until stopped."""
    gc.enable()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(DAEMON_YOUNG_GENERATION, older, oldest)


def settle() -> None:
    """Collect what is garbage now, then freeze what remains (the daemon, after a publish): the
    collector then never traverses it again, and nothing frozen outlives the next settle. Safe from
    any thread: it changes no setting another thread relies on."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def leave(code: int) -> None:
    """End a command's process: its output flushed, its heap not freed object by object (for a large
    mesh that takes longer than reading it). Every file it wrote was closed when written."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # its reader went away, or the command closed it
            pass
    os._exit(code)
