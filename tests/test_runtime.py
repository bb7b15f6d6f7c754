"""The daemon's collector policy (reconciler/runtime.py): what settle_recent collects and freezes, how
often, and when it says a full settle is due. These tests freeze objects of the test process itself,
so each leaves the collector as it found it (nothing frozen)."""
from __future__ import annotations

import gc
import time
import weakref

import pytest

from reconciler import runtime


class Node:
    """A container the collector tracks, that can be in a cycle and be referred to weakly."""

    def __init__(self) -> None:
        self.next: object = None


@pytest.fixture
def collector(monkeypatch):
    """The policy's state as after a full settle a while ago; the collector left unfrozen after."""
    monkeypatch.setitem(runtime._frozen, "after_settle", 0)
    monkeypatch.setitem(runtime._frozen, "collected", 0.0)
    monkeypatch.setitem(runtime._frozen, "checked", time.monotonic())
    monkeypatch.setattr(runtime, "FROZEN_CHECK", 3600.0)
    monkeypatch.setattr(runtime, "RECENT_INTERVAL", 0.0)
    try:
        yield runtime._frozen
    finally:
        gc.unfreeze()


def tracked(obj: object) -> bool:
    """Whether the collector would traverse ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for generation in range(3) for o in gc.get_objects(generation))


def test_settle_recent_collects_cycles_and_freezes_what_lives(collector):
    runtime.settle_recent()  # (whatever the test process made before)
    cycle, kept = Node(), Node()
    cycle.next = cycle
    gone = weakref.ref(cycle)
    del cycle
    kept.next = [kept]
    assert tracked(kept)
    assert runtime.settle_recent() is False
    assert gone() is None, "a cycle made since the last settle is collected, not frozen"
    assert not tracked(kept), "what lives on is frozen: no pass traverses it again"
    gc.unfreeze()
    assert tracked(kept)


def test_settle_recent_collects_at_most_every_interval(collector, monkeypatch):
    monkeypatch.setattr(runtime, "RECENT_INTERVAL", 3600.0)
    runtime.settle_recent()  # collects: the last was long ago
    made = Node()
    runtime.settle_recent()  # within the interval: nothing
    assert tracked(made)
    monkeypatch.setattr(runtime, "RECENT_INTERVAL", 0.0)
    runtime.settle_recent()
    assert not tracked(made)


def test_a_full_settle_is_due_once_the_frozen_heap_grew_by_a_quarter(collector, monkeypatch):
    runtime.settle_recent()
    frozen = gc.get_freeze_count()
    collector["after_settle"] = frozen  # as if a full settle had just frozen all that
    monkeypatch.setattr(runtime, "FROZEN_CHECK", 0.0)
    assert runtime.settle_recent() is False, "not grown"
    grown = [Node() for _ in range(int(frozen * runtime.FROZEN_GROWTH) + 1000)]
    assert runtime.settle_recent() is True, "grown by more than a quarter: a full settle is due"
    monkeypatch.setattr(runtime, "FROZEN_CHECK", 3600.0)
    more = [Node() for _ in range(1000)]
    assert runtime.settle_recent() is False, "asked again only after FROZEN_CHECK"
    assert grown and more


def test_settle_resets_what_growth_is_measured_from(collector):
    runtime.settle()
    assert collector["after_settle"] == gc.get_freeze_count() > 0


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


def test_bulk_pauses_the_daemons_collector_until_every_bulk_work_is_over(daemon_policy):
    import threading
    assert gc.isenabled()
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with runtime.bulk():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
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


def test_bulk_leaves_a_commands_collector_off(monkeypatch):
    enabled = gc.isenabled()
    monkeypatch.setitem(runtime._policy, "chosen", None)
    try:
        runtime.for_command()
        with runtime.bulk():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if enabled else gc.disable)()


def test_bulk_changes_nothing_when_no_policy_was_chosen(monkeypatch):
    monkeypatch.setitem(runtime._policy, "chosen", None)
    enabled = gc.isenabled()
    with runtime.bulk():
        assert gc.isenabled() == enabled
    assert gc.isenabled() == enabled
