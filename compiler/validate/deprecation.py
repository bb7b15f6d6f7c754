"""IST0002: deprecated fields of the kinds Galleon reads, where Istio flags them.

Istio's deprecation analyzer flags a VirtualService's ``fault.delay.percent`` and a Sidecar's
``outboundTrafficPolicy.egressProxy``; its webhook warns about three more deprecated fields, which
``istioctl analyze`` shows as a schema warning (IST0133) and Galleon as IST0002 too: a
VirtualService's ``mirrorPercent``, and a DestinationRule's top-level ``outlierDetection.consecutiveErrors``
and ``consistentHash.minimumRingSize``. Istio drops those two warnings for subset and port-level
policies (validateSubset and validatePortTrafficPolicies keep errors only), and so does Galleon.
Other fields the CRDs call deprecated (``warmupDurationSecs``) Istio does not warn about, nor Galleon.
"""
from __future__ import annotations

from ..findings import Level
from .framework import analyzer
from .index import Index


def _virtual_service(vs):
    for i, rule in enumerate(vs.spec.get("http") or []):
        delay = (rule.get("fault") or {}).get("delay")
        percent = delay.get("percent") if isinstance(delay, dict) else None
        if isinstance(percent, (int, float)) and not isinstance(percent, bool) and percent > 0:
            yield ("spec", "http", i, "fault", "delay", "percent"), (
                "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage "
                f"(percent: {percent!r} is percentage: {{value: {percent!r}}})")
        # The webhook warns whenever the field is set, 0 included (a wrapped integer).
        for field in ("mirrorPercent", "mirror_percent"):
            if rule.get(field) is not None:
                yield ("spec", "http", i, field), (
                    f'Deprecated: using deprecated setting "mirrorPercent" ({field}: {rule[field]!r}), use '
                    f'"mirrorPercentage" instead (mirrorPercentage: {{value: {rule[field]!r}}})')


def _sidecar(sidecar):
    policy = sidecar.spec.get("outboundTrafficPolicy")
    if isinstance(policy, dict) and policy.get("egressProxy") is not None:
        yield ("spec", "outboundTrafficPolicy", "egressProxy"), (
            "Deprecated: OutboundTrafficPolicy.EgressProxy ignored; remove egressProxy "
            "(Galleon does not send outbound traffic to it either)")


def _destination_rule(dr):
    policy = dr.spec.get("trafficPolicy")
    # Istio's validateTrafficPolicy returns before its warnings when the policy is empty, or has both
    # tunnel and proxyProtocol (an error alone).
    if not isinstance(policy, dict) or not policy or ("tunnel" in policy and "proxyProtocol" in policy):
        return
    errors = (policy.get("outlierDetection") or {}).get("consecutiveErrors")
    if errors:
        yield ("spec", "trafficPolicy", "outlierDetection", "consecutiveErrors"), (
            f"Deprecated: outlier detection consecutive errors (consecutiveErrors: {errors!r}) is deprecated, use "
            "consecutiveGatewayErrors or consecutive5xxErrors instead")
    ring = ((policy.get("loadBalancer") or {}).get("consistentHash") or {}).get("minimumRingSize")
    if ring:
        yield ("spec", "trafficPolicy", "loadBalancer", "consistentHash", "minimumRingSize"), (
            f"Deprecated: consistent hash MinimumRingSize (minimumRingSize: {ring!r}) is deprecated, use "
            "ConsistentHashLB's RingHash configuration instead (ringHash: {minimumRingSize: ...})")


_CHECKS = {"VirtualService": _virtual_service, "Sidecar": _sidecar, "DestinationRule": _destination_rule}


@analyzer("deprecated-field", "IST0002", Level.WARNING,
          "a deprecated field Istio warns about: fault.delay.percent, mirrorPercent, Sidecar egressProxy, "
          "DestinationRule consecutiveErrors or minimumRingSize",
          local=(), kinds=tuple(_CHECKS))
def deprecated_field(index: Index):
    for kind, check in _CHECKS.items():
        for obj in index.by_kind[kind]:
            for path, message in check(obj):
                yield obj, path, message
