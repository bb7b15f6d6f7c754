"""Checks on VirtualServices that route on a JWT's claims (Istio's virtualservice.JWTClaimRouteAnalyzer).

A route may match the claims of a request's JWT as if they were headers: a match's ``headers`` or
``withoutHeaders`` key ``@request.auth.claims.NAME`` (nested claims ``.a.b``) or
``@request.auth.claims[NAME]`` (``[a][b]``, for names holding dots), as Istio's jwt.ToRoutingClaim
reads it. A proxy has the claims only once it has validated the token, which a RequestAuthentication
applying to it asks for: so every gateway pod such a VirtualService is bound to needs one, of the
pod's namespace or of the root namespace (istio-system), whose ``selector.matchLabels`` its labels
carry (no selector: every workload there). A RequestAuthentication that names ``targetRef(s)``
instead of a selector counts as applying to every workload there, as Istio's analyzer counts it (it
reads the selector alone): Galleon does not resolve policy targets, and this gives no false error.

The gateway pods are what the Gateway's selector picks among the repository's workloads (a workload
manifest's pods, a WorkloadEntry; not the endpoints a ServiceEntry writes, which are addresses, not
proxies), else Istio's default ingress gateway, which validation assumes as istioctl analyze does
offline (assumed.py). Only Istio Gateways are looked at, as by Istio's analyzer; a Gateway that does not
exist is gateway-not-found's. A repository that holds RequestAuthentications manages its security
policy: a gateway pod none applies to is an error, Istio's level. One that holds none may leave it
to another repository or to the cluster's operators: the same finding is then a warning, saying so.
"""
from __future__ import annotations

import weakref
from collections import defaultdict
from typing import Iterator, Mapping

from ..findings import Level
from ..kinds import REQUEST_AUTHENTICATION
from ..model import ROOT_NAMESPACE
from ..parse import Path, SourceObject
from .assumed import shown
from .framework import analyzer
from .index import Index
from .references import INTERNAL_GATEWAY_MARK, gateway_key

CODE = "IST0149"
# The header name a route matches a JWT claim by (Istio's jwt.HeaderJWTClaim), any case
CLAIM_HEADER = "@request.auth.claims"
SHOWN_PODS = 5  # the gateway pods a finding names, at most


def routing_claim(key: str) -> tuple[str, ...] | None:
    """The claim a match's header key names, as Istio's jwt.ToRoutingClaim reads it: ``.a.b`` after the
    prefix (``@request.auth.claims``, any case) is the nested claim (a, b), ``[a][b]`` too; None when the
    key names no claim (the bare prefix, ``.`` or ``[]`` with nothing in it, any other header)."""
    if key[:len(CLAIM_HEADER)].lower() != CLAIM_HEADER:
        return None
    rest = key[len(CLAIM_HEADER):]
    if rest.startswith(".") and len(rest) > 1:
        return tuple(rest[1:].split("."))
    if rest.startswith("[") and rest.endswith("]") and len(rest) > 2:
        return tuple(rest[1:-1].split("]["))
    return None


def claim_route(vs: SourceObject) -> tuple[str, Path] | None:
    """The first header key of a VirtualService's HTTP matches that names a JWT claim, with its path;
    None when it routes on none. Read once per object (every revision that shares it asks)."""
    if vs not in _claim_routes:
        _claim_routes[vs] = next(_claim_keys(vs), None)
    return _claim_routes[vs]


_claim_routes: "weakref.WeakKeyDictionary[SourceObject, tuple[str, Path] | None]" = weakref.WeakKeyDictionary()


def _claim_keys(vs: SourceObject) -> Iterator[tuple[str, Path]]:
    for i, rule in enumerate(vs.spec.get("http", ())):
        for j, match in enumerate(rule.get("match") or ()):
            for field in ("headers", "withoutHeaders"):
                for key in match.get(field) or ():
                    if routing_claim(key) is not None:
                        yield key, ("spec", "http", i, "match", j, field, key)


def _selector(ra: SourceObject) -> Mapping[str, str]:
    """The labels a RequestAuthentication's workloads carry: its selector's matchLabels; {} (every
    workload of its namespace) when it has none, or names policy targets instead."""
    return (ra.spec.get("selector") or {}).get("matchLabels") or {}


