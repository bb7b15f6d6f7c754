"""The xDS protocol for one stream, without gRPC: what a request means and what to send.

State of the world (SotW) and incremental (delta) follow Envoy's xDS protocol
document: per type, a subscription (wildcard or named), the version and nonce
last sent, the version the proxy ACKed. A NACK leaves the proxy on what it had
ACKed; the rejected version is recorded and never sent again (a later, different
version is). Stale nonces are ignored, as the protocol says.

What a stream keeps is its own and goes with it: its subscriptions (shared with the streams that
ask for the same, never kept beyond the last of them), and a few types it asks for that the server
does not serve.
"""
from __future__ import annotations

import itertools
import time
import weakref
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from compiler.xds_types import BY_URL

from . import wire
from .views import ServedView, delta_resources

# Types a stream may ask for that the server does not serve (it never answers them), kept for
# /debug/syncz; requests for more are ignored, so a stream naming ever new types holds no more.
UNKNOWN_TYPES = 8


def _wildcard(type_url: str) -> bool:
    """Envoy and gRPC subscribe to this type by wildcard (compiler/xds_types.py)."""
    known = BY_URL.get(type_url)
    return known is not None and known.wildcard


def _partial(type_url: str) -> bool:
    """A state-of-the-world response of this type may leave resources out (compiler/xds_types.py)."""
    known = BY_URL.get(type_url)
    return known is not None and known.partial

@dataclass
class Nack:
    version: str
    message: str
    at: float


@dataclass
class TypeState:
    wildcard: bool = False
    names: set[str] | frozenset[str] = field(default_factory=set)  # SotW: shared, frozen
    sent_version: str | None = None
    sent_nonce: str | None = None
    acked_version: str | None = None
    last_nack: Nack | None = None
    pushes: int = 0
    # SotW: rejected type versions. Delta: rejected (name, version) pairs.
    rejected: set = field(default_factory=set)
    # Delta only: what the proxy holds (name -> version, counting responses not yet answered), and
    # per unanswered nonce (system version, name -> (version before, version sent; None = absent)).
    held: dict[str, str] = field(default_factory=dict)
    pending: dict[str, tuple[str, dict[str, tuple[str | None, str | None]]]] = field(default_factory=dict)
    # Delta only: the view whose resources it holds (or will, once the responses in flight are applied),
    # each of its subscription at that view's version: a later view's response is then what changed
    # between the two (ServedView.since), not found by comparing each of its resources.
    in_step: ServedView | None = None
    # SotW endpoints and routes: what the proxy holds (or will, once the response in flight is applied)
    # and what it had ACKed, each as (the view it came from, the names asked for then); shared objects.
    holds: tuple[ServedView, frozenset[str]] | None = None
    acked: tuple[ServedView, frozenset[str]] | None = None

    def status(self) -> dict:
        return {
            "subscription": "*" if self.wildcard else sorted(self.names),
            "sent": self.sent_version, "nonce": self.sent_nonce, "acked": self.acked_version,
            "pushes": self.pushes,
            "last_nack": None if self.last_nack is None else {
                "version": self.last_nack.version, "error": self.last_nack.message,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_nack.at))},
        }


