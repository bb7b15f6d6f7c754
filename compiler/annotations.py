"""Istio's annotations: which there are, what they go on, how mature they are, and which values Istio
accepts for those whose values it checks.

Istio's analyzers know an annotation by istio/api's registry (annotation/annotations.yaml, which
istio/api generates ``annotation.AllResourceAnnotations()`` from); Galleon's copy of its facts is
``REGISTRY`` below, written from a reading of that file at istio/api commit
b8f8791d9653b2edc77a071d48887e582cfe84bf (annotations last changed in 66634fdd, July 2026), the
registry istio/istio 1.31 (commit 86c9f01f) analyzes with. Which values Istio checks, and how, is
istio/istio's pkg/kube/inject/validate.go (``AnnotationValidation``), read at that same commit:
``VALIDATORS`` below.

To refresh: ``python -m compiler.annotations PATH/TO/istio-api/annotation/annotations.yaml`` prints
what the registry there says that ``REGISTRY`` does not (annotations added, removed or changed), as
rows of ``REGISTRY``; edit the table by hand to match, and name the new commit above. A new entry in
Istio's ``AnnotationValidation`` needs a validator here (read pkg/kube/inject/validate.go).
"""
from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Callable

ALPHA, BETA, STABLE = "Alpha", "Beta", "Stable"
ANY = "Any"  # an annotation of any kind of resource


@dataclass(frozen=True)
class Annotation:
    name: str
    resources: tuple[str, ...]  # the kinds it goes on, in Istio's order (its messages list them so)
    status: str  # ALPHA, BETA or STABLE (an entry that gives none is Alpha, as Istio's generated code has it)
    deprecated: bool = False


def _rows(status: str, deprecated: bool, rows: str) -> list[Annotation]:
    """``NAME KIND[,KIND...]`` per line."""
    out = []
    for line in rows.strip().splitlines():
        name, kinds = line.split()
        out.append(Annotation(name, tuple(kinds.split(",")), status, deprecated))
    return out


REGISTRY: dict[str, Annotation] = {a.name: a for a in [
    *_rows(ALPHA, False, """
        ambient.istio.io/bypass-inbound-capture                 Pod
        ambient.istio.io/dns-capture                            Pod
        ambient.istio.io/waypoint-inbound-binding               GatewayClass,Gateway
        galley.istio.io/analyze-suppress                        Any
        gateway.istio.io/controller-version                     Any
        gateway.istio.io/name-override                          Gateway
        gateway.istio.io/service-account                        Gateway
        inject.istio.io/templates                               Pod
        istio.io/autoRegistrationGroup                          WorkloadEntry
        istio.io/connectedAt                                    WorkloadEntry
        istio.io/disconnectedAt                                 WorkloadEntry
        istio.io/dry-run                                        AuthorizationPolicy
        istio.io/reroute-virtual-interfaces                     Pod
        istio.io/rev                                            Pod
        istio.io/use-waypoint-canary-weight                     Service,ServiceEntry,Namespace
        istio.io/workloadController                             WorkloadEntry
        networking.istio.io/exportTo                            Service
        networking.istio.io/service-type                        Gateway
        networking.istio.io/traffic-distribution                Namespace,Service,ServiceEntry
        prometheus.istio.io/merge-metrics                       Pod
        proxy.istio.io/overrides                                Pod
        readiness.status.sidecar.istio.io/applicationPorts      Pod
        readiness.status.sidecar.istio.io/failureThreshold      Pod
        readiness.status.sidecar.istio.io/initialDelaySeconds   Pod
        readiness.status.sidecar.istio.io/periodSeconds         Pod
        sidecar.istio.io/agentLogLevel                          Pod
        sidecar.istio.io/bootstrapOverride                      Pod
        sidecar.istio.io/componentLogLevel                      Pod
        sidecar.istio.io/interceptionMode                       Pod
        sidecar.istio.io/logLevel                               Pod
        sidecar.istio.io/nativeSidecar                          Pod
        sidecar.istio.io/proxyCPU                               Pod
        sidecar.istio.io/proxyCPULimit                          Pod
        sidecar.istio.io/proxyImage                             Pod
        sidecar.istio.io/proxyImageType                         Pod
        sidecar.istio.io/proxyMemory                            Pod
        sidecar.istio.io/proxyMemoryLimit                       Pod
        sidecar.istio.io/rewriteAppHTTPProbers                  Pod
        sidecar.istio.io/statsEvictionInterval                  Pod
        sidecar.istio.io/statsFlushInterval                     Pod
        sidecar.istio.io/statsHistogramBins                     Pod
        sidecar.istio.io/statsHistogramBuckets                  Pod
        sidecar.istio.io/status                                 Pod
        sidecar.istio.io/userVolume                             Pod
        sidecar.istio.io/userVolumeMount                        Pod
        status.sidecar.istio.io/port                            Pod
        topology.istio.io/controlPlaneClusters                  Namespace
        traffic.sidecar.istio.io/excludeInboundPorts            Pod
        traffic.sidecar.istio.io/excludeInterfaces              Pod
        traffic.sidecar.istio.io/excludeOutboundIPRanges        Pod
        traffic.sidecar.istio.io/excludeOutboundPorts           Pod
        traffic.sidecar.istio.io/includeInboundPorts            Pod
        traffic.sidecar.istio.io/includeOutboundIPRanges        Pod
        traffic.sidecar.istio.io/includeOutboundPorts           Pod
        """),
    *_rows(ALPHA, True, """
        alpha.istio.io/canonical-serviceaccounts                Service
        alpha.istio.io/kubernetes-serviceaccounts               Service
        sidecar.istio.io/discoveryAddress                       Pod
        sidecar.istio.io/extraStatTags                          Pod
        sidecar.istio.io/statsCompression                       Pod
        sidecar.istio.io/statsInclusionPrefixes                 Pod
        sidecar.istio.io/statsInclusionRegexps                  Pod
        sidecar.istio.io/statsInclusionSuffixes                 Pod
        traffic.sidecar.istio.io/kubevirtInterfaces             Pod
        """),
    *_rows(BETA, False, """
        ambient.istio.io/redirection                            Pod
        proxy.istio.io/config                                   Pod
        """),
    *_rows(BETA, True, """
        sidecar.istio.io/inject                                 Pod
        """),
    *_rows(STABLE, False, """
        kubernetes.io/ingress.class                             Ingress
        traffic.istio.io/nodeSelector                           Service
        """),
]}

