"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection package does it.

One replica of the daemon writes to the clusters; the others wait. Each replica runs a
``LeaderElector`` with its own identity on the same Lease:

- A candidate reads the Lease. If it is missing, the candidate creates it, holding it. If another
  identity holds it and the lease has not expired, the candidate waits. Otherwise it writes itself
  in with a PUT carrying the resourceVersion it read, so of two candidates racing for an expired
  lease exactly one wins; the other gets 409 Conflict.
- Expiry is judged as client-go does: leaseDurationSeconds after *this replica observed* the
  record last change, on this replica's clock, never by comparing the holder's renewTime with our
  clock, so clock skew between machines cannot make two leaders.
- The leader renews every retry period. It stops being leader as soon as it sees another holder,
  and when it has not renewed for renew_deadline (API errors, timeouts), which is shorter than the
  lease duration, so it steps down before anyone else may take over.
- On stop, the leader releases the Lease (empty holder, one-second duration: client-go's
  ReleaseOnCancel), so a successor need not wait for the lease to expire.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import kubernetes.client
import structlog
import urllib3
from kubernetes.client.exceptions import ApiException

from compiler.errors import one_line

log = structlog.get_logger("galleon.lease")

# client-go's JitterFactor: a candidate waits retry_period plus up to 1.2 times that again, so
# candidates that start together do not keep colliding.
JITTER = 1.2


@dataclass(frozen=True)
class _Record:
    """What a Lease says about its holder (client-go's LeaderElectionRecord)."""
    holder: str
    duration: float
    acquire_time: dt.datetime | None
    renew_time: dt.datetime | None
    transitions: int

    @classmethod
    def of(cls, lease: kubernetes.client.V1Lease, default_duration: float) -> _Record:
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        return cls(spec.holder_identity or "", spec.lease_duration_seconds or default_duration,
                   spec.acquire_time, spec.renew_time, spec.lease_transitions or 0)


