"""The daemon's collector policy (reconciler/runtime.py): what settle_recent freezes, how often, when
a full settle is due, what bulk work does to the collector, and the C allocator's freed pages given
back. These tests freeze objects of the test process itself, so each leaves the collector as it
found it (nothing frozen)."""
from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from reconciler import runtime


class Node:
    """A container the collector tracks, that can be in a cycle and be referred to weakly."""

    def __init__(self) -> None:
        self.next: object = None


@pytest.fixture
def collector(monkeypatch):
    """The policy's state as after a full settle a while ago; the collector left unfrozen after."""
    monkeypatch.setitem(runtime._settled, "heap", 0)
    monkeypatch.setitem(runtime._settled, "frozen", 0.0)
    monkeypatch.setitem(runtime._settled, "checked", time.monotonic())
    monkeypatch.setattr(runtime, "GROWTH_CHECK", 3600.0)
    monkeypatch.setattr(runtime, "RECENT_INTERVAL", 0.0)
    try:
        yield runtime._settled
    finally:
        gc.unfreeze()


def tracked(obj: object) -> bool:
    """Whether the collector would traverse ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for generation in range(3) for o in gc.get_objects(generation))


def test_settle_recent_freezes_what_was_made_without_a_pass_and_a_full_settle_frees_its_cycles(collector):
    runtime.settle_recent()  # (whatever the test process made before)
    cycle, kept = Node(), Node()
    cycle.next = cycle
    gone = weakref.ref(cycle)
    del cycle
    kept.next = [kept]
    assert tracked(kept)
    assert runtime.settle_recent() is False
    assert not tracked(kept), "what lives on is frozen: no pass traverses it again"
    assert gone() is not None, "not traversed: a cycle made since is frozen too"
    runtime.settle()
    assert gone() is None, "a full settle frees it"
    assert not tracked(kept)
    gc.unfreeze()
    assert tracked(kept)


def test_settle_recent_freezes_at_most_every_interval(collector, monkeypatch):
    monkeypatch.setattr(runtime, "RECENT_INTERVAL", 3600.0)
    runtime.settle_recent()  # freezes: the last was long ago
    made = Node()
    runtime.settle_recent()  # within the interval: nothing
    assert tracked(made)
    monkeypatch.setattr(runtime, "RECENT_INTERVAL", 0.0)
    runtime.settle_recent()
    assert not tracked(made)


def test_a_full_settle_is_due_the_first_time_and_once_the_heap_grew_by_a_quarter(collector):
    assert runtime.settle_due(), "never settled: due"
    heap = sys.getallocatedblocks()
    collector["heap"] = heap  # as if a full settle had just left the heap this size
    assert not runtime.settle_due(), "not grown"
    grown = [Node() for _ in range(int(heap * runtime.HEAP_GROWTH) + 1000)]
    assert runtime.settle_due(), "grown by more than a quarter"
    del grown
    assert not runtime.settle_due(), "what grew is gone"


def test_settle_recent_asks_whether_a_full_settle_is_due_every_growth_check(collector, monkeypatch):
    runtime.settle_recent()
    assert runtime.settle_recent() is False, "due, but asked only every GROWTH_CHECK"
    monkeypatch.setattr(runtime, "GROWTH_CHECK", 0.0)
    assert runtime.settle_recent() is True, "never settled: due"
    collector["heap"] = sys.getallocatedblocks()
    assert runtime.settle_recent() is False, "not grown"


def test_settle_resets_what_growth_is_measured_from(collector):
    runtime.settle()
    assert collector["heap"] > 0 and not runtime.settle_due()


@pytest.fixture
def daemon_policy(monkeypatch):
    """The daemon's policy in force, as ``galleon serve`` chooses it; the test process's after."""
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    monkeypatch.setitem(runtime._policy, "chosen", None)
    runtime.for_daemon()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        (gc.enable if enabled else gc.disable)()


def another_bulk_work() -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A thread (not started) that does bulk work until told to leave: (it, inside, leave)."""
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with runtime.bulk():
            inside.set()
            leave.wait(10)

    return threading.Thread(target=other), inside, leave


def test_bulk_pauses_the_daemons_collector_until_every_bulk_work_is_over(daemon_policy):
    assert gc.isenabled()
    thread, inside, leave = another_bulk_work()
    with runtime.bulk():
        assert not gc.isenabled()
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled(), "another thread's bulk work is still under way"
    leave.set()
    thread.join(10)
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with runtime.bulk():
            raise RuntimeError("a failed build")
    assert gc.isenabled(), "a bulk work that fails resumes the collector too"


def test_what_bulk_work_made_is_frozen_when_the_last_is_over(daemon_policy):
    try:
        thread, inside, leave = another_bulk_work()
        with runtime.bulk():
            made = Node()
            thread.start()
            assert inside.wait(10)
        assert tracked(made), "another thread's bulk work is still under way: nothing frozen yet"
        leave.set()
        thread.join(10)
        assert not tracked(made), "frozen: the collector resumes without a pass over it"
        after = Node()
        assert tracked(after), "what is made after the bulk work is the collector's as ever"
    finally:
        gc.unfreeze()


def test_bulk_leaves_a_commands_collector_off(monkeypatch):
    enabled = gc.isenabled()
    monkeypatch.setitem(runtime._policy, "chosen", None)
    try:
        runtime.for_command()
        with runtime.bulk():
            made = Node()
        assert not gc.isenabled()
        assert tracked(made), "a command freezes nothing"
    finally:
        (gc.enable if enabled else gc.disable)()


def test_bulk_changes_nothing_when_no_policy_was_chosen(monkeypatch):
    monkeypatch.setitem(runtime._policy, "chosen", None)
    enabled = gc.isenabled()
    with runtime.bulk():
        assert gc.isenabled() == enabled
        made = Node()
    assert gc.isenabled() == enabled
    assert tracked(made)


# A process of its own, so that what the C allocator holds is the script's alone: it frees 100 MB
# of 100 kB buffers below one it keeps (so the heap's top is not free and glibc keeps the pages),
# and prints its resident set (kB) before and after release_freed.
RELEASE_SCRIPT = """
from reconciler import runtime

def resident():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

start = resident()
buffers = [b"x" * 100_000 for _ in range(1000)]
kept = b"y" * 100_000
del buffers
freed = resident()
runtime.release_freed()
print(start, freed, resident(), runtime.release_due())
"""


@pytest.mark.skipif(runtime._trim is None, reason="a C library without malloc_trim (not glibc): nothing to release")
def test_release_freed_gives_the_pages_freed_in_the_middle_of_the_heap_back():
    ran = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent, check=True)
    start, freed, released, due = ran.stdout.split()
    start, freed, released = int(start), int(freed), int(released)
    assert freed - start > 80_000, "the freed buffers' pages stay resident until released"
    assert freed - released > 80_000, (start, freed, released)
    assert due == "False", "released just now: not due again before RELEASE_INTERVAL"


def test_release_is_due_at_most_every_interval(monkeypatch):
    monkeypatch.setattr(runtime, "RELEASE_INTERVAL", 3600.0)
    monkeypatch.setitem(runtime._released, "at", time.monotonic() - 2 * runtime.RELEASE_INTERVAL)
    assert runtime.release_due() is (runtime._trim is not None)
    runtime.release_freed()
    assert not runtime.release_due()
    monkeypatch.setattr(runtime, "RELEASE_INTERVAL", 0.0)
    assert runtime.release_due() is (runtime._trim is not None)