class Subscriptions:
    """One shared set per distinct subscription: a thousand Envoys of one view ask for the same
    thousand endpoint names on every ACK, and each would otherwise keep its own copy. Held weakly: a
    subscription no stream holds any more is gone, however many names it had.

    With each set, a request listing its names as they were first asked for: a proxy ACKing lists its
    subscription again, in the same order, and comparing its request with that one (protobuf's own
    comparison, in C) costs a small fraction of making and hashing a set of thousands of names on
    every ACK (``asks_again``)."""

    def __init__(self) -> None:
        self._sets: weakref.WeakKeyDictionary[frozenset[str], weakref.ref] = weakref.WeakKeyDictionary()
        self._listings: weakref.WeakKeyDictionary[frozenset[str], discovery_pb2.DiscoveryRequest] = \
            weakref.WeakKeyDictionary()

    def of(self, names: frozenset[str], request: discovery_pb2.DiscoveryRequest) -> frozenset[str]:
        """The set equal to ``names`` that streams hold already, else ``names`` itself, from now on shared
        (``request``: the request that asks for them)."""
        held = self._sets.get(names)
        found = held() if held is not None else None
        if found is None:
            self._sets[names] = weakref.ref(names)
            listing = self._listings[names] = discovery_pb2.DiscoveryRequest()
            listing.resource_names.extend(request.resource_names)
            return names
        return found

    def asks_again(self, names: frozenset[str], request: discovery_pb2.DiscoveryRequest) -> bool:
        """Whether ``request`` (an ACK, mostly) lists exactly the names ``names`` was first asked for with,
        in that order, and says nothing else but its type, version and nonce."""
        listing = self._listings.get(names)
        if listing is None:
            return False
        listing.type_url, listing.version_info = request.type_url, request.version_info
        listing.response_nonce = request.response_nonce
        return listing == request

    def __len__(self) -> int:
        return len(self._sets)


class Stream:
    """Shared by both flavours: per-type state."""

    def __init__(self) -> None:
        self.types: dict[str, TypeState] = {}

    def _state(self, type_url: str) -> TypeState | None:
        """The state of a type, new if need be; None for one more type the server does not serve."""
        state = self.types.get(type_url)
        if state is None:
            if type_url not in BY_URL and sum(t not in BY_URL for t in self.types) >= UNKNOWN_TYPES:
                return None
            state = self.types[type_url] = TypeState()
        return state

    def close(self) -> None:
        """Let go of what the stream holds (its subscriptions, the views it was sent) as it ends, though
        something may still hold the stream."""
        self.types.clear()

    def subscribed(self, type_url: str) -> bool:
        return type_url in self.types

    def status(self) -> dict:
        return {type_url: state.status() for type_url, state in sorted(self.types.items())}


class SotwStream(Stream):
    def __init__(self, subscriptions: Subscriptions | None = None) -> None:
        super().__init__()
        self.subscriptions = Subscriptions() if subscriptions is None else subscriptions

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> tuple[bool, Nack | None]:
        """Apply a request; returns (whether it is current, not stale; the NACK it carried)."""
        first = request.type_url not in self.types
        state = self._state(request.type_url)
        if state is None:
            return False, None
        nack = None
        if request.response_nonce and not first:
            if request.response_nonce != state.sent_nonce:
                return False, None  # answers an older response; a newer one is on its way
            if request.HasField("error_detail"):
                nack = state.last_nack = Nack(state.sent_version or "", request.error_detail.message, time.time())
                state.rejected.add(state.sent_version)
                state.holds = state.acked
            else:
                state.acked_version = request.version_info
                state.acked = state.holds
        elif first and request.version_info:  # (with a nonce from its previous stream, or none)
            # A proxy reconnecting (to us or to a restarted server) says what it holds; versions are
            # content hashes, so if that is still current there is nothing to send.
            state.sent_version = state.acked_version = request.version_info
        if not first and isinstance(state.names, frozenset) and self.subscriptions.asks_again(state.names, request):
            return True, nack  # the subscription it had
        asked = frozenset(request.resource_names)
        names = self.subscriptions.of(asked - {"*"} if "*" in asked else asked, request)
        if "*" in asked:
            state.wildcard = True
        elif first:
            state.wildcard = _wildcard(request.type_url) and not names
        elif names:
            state.wildcard = False
        state.names = names
        return True, nack

    def respond(self, type_url: str, served: ServedView) -> bytes | None:
        """The response that brings the proxy up to date for one type, or None when it is.

        Clusters and listeners are sent whole (leaving one out deletes it). Endpoints and routes a
        proxy already holds are left out: in state of the world, leaving those out keeps them
        (Envoy and gRPC alike), so a moved endpoint costs one assignment, not the view's all.
        """
        state = self.types[type_url]
        names = None if state.wildcard else state.names
        version = served.type_version(type_url, names)
        if version == state.sent_version or version in state.rejected:
            return None
        partial = _partial(type_url) and names is not None
        if partial and state.holds is not None:
            version, nonce, response = served.sotw_update(type_url, names, *state.holds)
        else:
            version, nonce, response = served.sotw(type_url, names)
        if partial:
            state.holds = (served, names)
        if response is None:
            # It holds all it asks for (say it dropped a name): nothing to send, nothing to ACK.
            state.sent_version = state.acked_version = version
            state.acked = state.holds
            return None
        state.sent_version, state.sent_nonce = version, nonce
        state.pushes += 1
        return response


