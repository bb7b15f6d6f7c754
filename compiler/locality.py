"""Istio localities (``region/zone/subzone``) and the patterns that match them."""
from __future__ import annotations

from typing import NamedTuple


class Locality(NamedTuple):
    """A tuple, so that comparing, sorting and hashing (the hot path of EDS) run in C."""

    region: str = ""
    zone: str = ""
    subzone: str = ""

    @staticmethod
    def parse(text: str | None) -> "Locality":
        parts = (text or "").strip("/").split("/") if text else []
        return Locality(*(parts + ["", "", ""])[:3])

    def __str__(self) -> str:
        # Istio's written form, not the tuple's "('us-east', ...)"
        return "/".join(p for p in (self.region, self.zone, self.subzone) if p) or ""

    def matches(self, pattern: str) -> bool:
        """Istio's rule: ``region[/zone[/subzone]]``, ``*`` matches anything, missing parts match all."""
        parts = pattern.split("/")
        mine = (self.region, self.zone, self.subzone)
        return all(want == "*" or want == have for want, have in zip(parts, mine))

    def priority_from(self, proxy: "Locality") -> int:
        """Istio's locality distance: 0 same subzone, 1 same zone, 2 same region, 3 elsewhere."""
        if self.region != proxy.region:
            return 3
        if self.zone != proxy.zone:
            return 2
        if self.subzone != proxy.subzone:
            return 1
        return 0