# The one annotation outside Istio's domains that Istio documents, and so analyzes.
INGRESS_CLASS = "kubernetes.io/ingress.class"
SIDECAR_INJECT = "sidecar.istio.io/inject"  # deprecated as an annotation, in favour of the label of that name

# What to use instead of a deprecated annotation (Istio's words for sidecar.istio.io/inject are its
# analyzer's; the others follow the registry's descriptions and ProxyConfig's fields).
REPLACEMENTS = {
    SIDECAR_INJECT: 'the label sidecar.istio.io/inject ("true" or "false") on the pod',
    "traffic.sidecar.istio.io/kubevirtInterfaces": "the annotation istio.io/reroute-virtual-interfaces",
    "sidecar.istio.io/discoveryAddress": "discoveryAddress in the proxy.istio.io/config annotation",
    **{f"sidecar.istio.io/statsInclusion{what}": f"proxyStatsMatcher.inclusion{what} in the proxy.istio.io/config "
       "annotation" for what in ("Prefixes", "Suffixes", "Regexps")},
    "sidecar.istio.io/extraStatTags": "extraStatTags in the proxy.istio.io/config annotation",
    "sidecar.istio.io/statsCompression": "statsCompression (true or false) in the proxy.istio.io/config annotation",
}

# Set by Istio itself (the injector's status, the gateway controller's version, the revision): never
# reported, neither unknown, misplaced, deprecated nor alpha (Istio's maturity.AlwaysIgnoredAnnotations).
ALWAYS_IGNORED = frozenset({"sidecar.istio.io/status", "gateway.istio.io/controller-version", "istio.io/rev"})
# Alpha annotations Istio's CNI plugin sets on every pod it handles: not reported as alpha on a pod
# without an ``istio-init`` init container (Istio's maturity.conditionallyIgnoredAnnotations).
SET_BY_CNI = frozenset({"sidecar.istio.io/interceptionMode", "traffic.sidecar.istio.io/includeInboundPorts",
                        "traffic.sidecar.istio.io/excludeInboundPorts",
                        "traffic.sidecar.istio.io/includeOutboundIPRanges"})


def is_istios(name: str) -> bool:
    """Whether Istio's analyzers look at an annotation: one whose prefix (the part before the first
    ``/``, or the whole name) ends in ``istio.io`` (``sidecar.istio.io/x``, ``istio.io/x``, also
    ``notistio.io/x``: Istio compares the suffix only), and ``kubernetes.io/ingress.class``."""
    return name.split("/", 1)[0].endswith("istio.io") or name == INGRESS_CLASS


# ------------------------------------------------------------------------------------ values

def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DIGITS = re.compile(r"[0-9]+")


def parse_uint(text: str, bits: int) -> tuple[int | None, str | None]:
    """Go's strconv.ParseUint(text, 10, bits): plain decimal digits, no sign, no spaces."""
    if not _DIGITS.fullmatch(text):
        return None, f"strconv.ParseUint: parsing {_go_quote(text)}: invalid syntax"
    value = int(text)
    if value >= 1 << bits:
        return None, f"strconv.ParseUint: parsing {_go_quote(text)}: value out of range"
    return value, None


