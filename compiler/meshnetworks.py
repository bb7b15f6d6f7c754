"""MeshNetworks fields in either of the spellings Istio reads.

Istio reads its meshNetworks file with protobuf JSON, which takes a field by its JSON name
(``fromRegistry``) or by its proto name (``from_registry``); when both are written, the JSON name
is read last and wins. Istio's own samples and test data use both (``registry_service_name``).
Everything that reads a MeshNetworks (the model, the analyzers) reads its fields through here.
"""
from __future__ import annotations

from typing import Any, Mapping

# A field's JSON name -> its proto name.
SPELLINGS = {"fromCidr": "from_cidr", "fromRegistry": "from_registry", "registryServiceName": "registry_service_name"}
_PROTO_NAMES = frozenset(SPELLINGS.values())


def key(item: Mapping[str, Any], name: str) -> str | None:
    """The key ``item`` gives field ``name`` (a JSON name) under: the JSON name when written, else the
    proto name when written, else None."""
    if name in item:
        return name
    proto = SPELLINGS.get(name)
    return proto if proto is not None and proto in item else None


def get(item: Mapping[str, Any], name: str) -> Any:
    """Field ``name`` (its JSON name) of ``item`` in either spelling, the JSON name winning; None when
    absent."""
    found = key(item, name)
    return item[found] if found is not None else None


def normalized(item: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` (a network endpoint or gateway) with every field under its JSON name, as Istio reads it."""
    out = {name: value for name, value in item.items() if name not in _PROTO_NAMES}
    for name in SPELLINGS:
        written = key(item, name)
        if written is not None:
            out[name] = item[written]
    return out


def networks(spec: Mapping[str, Any]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """A MeshNetworks spec's networks, by name, each with its ``endpoints`` and ``gateways`` normalized."""
    return {name: {"endpoints": [normalized(e) for e in network.get("endpoints") or ()],
                   "gateways": [normalized(g) for g in network.get("gateways") or ()]}
            for name, network in (spec.get("networks") or {}).items()}