def _named(obj: SourceObject) -> str:
    return shown(obj, f"{obj.kind} {obj.namespace}/{obj.name}")


def _listed(objects: list[SourceObject]) -> str:
    names = sorted({_named(obj) for obj in objects})
    return ", ".join(names[:SHOWN_PODS]) + (f" and {len(names) - SHOWN_PODS} more" if len(names) > SHOWN_PODS else "")


def _without_request_authentication(index: Index, known: bool) -> Iterator[tuple[SourceObject, Path, str]]:
    """Each binding of a VirtualService routing on a JWT claim to an Istio Gateway some of whose pods no
    RequestAuthentication applies to: in a repository that holds RequestAuthentications (``known``), or
    in one that holds none."""
    routes = [(vs, found) for vs in index.by_kind["VirtualService"] if (found := claim_route(vs)) is not None]
    authentications = index.by_kind[REQUEST_AUTHENTICATION]
    if not routes or bool(authentications) != known:
        return
    selectors: dict[str, list[Mapping[str, str]]] = defaultdict(list)
    for ra in authentications:
        selectors[ra.namespace].append(_selector(ra))
    proxies = [(obj, labels) for obj, labels in index.workloads() if obj.kind != "ServiceEntry"]
    uncovered: dict[str, list[SourceObject]] = {}  # a Gateway's pods no RequestAuthentication applies to

    def lacking(gw: SourceObject) -> list[SourceObject]:
        wanted = (gw.spec.get("selector") or {}).items()  # none: every workload, as Istio matches it
        return [obj for obj, labels in proxies if wanted <= labels.items()
                and not any(s.items() <= labels.items()
                            for s in (*selectors[ROOT_NAMESPACE], *selectors[obj.namespace]))]

    for vs, (key, _) in routes:
        for i, ref in enumerate(vs.spec.get("gateways", ())):
            if ref == "mesh" or INTERNAL_GATEWAY_MARK in ref:
                continue
            name = gateway_key(vs, ref)
            gw = index.gateways.get(name)
            if gw is None:
                continue  # none: gateway-not-found's; a Gateway API one Istio's analyzer does not look at
            if name not in uncovered:
                uncovered[name] = lacking(gw)
            pods = uncovered[name]
            if not pods:
                continue
            several = len({_named(p) for p in pods}) > 1
            said = (f"The virtual service uses the JWT claim based routing (key: {key}) but found no request "
                     f"authentication for the gateway ({name}) pod{'s' if several else ''} ({_listed(pods)}). The "
                     "request authentication must first be applied for the gateway pods to validate the JWT token "
                     "and make the claims available for routing")
            them = "them" if several else "it"
            pods_of = "pods'" if several else "pod's"
            fix = (f"add a RequestAuthentication in namespace {ROOT_NAMESPACE} or in the gateway {pods_of} "
                   "namespace, without selector or with selector.matchLabels "
                   f"{'they carry' if several else 'it carries'}")
            if known:
                yield vs, ("spec", "gateways", i), (
                    f"{said}: no RequestAuthentication of the repository applies to {them}; {fix}")
            else:
                yield vs, ("spec", "gateways", i), (
                    f"{said}: the repository holds no RequestAuthentication at all, so it cannot tell whether one "
                    f"applies to {them} (security policy may be managed elsewhere); if none does, {fix}")


@analyzer("jwt-claim-route-without-request-authentication", CODE, Level.ERROR,
          "a VirtualService routes on a JWT claim through a Gateway whose pods no RequestAuthentication of the "
          "repository applies to")
def jwt_claim_route_without_request_authentication(index: Index):
    yield from _without_request_authentication(index, known=True)


@analyzer("jwt-claim-route-request-authentication-unmanaged", CODE, Level.WARNING,
          "a VirtualService routes on a JWT claim through a Gateway, and the repository holds no "
          "RequestAuthentication: security policy may be managed elsewhere")
def jwt_claim_route_request_authentication_unmanaged(index: Index):
    yield from _without_request_authentication(index, known=False)