def _uint32(value: str) -> str | None:
    return parse_uint(value, 32)[1]


def _port(text: str) -> str | None:
    problem = parse_uint(text.strip(), 16)[1]
    return f"failed parsing port {text!r}: {problem}" if problem else None


def _ports(what: str, star: bool) -> Callable[[str], str | None]:
    """A comma-separated list of ports (spaces around each allowed; empty: none); ``*`` too if ``star``."""
    def check(value: str) -> str | None:
        if star and value == "*":
            return None
        if not value.strip():
            return None
        for part in value.strip().split(","):
            problem = _port(part)
            if problem:
                return f"{what} invalid: {problem}"
        return None
    return check


def _status_port(value: str) -> str | None:
    problem = _port(value)
    return f"excludeInboundPorts invalid: {problem}" if problem else None  # (Istio's words)


_BITS = re.compile(r"0|[1-9][0-9]*")


def prefix_error(text: str) -> str | None:
    """Go's netip.ParsePrefix: ADDRESS/BITS, no zone, BITS in plain decimal up to the address's size
    (host bits may be set)."""
    from .validate.syntax import is_ip  # (here: compiler.validate's analyzers import this module)
    address, slash, bits = text.rpartition("/")
    if not slash:
        return f"netip.ParsePrefix({_go_quote(text)}): no '/'"
    if "%" in address or not is_ip(address):
        return f"netip.ParsePrefix({_go_quote(text)}): bad address"
    if not _BITS.fullmatch(bits) or int(bits) > (128 if ":" in address else 32):
        return f"netip.ParsePrefix({_go_quote(text)}): bad bits after slash: {_go_quote(bits)}"
    return None


def _cidrs(what: str, star: bool) -> Callable[[str], str | None]:
    """A comma-separated list of CIDR blocks, exactly (no spaces); empty: none; ``*`` too if ``star``."""
    def check(value: str) -> str | None:
        if (star and value == "*") or not value:
            return None
        for cidr in value.split(","):
            problem = prefix_error(cidr)
            if problem:
                return f"{what} invalid: failed parsing cidr {cidr!r}: {problem}"
        return None
    return check


_INTERFACE = re.compile(r"[a-zA-Z][a-zA-Z0-9_.\-]*")


def _interfaces(value: str) -> str | None:
    """Network interface names, comma-separated (spaces around each allowed; empty: none)."""
    if not value:
        return None
    for name in value.split(","):
        name = name.strip()
        if not name:
            return "empty interface name"
        if len(name) > 15:
            return f"interface name {name!r} too long (max 15 chars)"
        if not _INTERFACE.fullmatch(name):
            return f"interface name {name!r} contains invalid characters"
    return None


_GO_BOOLS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})


def _bool(value: str) -> str | None:
    """Go's strconv.ParseBool."""
    return None if value in _GO_BOOLS else f"strconv.ParseBool: parsing {_go_quote(value)}: invalid syntax"


INTERCEPTION_MODES = ("REDIRECT", "TPROXY", "NONE")


def _interception_mode(value: str) -> str | None:
    if value in INTERCEPTION_MODES:
        return None
    return f"interceptionMode invalid, use REDIRECT,TPROXY,NONE: {value}"