class LeaderElector:
    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, name: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        # client-go's own checks: a leader must give up before its lease can expire for others.
        if not lease_duration > renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if not renew_deadline > JITTER * retry_period:
            raise ValueError(f"renew_deadline must be greater than {JITTER} * retry_period")
        if not identity:
            raise ValueError("identity must not be empty")
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._clock = clock
        # Whole seconds in the Lease; rounded up, so that others never wait less than we promise.
        self._duration_seconds = math.ceil(lease_duration)
        # Each request is bounded by a retry period: a later answer would leave no time to retry
        # before the renew deadline.
        self._timeout = retry_period
        self._lease: kubernetes.client.V1Lease | None = None  # as last read or written
        self._observed: _Record | None = None
        self._observed_at = 0.0  # our clock when the record last changed
        self._renewed_at: float | None = None  # our clock when our last write as holder began

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the lease and renewed it within the renew deadline (checked on
        every read, so leadership ends on time even while a renewal hangs)."""
        return (self._renewed_at is not None and self._observed is not None
                and self._observed.holder == self.identity
                and self._clock() - self._renewed_at < self.renew_deadline)

    @property
    def holder(self) -> str:
        """The holder this replica last saw in the Lease ("" for none or not read yet)."""
        return self._observed.holder if self._observed else ""

    def try_acquire_or_renew(self) -> bool:
        """One attempt to acquire or renew the lease; True when this replica now holds it.

        Blocking (API calls): the ``run`` loop calls it in a thread.
        """
        now = self._clock()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:
                return self._failed("read", exc)
            return self._create(now)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return self._failed("read", exc)
        self._lease = lease
        record = _Record.of(lease, self.lease_duration)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if record.holder and record.holder != self.identity and now < self._observed_at + record.duration:
            self._renewed_at = None  # someone else holds a live lease: we are not (or no longer) leader
            return False
        # A renewal keeps the acquire time and the count of transitions; a takeover starts anew.
        renewal = record.holder == self.identity
        lease.spec = kubernetes.client.V1LeaseSpec(
            holder_identity=self.identity, lease_duration_seconds=self._duration_seconds,
            acquire_time=record.acquire_time if renewal else _micro_time(now), renew_time=_micro_time(now),
            lease_transitions=record.transitions if renewal else record.transitions + 1)
        return self._write(lease, now)

    def _create(self, now: float) -> bool:
        lease = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=kubernetes.client.V1LeaseSpec(
                holder_identity=self.identity, lease_duration_seconds=self._duration_seconds,
                acquire_time=_micro_time(now), renew_time=_micro_time(now), lease_transitions=0))
        try:
            created = self._api.create_namespaced_lease(self.namespace, lease, _request_timeout=self._timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            return self._failed("create", exc)  # 409: another replica created it first
        return self._held(created, now)

    def _write(self, lease: kubernetes.client.V1Lease, now: float) -> bool:
        try:
            # The PUT carries the resourceVersion we read: a 409 means someone wrote in between.
            written = self._api.replace_namespaced_lease(self.name, self.namespace, lease,
                                                         _request_timeout=self._timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            return self._failed("update", exc)
        return self._held(written, now)

    def _held(self, lease: kubernetes.client.V1Lease, now: float) -> bool:
        if not self.is_leader:
            log.info("lease acquired", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        self._lease = lease
        self._observed, self._observed_at, self._renewed_at = _Record.of(lease, self.lease_duration), now, now
        return True

    def _failed(self, action: str, exc: Exception) -> bool:
        status = getattr(exc, "status", None)
        log.warning("lease " + action + " failed", lease=f"{self.namespace}/{self.name}", identity=self.identity,
                    status=status, error=_reason(exc), leader=self.is_leader)
        return False

    def release(self) -> bool:
        """Give the lease up if this replica holds it (client-go's ReleaseOnCancel): an empty holder
        and a one-second duration, so a successor takes over at its next try."""
        if not self.is_leader or self._lease is None:
            return False
        now = self._clock()
        lease = self._lease
        lease.spec = kubernetes.client.V1LeaseSpec(
            holder_identity="", lease_duration_seconds=1, acquire_time=_micro_time(now), renew_time=_micro_time(now),
            lease_transitions=self._observed.transitions if self._observed else 0)
        self._renewed_at = None
        try:
            self._lease = self._api.replace_namespaced_lease(self.name, self.namespace, lease,
                                                             _request_timeout=self._timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            # 409: someone else wrote the lease meanwhile, so it is not ours to release any more.
            return self._failed("release", exc)
        log.info("lease released", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        return True

    async def run(self, stop_event: asyncio.Event, on_started: Callable[[], Any],
                  on_stopped: Callable[[], Any]) -> None:
        """Try to acquire, then renew, every retry period until ``stop_event`` is set.

        ``on_started``/``on_stopped`` (plain or async callables) are called when this replica
        becomes leader and when it stops being leader, including on stop, after releasing the lease.
        """
        leading = False
        attempt: asyncio.Future | None = None
        try:
            while not stop_event.is_set():
                attempt = asyncio.ensure_future(asyncio.to_thread(self.try_acquire_or_renew))
                # Leadership can end while an attempt hangs (renew deadline): notice it on time.
                while not attempt.done():
                    await asyncio.wait({attempt}, timeout=self.retry_period)
                    if leading and not self.is_leader:
                        leading = False
                        await _call(on_stopped)
                await attempt
                if self.is_leader != leading:
                    leading = self.is_leader
                    await _call(on_started if leading else on_stopped)
                pause = self.retry_period if leading else self.retry_period * (1 + random.random() * JITTER)
                try:
                    await asyncio.wait_for(stop_event.wait(), timeout=pause)
                except TimeoutError:
                    pass
        finally:
            if attempt is not None and not attempt.done():
                await asyncio.wait({attempt})  # cancelled mid-attempt: let its thread finish first
            if self.is_leader:
                await asyncio.to_thread(self.release)
            if leading:
                await _call(on_stopped)


async def _call(callback: Callable[[], Any]) -> None:
    result = callback()
    if inspect.isawaitable(result):
        await result


def _micro_time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return str(exc.reason or exc.status)
    return one_line(exc)
