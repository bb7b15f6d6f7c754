"""What changed in one proxy view's Envoy configuration between two revisions.

Resources are compared without their provenance (the source file, line and revision every
resource carries), so a commit that only moves or reformats YAML changes nothing here. Changes
read like ``lb_policy: LEAST_REQUEST → ROUND_ROBIN`` (fields named as in Envoy's API), and an
assignment's endpoints as ``+ 10.2.0.7:9080 (us-east/us-east-1b, weight 1)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..cache import serialize
from ..provenance import FILTER
from ..xds import CompiledView
from ..xds_types import ENDPOINTS, TYPES, XdsType
from .fields import MISSING, FieldChange, diff_values

_METADATA = "envoy.config.core.v3.Metadata"
_OPAQUE = {"google.protobuf.Struct", "google.protobuf.Any", "google.protobuf.Value"}


@dataclass(frozen=True)
class ResourceChange:
    """``lines`` are for people; ``fields`` (for changed resources) for tools."""

    kind: str  # cluster, endpoints, listener, route
    name: str
    action: str  # added, removed, changed
    lines: tuple[str, ...] = ()
    fields: tuple[FieldChange, ...] = ()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "action": self.action, "lines": list(self.lines),
                "fields": [f.to_dict(named=True) for f in self.fields]}


def diff_views(base: CompiledView | None, head: CompiledView | None,
               gateways: Mapping[str, str] | None = None) -> list[ResourceChange]:
    """Changes from ``base`` to ``head`` in push order, then by name. A missing side (the view does
    not exist at that revision) counts as empty. ``gateways`` names the network of a gateway address."""
    changes = []
    for xds_type in TYPES:
        old = base.resources[xds_type.url] if base else {}
        new = head.resources[xds_type.url] if head else {}
        for name in sorted(old.keys() | new.keys()):
            before, after = old.get(name), new.get(name)
            if before is None or after is None:
                changes.append(ResourceChange(xds_type.kind, name, "added" if before is None else "removed"))
                continue
            if before.version == after.version:  # the same content and sources (the revision aside)
                continue
            parse = xds_type.message.FromString
            stripped_before, stripped_after = without_provenance(parse(before.data)), without_provenance(parse(after.data))
            if serialize(stripped_before) == serialize(stripped_after):
                continue
            changes.append(_changed(xds_type, name, stripped_before, stripped_after, gateways or {}))
    return changes


def without_provenance(message: Message) -> Message:
    """A copy of ``message`` with the ``galleon`` metadata removed wherever it is."""
    copy = type(message)()
    copy.CopyFrom(message)
    _strip(copy)
    return copy


def _strip(message: Message) -> None:
    if message.DESCRIPTOR.full_name == _METADATA:
        if FILTER in message.filter_metadata:
            del message.filter_metadata[FILTER]
        return
    for fd, value in message.ListFields():
        if fd.type != FieldDescriptor.TYPE_MESSAGE or fd.message_type.full_name in _OPAQUE:
            continue
        if fd.message_type.GetOptions().map_entry:
            values = value.values() if fd.message_type.fields_by_name["value"].message_type else ()
        else:
            values = value if fd.is_repeated else (value,)
        for item in values:
            if isinstance(item, Message):
                _strip(item)


def _as_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _changed(xds_type: XdsType, name: str, before: Message, after: Message,
             gateways: Mapping[str, str]) -> ResourceChange:
    lines: list[str] = []
    old, new = _as_dict(before), _as_dict(after)
    if xds_type is ENDPOINTS:
        lines += endpoint_lines(before, after, gateways)
        old.pop("endpoints", None)
        new.pop("endpoints", None)
    fields = tuple(_with_default(change, after.DESCRIPTOR) for change in diff_values(old, new, named=True))
    lines += [change.text(named=True) for change in fields]
    return ResourceChange(xds_type.kind, name, "changed", tuple(lines), fields)


def _with_default(change: FieldChange, descriptor) -> FieldChange:
    """proto3 JSON leaves out scalars at their default (ROUND_ROBIN is 0): name the default instead
    of calling the field added or removed."""
    if change.old is not MISSING and change.new is not MISSING:
        return change
    default = _default(descriptor, change.path)
    if default is MISSING:
        return change
    return FieldChange(change.path, default if change.old is MISSING else change.old,
                       default if change.new is MISSING else change.new)


def _default(descriptor, path) -> object:
    fd = None
    for step in path:
        if isinstance(step, int) or step.startswith("="):
            continue  # an element of the repeated field just walked
        if fd is not None:
            if fd.message_type is None:
                return MISSING
            descriptor = fd.message_type
            if descriptor.GetOptions().map_entry:
                descriptor, fd = descriptor.fields_by_name["value"].message_type, None
                if descriptor is None:
                    return MISSING
                continue
        fd = descriptor.fields_by_name.get(step)
        if fd is None:
            return MISSING
    if fd is None or fd.message_type is not None or fd.is_repeated or fd.has_presence:
        return MISSING
    if fd.enum_type is not None:
        return fd.enum_type.values_by_number[0].name
    return fd.default_value


def _locality(locality) -> str:
    return "/".join(filter(None, (locality.region, locality.zone, locality.sub_zone))) or "no locality"


def _endpoints(assignment: Message, gateways: Mapping[str, str]) -> tuple[dict, dict]:
    """(address → (locality, text), locality → (priority, weight)) of an assignment."""
    targets, groups = {}, {}
    for group in assignment.endpoints:
        where = _locality(group.locality)
        groups[where] = (group.priority, group.load_balancing_weight.value)
        for lb in group.lb_endpoints:
            socket = lb.endpoint.address.socket_address
            address = f"{socket.address}:{socket.port_value}"
            via = gateways.get(socket.address)
            role = f", {via} gateway" if via else ""
            targets[address] = (where, lb.load_balancing_weight.value or 1, role)
    return targets, groups


def endpoint_lines(before: Message, after: Message, gateways: Mapping[str, str]) -> list[str]:
    old_targets, old_groups = _endpoints(before, gateways)
    new_targets, new_groups = _endpoints(after, gateways)
    lines = []
    for address in sorted(old_targets.keys() | new_targets.keys()):
        old, new = old_targets.get(address), new_targets.get(address)
        if old == new:
            continue
        if old is None:
            lines.append(f"+ {address} ({new[0]}, weight {new[1]}{new[2]})")
        elif new is None:
            lines.append(f"- {address} ({old[0]}, weight {old[1]}{old[2]})")
        else:
            moves = [f"{what} {a} → {b}" for what, a, b in (("locality", old[0], new[0]), ("weight", old[1], new[1]))
                     if a != b]
            lines.append(f"~ {address}{new[2]}: " + ", ".join(moves))
    for where in sorted(old_groups.keys() & new_groups.keys()):
        (p0, w0), (p1, w1) = old_groups[where], new_groups[where]
        moves = [f"{what} {a} → {b}" for what, a, b in (("priority", p0, p1), ("weight", w0, w1)) if a != b]
        if moves:
            lines.append(f"locality {where}: " + ", ".join(moves))
    return lines

