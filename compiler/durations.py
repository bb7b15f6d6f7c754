"""Go-style durations ("1.5s", "100ms", "1h30m") as written in Istio objects."""
from __future__ import annotations

import re

from google.protobuf import duration_pb2

_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_NANOS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1}


def nanoseconds(text: str) -> int:
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 5s, 100ms or 1h30m")
    return round(sum(float(number) * _NANOS[unit] for number, unit in parts))


def duration(text: str) -> duration_pb2.Duration:
    nanos = nanoseconds(text)
    return duration_pb2.Duration(seconds=nanos // 10**9, nanos=nanos % 10**9)
