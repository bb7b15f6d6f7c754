"""Leader election (reconciler/kube/lease.py) on a Lease served by the Kubernetes API stand-in.

The API server is tests/kube/standin.py, a stand-in for kube-apiserver (which cannot be installed
here) that keeps its rules for Leases: resourceVersion conflicts, AlreadyExists, MicroTime. The
electors use the official client, unchanged. Lease expiry is driven by an injected clock, so no
test sleeps through a lease duration.
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
from kubernetes import config

from reconciler.kube.lease import LeaderElector

NS, LEASE = "istio-system", "galleon-cluster-a"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def api(standin, tmp_path):
    return config.new_client_from_config(str(standin.write_kubeconfig(tmp_path / "kubeconfig")),
                                         persist_config=False)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def elector(api, clock):
    def make(identity: str, **timing) -> LeaderElector:
        return LeaderElector(api, NS, LEASE, identity, clock=clock, **timing)
    return make


def lease(standin) -> dict:
    return standin.get("leases", NS, LEASE)["spec"]


def test_of_two_electors_one_leads(elector, standin, clock):
    a, b = elector("replica-a"), elector("replica-b")
    assert a.try_acquire_or_renew() and a.is_leader
    assert not b.try_acquire_or_renew() and not b.is_leader
    assert b.holder == "replica-a"
    created = lease(standin)
    assert created["holderIdentity"] == "replica-a" and created["leaseDurationSeconds"] == 15
    assert created["leaseTransitions"] == 0 and created["acquireTime"] == created["renewTime"]
    clock.advance(2)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    renewed = lease(standin)
    assert renewed["acquireTime"] == created["acquireTime"] and renewed["renewTime"] > created["renewTime"]
    assert renewed["leaseTransitions"] == 0
    assert renewed["renewTime"].endswith("Z") and len(renewed["renewTime"]) == len("2027-01-15T08:00:02.000000Z")


def test_the_other_takes_over_once_the_lease_expires(elector, standin, clock):
    a, b = elector("replica-a"), elector("replica-b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # B starts timing the record from here
    clock.advance(10)  # A stops renewing (it hangs or died); at 10 s it is no longer leader itself
    assert not a.is_leader
    assert not b.try_acquire_or_renew()
    clock.advance(5.5)  # 15.5 s since B saw the record change: expired
    assert b.try_acquire_or_renew() and b.is_leader
    taken = lease(standin)
    assert taken["holderIdentity"] == "replica-b" and taken["leaseTransitions"] == 1
    assert taken["acquireTime"] == taken["renewTime"]
    assert not a.try_acquire_or_renew() and not a.is_leader and a.holder == "replica-b"


def test_expiry_is_timed_from_when_the_record_was_seen_not_from_its_renew_time(elector, standin, clock):
    a = elector("replica-a")
    assert a.try_acquire_or_renew()
    # The holder's clock may run behind ours: a renewTime an hour old does not mean it expired.
    standin.edit("leases", NS, LEASE, lambda lease: lease["spec"].update(renewTime="2020-01-01T00:00:00.000000Z"))
    b = elector("replica-b")
    assert not b.try_acquire_or_renew()
    clock.advance(15.5)
    assert b.try_acquire_or_renew()


def test_of_two_candidates_racing_for_an_expired_lease_one_gets_409(elector, standin, clock):
    a, b, c = elector("replica-a"), elector("replica-b"), elector("replica-c")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew() and not c.try_acquire_or_renew()
    clock.advance(16)
    # Both read the expired lease before either write lands: their PUTs carry the same resourceVersion.
    standin.delay(0.5, method="PUT", times=2)
    results = {}
    threads = [threading.Thread(target=lambda e=e: results.update({e.identity: e.try_acquire_or_renew()}))
               for e in (b, c)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == [False, True]
    winner = b if results["replica-b"] else c
    assert winner.is_leader and not (c if winner is b else b).is_leader
    assert lease(standin)["holderIdentity"] == winner.identity and lease(standin)["leaseTransitions"] == 1
    assert sorted(r.status for r in standin.requests if r.method == "PUT") == [200, 409]


def test_a_leader_that_cannot_renew_steps_down_at_the_renew_deadline(elector, standin, clock):
    a, b = elector("replica-a"), elector("replica-b")
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    standin.fail(method="PUT", status=500, times=None)
    for _ in range(4):
        clock.advance(2)
        assert not a.try_acquire_or_renew()
        assert a.is_leader  # 8 s without renewing: still within the 10 s deadline
    standin.fail(method="GET", status=503, times=None)
    clock.advance(1.9)
    assert not a.try_acquire_or_renew() and a.is_leader
    clock.advance(0.1)
    assert not a.try_acquire_or_renew() and not a.is_leader  # 10 s: it has stepped down...
    standin.clear_faults()
    assert not b.try_acquire_or_renew()  # ...5 s before anyone else may take over
    clock.advance(5.1)
    assert b.try_acquire_or_renew()


def test_timeouts_are_failures(elector, standin, clock):
    a = elector("replica-a", retry_period=0.1)  # each request gives up after 0.1 s
    assert a.try_acquire_or_renew()
    standin.delay(2, method="GET", times=None)
    started = time.monotonic()
    clock.advance(1)
    assert not a.try_acquire_or_renew() and a.is_leader
    assert time.monotonic() - started < 1.5
    clock.advance(9)
    assert not a.is_leader


def test_a_409_on_renewal_is_retried_without_losing_leadership(elector, standin, clock):
    a = elector("replica-a")
    assert a.try_acquire_or_renew()
    # Another controller labels the lease between the leader's read and its write.
    standin.delay(0.4, method="PUT")
    reads = sum(r.method == "GET" for r in standin.requests)
    results: list[bool] = []
    renewal = threading.Thread(target=lambda: results.append(a.try_acquire_or_renew()))
    renewal.start()
    while sum(r.method == "GET" for r in standin.requests) == reads:
        time.sleep(0.01)
    standin.edit("leases", NS, LEASE, lambda lease: lease["metadata"].setdefault("labels", {}).update(x="y"))
    renewal.join()
    assert results == [False] and a.is_leader
    assert standin.requests[-1].status == 409
    clock.advance(2)
    assert a.try_acquire_or_renew()


def test_a_lease_taken_from_outside_ends_leadership_at_once(elector, standin, clock):
    a = elector("replica-a")
    assert a.try_acquire_or_renew()
    standin.edit("leases", NS, LEASE, lambda lease: lease["spec"].update(holderIdentity="intruder"))
    clock.advance(2)
    assert not a.try_acquire_or_renew() and not a.is_leader and a.holder == "intruder"


def test_release_lets_a_successor_in_without_waiting(elector, standin, clock):
    a, b = elector("replica-a"), elector("replica-b")
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    assert a.release() and not a.is_leader
    released = lease(standin)
    assert released["holderIdentity"] == "" and released["leaseDurationSeconds"] == 1
    assert b.try_acquire_or_renew()
    assert lease(standin)["leaseTransitions"] == 1
    assert not a.release()  # not held: nothing to do


def test_timing_must_let_a_leader_step_down_before_its_lease_expires(api):
    with pytest.raises(ValueError):
        LeaderElector(api, NS, LEASE, "a", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError):
        LeaderElector(api, NS, LEASE, "a", renew_deadline=2, retry_period=2)


def test_run_reports_transitions_and_releases_on_stop(api, standin):
    """Two daemons' loops, real time, short periods: one leads; stopping it hands over at once."""
    timing = dict(lease_duration=3.0, renew_deadline=1.0, retry_period=0.1)
    events: list[str] = []

    async def scenario() -> None:
        stops = {name: asyncio.Event() for name in ("a", "b")}
        electors = {name: LeaderElector(api, NS, LEASE, f"replica-{name}", **timing) for name in stops}

        def started(name):
            async def on_started():  # an async callback...
                events.append(f"{name} started")
            return on_started

        loops = {name: asyncio.create_task(electors[name].run(
            stops[name], started(name), lambda name=name: events.append(f"{name} stopped")))  # ...or a plain one
            for name in stops}
        while not events:
            await asyncio.sleep(0.02)
        first = events[0].split()[0]
        second = "b" if first == "a" else "a"
        await asyncio.sleep(0.3)  # a few renewals; the other keeps waiting
        assert events == [f"{first} started"]
        stops[first].set()
        await loops[first]
        assert events == [f"{first} started", f"{first} stopped"]
        # Released, so the other takes over within a few retry periods, well before 3 s expiry.
        deadline = time.monotonic() + 1.0
        while len(events) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert events[2:] == [f"{second} started"]
        stops[second].set()
        await loops[second]

    started_at = time.monotonic()
    asyncio.run(scenario())
    assert len(events) == 4 and events[3].endswith("stopped")
    assert lease(standin)["holderIdentity"] == ""
    assert time.monotonic() - started_at < 2.5


def test_run_steps_down_while_a_renewal_hangs(api, standin):
    events: list[str] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        a = LeaderElector(api, NS, LEASE, "replica-a", lease_duration=3.0, renew_deadline=0.5, retry_period=0.1)
        loop = asyncio.create_task(a.run(stop, lambda: events.append("started"), lambda: events.append("stopped")))
        while not events:
            await asyncio.sleep(0.02)
        standin.delay(5, times=None)  # the API server stops answering in time
        hung_at = time.monotonic()
        while len(events) < 2:
            await asyncio.sleep(0.02)
        assert time.monotonic() - hung_at < 1.0  # the 0.5 s deadline plus at most a retry period or two
        standin.clear_faults()
        stop.set()
        await loop

    asyncio.run(scenario())
    assert events == ["started", "stopped"]