class DeltaStream(Stream):
    """Responses differ per stream here, so nonces are the stream's own (SotW's come with the views')."""

    def __init__(self) -> None:
        super().__init__()
        self._nonces = itertools.count(1)

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> tuple[bool, Nack | None]:
        first = request.type_url not in self.types
        state = self._state(request.type_url)
        if state is None:
            return False, None
        nack = None
        if request.response_nonce:
            answered = state.pending.pop(request.response_nonce, None)
            if answered is not None:
                system_version, changes = answered
                if request.HasField("error_detail"):
                    nack = state.last_nack = Nack(system_version, request.error_detail.message, time.time())
                    for name, (before, sent) in changes.items():
                        if before is None:
                            state.held.pop(name, None)
                        else:
                            state.held[name] = before
                        if sent is not None:
                            state.rejected.add((name, sent))
                else:
                    state.acked_version = system_version
        if first or nack is not None or request.resource_names_subscribe or request.resource_names_unsubscribe:
            state.in_step = None
        subscribe = set(request.resource_names_subscribe)
        if first:
            state.held.update(request.initial_resource_versions)
            state.wildcard = "*" in subscribe or (_wildcard(request.type_url) and not subscribe)
        elif "*" in subscribe:
            state.wildcard = True
        subscribe.discard("*")
        state.names |= subscribe
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
                # The proxy drops what only the wildcard brought; a later "*" must send it again.
                for held in [n for n in state.held if n not in state.names]:
                    del state.held[held]
            else:
                state.names.discard(name)
                state.held.pop(name, None)  # the proxy drops it; resubscribing must send it again
        return True, nack

    def respond(self, type_url: str, served: ServedView) -> bytes | None:
        state = self.types[type_url]
        current = served.resources.get(type_url, {})
        base = state.in_step
        if base is not None:
            differ, gone = served.since(type_url, base) if base is not served else ((), ())
            candidates = [current[n] for n in differ if state.wildcard or n in state.names]
            removed = [n for n in gone if n in state.held]
        else:
            wanted = current if state.wildcard else {n: current[n] for n in sorted(state.names) if n in current}
            candidates = [r for n, r in wanted.items() if state.held.get(n) != r.version]
            removed = sorted(n for n in state.held if n not in current and (state.wildcard or n in state.names))
        changed = [r for r in candidates if (r.name, r.version) not in state.rejected]
        # A version it rejected is not sent again: it then holds another than this view's.
        state.in_step = served if len(changed) == len(candidates) else None
        if not changed and not removed:
            return None
        nonce = str(next(self._nonces))
        changes: dict[str, tuple[str | None, str | None]] = {}
        for resource in changed:
            changes[resource.name] = (state.held.get(resource.name), resource.version)
            state.held[resource.name] = resource.version
        for name in removed:
            changes[name] = (state.held.pop(name), None)
        system_version = served.versions[type_url]
        state.pending[nonce] = (system_version, changes)
        state.sent_version, state.sent_nonce = system_version, nonce
        state.pushes += 1
        if len(changed) == len(current) and not removed:  # all of them, as every first response of a view
            return wire.delta_response(served.delta_all(type_url), nonce, [])
        return wire.delta_response(wire.delta_body(system_version, delta_resources(type_url, changed), type_url),
                                   nonce, removed)