# Kubernetes' resource quantities (k8s.io/apimachinery resource.ParseQuantity): a signed decimal number
# and a suffix: a binary or decimal SI one, or an exponent (e3, E-2).
_QUANTITY = re.compile(r"[+-]?[0-9]*(?:\.[0-9]*)?([eEinumkKMGTP]*[-+]?[0-9]*)")
_QUANTITY_SUFFIXES = frozenset({"", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"})
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)")
QUANTITY_FORMAT = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def quantity_error(value: str) -> str | None:
    """Why Kubernetes would not read ``value`` as a resource quantity (``500m``, ``1Gi``, ``2``,
    ``1e3``), or None."""
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "value contains control characters"
    match = _QUANTITY.fullmatch(value) if value else None
    if match is None:
        return QUANTITY_FORMAT
    suffix = match.group(1)
    if suffix in _QUANTITY_SUFFIXES:
        return None
    exponent = _EXPONENT.fullmatch(suffix)
    if exponent and -(1 << 63) <= int(exponent.group(1)) < 1 << 63:
        return None
    return "unable to parse quantity's suffix"


def _proxy_config(value: str) -> str | None:
    from .proxy_config import proxy_config_errors  # (a module of its own: ProxyConfig's fields and rules)
    problems = proxy_config_errors(value)
    return "; ".join(problems) if problems else None


# The annotations whose values Istio checks, and how (its inject.AnnotationValidation): each gives
# Istio's reason for a value it rejects, or None.
VALIDATORS: dict[str, Callable[[str], str | None]] = {
    "sidecar.istio.io/interceptionMode": _interception_mode,
    "status.sidecar.istio.io/port": _status_port,
    "readiness.status.sidecar.istio.io/initialDelaySeconds": _uint32,
    "readiness.status.sidecar.istio.io/periodSeconds": _uint32,
    "readiness.status.sidecar.istio.io/failureThreshold": _uint32,
    "traffic.sidecar.istio.io/includeOutboundIPRanges": _cidrs("includeIPRanges", star=True),
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": _cidrs("excludeIPRanges", star=False),
    "traffic.sidecar.istio.io/includeInboundPorts": _ports("includeInboundPorts", star=True),
    "traffic.sidecar.istio.io/excludeInboundPorts": _ports("excludeInboundPorts", star=False),
    "traffic.sidecar.istio.io/excludeOutboundPorts": _ports("excludeOutboundPorts", star=False),
    "traffic.sidecar.istio.io/excludeInterfaces": _interfaces,
    "traffic.sidecar.istio.io/kubevirtInterfaces": _interfaces,
    "istio.io/reroute-virtual-interfaces": _interfaces,
    "prometheus.istio.io/merge-metrics": _bool,
    "proxy.istio.io/config": _proxy_config,
    "sidecar.istio.io/proxyCPU": quantity_error,
    "sidecar.istio.io/proxyMemory": quantity_error,
    "sidecar.istio.io/proxyCPULimit": quantity_error,
    "sidecar.istio.io/proxyMemoryLimit": quantity_error,
}

# What each checked annotation takes, for the messages.
EXPECTED = {
    "sidecar.istio.io/interceptionMode": "REDIRECT, TPROXY or NONE",
    "status.sidecar.istio.io/port": "a port number",
    "readiness.status.sidecar.istio.io/initialDelaySeconds": "a whole number of seconds",
    "readiness.status.sidecar.istio.io/periodSeconds": "a whole number of seconds",
    "readiness.status.sidecar.istio.io/failureThreshold": "a whole number",
    "traffic.sidecar.istio.io/includeOutboundIPRanges": "'*' or comma-separated CIDR blocks (10.0.0.0/8,fd00::/8)",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": "comma-separated CIDR blocks (10.0.0.0/8,fd00::/8)",
    "traffic.sidecar.istio.io/includeInboundPorts": "'*' or comma-separated port numbers",
    "traffic.sidecar.istio.io/excludeInboundPorts": "comma-separated port numbers",
    "traffic.sidecar.istio.io/excludeOutboundPorts": "comma-separated port numbers",
    "traffic.sidecar.istio.io/excludeInterfaces": "comma-separated network interface names",
    "traffic.sidecar.istio.io/kubevirtInterfaces": "comma-separated network interface names",
    "istio.io/reroute-virtual-interfaces": "comma-separated network interface names",
    "prometheus.istio.io/merge-metrics": "true or false",
    "proxy.istio.io/config": "a ProxyConfig in YAML, as meshConfig.defaultConfig takes it",
    "sidecar.istio.io/proxyCPU": "a Kubernetes quantity (500m, 1)",
    "sidecar.istio.io/proxyMemory": "a Kubernetes quantity (128Mi, 1Gi)",
    "sidecar.istio.io/proxyCPULimit": "a Kubernetes quantity (500m, 1)",
    "sidecar.istio.io/proxyMemoryLimit": "a Kubernetes quantity (128Mi, 1Gi)",
}


# ------------------------------------------------------------------------------------ refresh

_RESOURCE_KINDS = frozenset({ANY, "AuthorizationPolicy", "Gateway", "GatewayClass", "Ingress", "Namespace", "Pod",
                             "Service", "ServiceEntry", "WorkloadEntry"})


def read_istio_registry(text: str) -> dict[str, Annotation]:
    """The facts of istio/api's annotation/annotations.yaml, as REGISTRY states them."""
    import yaml
    found = {}
    for entry in yaml.safe_load(text)["annotations"]:
        kinds = tuple(k for k in entry.get("resources") or () if k in _RESOURCE_KINDS)
        found[entry["name"]] = Annotation(entry["name"], kinds, entry.get("featureStatus") or ALPHA,
                                          bool(entry.get("deprecated")))
    return found


def registry_changes(theirs: dict[str, Annotation]) -> list[str]:
    """Lines saying how ``theirs`` differs from REGISTRY; none when they agree."""
    out = []
    for name in sorted(REGISTRY.keys() | theirs.keys()):
        ours, new = REGISTRY.get(name), theirs.get(name)
        if ours != new:
            out.append(f"- {ours}" if ours else "")
            out.append(f"+ {new}" if new else "")
    return [line for line in out if line]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m compiler.annotations PATH/TO/istio-api/annotation/annotations.yaml", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        changes = registry_changes(read_istio_registry(handle.read()))
    print("\n".join(changes) if changes else "REGISTRY agrees with it")
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
