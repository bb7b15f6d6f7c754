"""Routing on JWT claims (compiler/validate/jwt_claims.py, Istio's JWTClaimRouteAnalyzer, IST0149): a
VirtualService whose matches name a claim (``@request.auth.claims.sub``) bound to a Gateway needs a
RequestAuthentication on each of the Gateway's pods; and how Galleon reads RequestAuthentications, a
kind it reads for that alone."""
from __future__ import annotations

import textwrap

import pytest

from compiler.model import build_mesh
from compiler.parse import parse
from compiler.revision import load
from compiler.validate import assumed
from compiler.validate.jwt_claims import claim_route, routing_claim
from tests.analyzer_cases import BASE, vs
from tests.conftest import sample_files, snapshot_of


def docs(*parts: str) -> str:
    return "---\n".join(parts)


def claim_vs(match: str = "headers: {'@request.auth.claims.sub': {exact: alice}}",
             gateways: str = "[istio-system/ingress]", name: str = "test") -> str:
    """A VirtualService bookinfo/NAME for reviews bound to ``gateways`` whose one match is ``match`` (one YAML line)."""
    return vs(f"- match:\n  - {match}\n  route:\n  - destination: {{host: reviews}}",
              extra=f"  gateways: {gateways}\n").replace("{name: test,", f"{{name: {name},", 1)


def request_authentication(namespace: str = "istio-system", spec: str = "selector: {matchLabels: {istio: ingressgateway}}",
                           name: str = "jwt", version: str = "v1") -> str:
    """A RequestAuthentication whose spec holds ``spec`` ("": none but its jwtRules) and one JWT rule."""
    return (f"apiVersion: security.istio.io/{version}\nkind: RequestAuthentication\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
            + (textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n" if spec else "")
            + "  jwtRules: [{issuer: 'https://issuer.example.com', jwksUri: 'https://issuer.example.com/jwks'}]\n")


CASES = {
    "jwt-claim-route-without-request-authentication": (
        # the root namespace's RequestAuthentication selects the gateway's pod (BASE's WorkloadEntry)
        docs(request_authentication(), claim_vs()),
        # one in bookinfo, the VirtualService's namespace, applies to no gateway pod of istio-system
        docs(request_authentication(namespace="bookinfo", spec="selector: {matchLabels: {app: reviews}}"),
             claim_vs(gateways="\n  - istio-system/ingress  # <-")),
    ),
    "jwt-claim-route-request-authentication-unmanaged": (
        # claims routed on by sidecars only, and a gateway route on an ordinary header: no gateway pod needs one
        docs(claim_vs(gateways="[mesh]"), claim_vs("headers: {x-claims-sub: {exact: alice}}", name="plain")),
        docs(claim_vs("withoutHeaders: {'@request.auth.claims[groups]': {exact: admin}}",
                      gateways="\n  - mesh\n  - istio-system/ingress  # <-")),
    ),
}


def findings(*parts: str, base: str = BASE) -> list[tuple[str, str, str]]:
    """(code, level, object) of every finding of ``base`` with these documents."""
    text = base + "---\n" + docs(*parts)
    return sorted((f.code, f.level.value, f"{f.kind}/{f.namespace}/{f.name}")
                  for f in load(snapshot_of({"mesh.yaml": text})).findings)


def messages(*parts: str, base: str = BASE, code: str = "IST0149") -> list[str]:
    text = base + "---\n" + docs(*parts)
    return [f.message for f in load(snapshot_of({"mesh.yaml": text})).findings if f.code == code]


ERROR = [("IST0149", "error", "VirtualService/bookinfo/test")]
WARNING = [("IST0149", "warning", "VirtualService/bookinfo/test")]


# --- the claim a header key names (Istio's jwt.ToRoutingClaim and its tests) --------------------------

@pytest.mark.parametrize("key, claim", [
    ("@request.auth.claims", None),
    ("@request.auth.claims-", None),
    ("request.auth.claims.", None),
    ("@request.auth.claims.", None),
    ("@request.auth.claims-abc", None),
    ("x-some-other-header", None),
    ("@request.auth.claims.key1", ("key1",)),
    ("@request.auth.claims.key1.KEY2", ("key1", "KEY2")),
    ("@request.auth.claims.key1-key2", ("key1-key2",)),
    ("@request.auth.claims[]", None),
    ("@request.auth.claims[key1", None),
    ("@request.auth.claims]key1", None),
    ("@request.auth.claims.[key1]", ("[key1]",)),  # a dot first: dots separate
    ("@request.auth.claims[key1]", ("key1",)),
    ("@request.auth.claims[key1][key2]", ("key1", "key2")),
    ("@request.auth.claims[key1][KEY2]", ("key1", "KEY2")),
    ("@request.auth.claims[key1] [key2]", ("key1] [key2",)),
    ("@request.auth.claims[test-issuer-2@istio.io]", ("test-issuer-2@istio.io",)),
    ("@request.auth.claims[test-issuer-2@istio.io][key1]", ("test-issuer-2@istio.io", "key1")),
    ("@Request.Auth.CLAIMS.sub", ("sub",)),  # the prefix in any case, as Istio lowers it to compare
    ("@request.auth.claİms.sub", None),  # a letter that lowers to two is not the prefix
])
def test_routing_claim_reads_a_header_key_as_istio_does(key, claim):
    assert routing_claim(key) == claim


def test_the_first_claim_of_headers_or_without_headers_is_the_route_key():
    text = (BASE + "---\n" + claim_vs("headers: {x-user: {exact: a}, '@request.auth.claims[iss]': {exact: b}}")
            .replace("    route:", "  - match:\n    - withoutHeaders: {'@request.auth.claims.sub': {exact: c}}\n    route:",
                     1))
    vs = next(o for o in parse(snapshot_of({"m.yaml": text})).objects if o.kind == "VirtualService")
    assert claim_route(vs) == ("@request.auth.claims[iss]",
                               ("spec", "http", 0, "match", 0, "headers", "@request.auth.claims[iss]"))
    plain = next(o for o in parse(snapshot_of({"m.yaml": BASE + "---\n" + claim_vs("headers: {x-user: {exact: a}}")}))
                 .objects if o.kind == "VirtualService")
    assert claim_route(plain) is None
    (message,) = messages(claim_vs("headers: {'@request.auth.claims.sub': {exact: a}, "
                                   "'@request.auth.claims.iss': {exact: b}}"))
    assert message.startswith("The virtual service uses the JWT claim based routing (key: @request.auth.claims.sub) "
                              "but found no request authentication for the gateway (istio-system/ingress) pod "
                              "(WorkloadEntry istio-system/ingress-a). The request authentication must first be "
                              "applied for the gateway pods to validate the JWT token and make the claims available "
                              "for routing: the repository holds no RequestAuthentication at all")


def test_a_uri_or_query_match_is_no_claim_route():
    assert findings(claim_vs("uri: {prefix: '/@request.auth.claims.sub'}")) == []
    assert findings(claim_vs("queryParams: {'@request.auth.claims.sub': {exact: a}}")) == []


# --- which RequestAuthentications apply to a gateway pod ----------------------------------------------

@pytest.mark.parametrize("namespace, spec, applies", [
    ("istio-system", "selector: {matchLabels: {istio: ingressgateway}}", True),
    ("istio-system", "", True),                                             # no selector: all of the root namespace's
    ("istio-system", "selector: {}", True),
    ("istio-system", "selector: {matchLabels: {}}", True),
    ("istio-system", "selector: {matchLabels: {istio: ingressgateway, tier: edge}}", False),  # every label must match
    ("istio-system", "selector: {matchLabels: {istio: egressgateway}}", False),
    ("bookinfo", "", False),                     # another namespace's applies to no pod of istio-system
    ("bookinfo", "selector: {matchLabels: {istio: ingressgateway}}", False),
    # a policy target instead of a selector: counted as applying to the namespace's every workload, as Istio's
    # analyzer counts it (it reads the selector alone)
    ("istio-system", "targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: web}", True),
    ("istio-system", "targetRefs: [{kind: Service, name: istio-ingressgateway}]", True),
    ("bookinfo", "targetRef: {kind: Service, name: reviews}", False),
])
def test_a_request_authentication_applies_by_namespace_and_selector(namespace, spec, applies):
    assert findings(request_authentication(namespace, spec), claim_vs()) == ([] if applies else ERROR)


def test_the_pods_own_namespace_counts_and_each_pod_needs_one():
    """A gateway whose pods are in two namespaces: the RequestAuthentication of the one namespace covers its
    pods only; the finding names the others."""
    deployment = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: edge, namespace: gateways}\n"
                  "spec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  template:\n"
                  "    metadata: {labels: {istio: ingressgateway}}\n    spec:\n      containers: [{name: istio-proxy}]\n")
    in_gateways = request_authentication("gateways", "")
    (message,) = messages(deployment, in_gateways, claim_vs())
    assert "for the gateway (istio-system/ingress) pod (WorkloadEntry istio-system/ingress-a)." in message
    assert "no RequestAuthentication of the repository applies to it;" in message
    both = messages(deployment, claim_vs())
    assert len(both) == 1 and "pods (Deployment gateways/edge, WorkloadEntry istio-system/ingress-a)." in both[0]
    assert findings(deployment, in_gateways, request_authentication(), claim_vs()) == []


def test_a_gateway_selects_its_pods_and_not_a_service_entry_s_endpoints():
    """A Gateway without selector picks every workload, as Istio's analyzer matches it; the endpoints a
    ServiceEntry writes are addresses, not proxies: BASE's reviews and ratings endpoints are not named."""
    everywhere = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: all, namespace: istio-system}\n"
                  "spec:\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n")
    (message,) = messages(everywhere, claim_vs(gateways="[istio-system/all]"))
    assert "pod (WorkloadEntry istio-system/ingress-a)." in message and "ServiceEntry" not in message


def test_the_assumed_default_ingress_gateway_is_the_gateway_pod_without_one_of_the_repository():
    base = BASE.rsplit("---\n", 1)[0]  # BASE without its WorkloadEntry, the ingress gateway's workload
    assert "kind: WorkloadEntry" not in base
    (message,) = messages(claim_vs(), base=base)
    assert f"pod (Pod istio-system/istio-ingressgateway-dummypod ({assumed.NOTE}))." in message
    assert findings(request_authentication(), claim_vs(), base=base) == []


def test_only_bindings_to_an_istio_gateway_are_checked():
    web = ("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: istio-system}\n"
           "spec:\n  gatewayClassName: istio\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n")
    assert findings(claim_vs(gateways="[mesh]")) == []
    assert findings(web, claim_vs(gateways="[istio-system/web]")) == []
    # a Gateway that does not exist: gateway-not-found's, as in Istio
    assert [code for code, *_ in findings(claim_vs(gateways="[istio-system/nowhere]"))] == ["IST0101", "IST0132"]


def test_each_gateway_binding_is_reported_at_its_line():
    text = BASE + "---\n" + claim_vs(gateways="\n  - istio-system/ingress\n  - mesh\n  - ingress-local")
    local = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: ingress-local, namespace: bookinfo}\n"
             "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
             "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n")
    result = load(snapshot_of({"mesh.yaml": text + "---\n" + local}))
    lines = text.splitlines()
    assert [(f.code, f.level.value, lines[f.line - 1].strip()) for f in result.findings] == [
        ("IST0149", "warning", "- istio-system/ingress"), ("IST0149", "warning", "- ingress-local")]
    assert "for the gateway (bookinfo/ingress-local) pod" in result.findings[1].message


def test_the_level_follows_whether_the_repository_holds_request_authentications():
    assert findings(claim_vs()) == WARNING
    elsewhere = request_authentication("bookinfo", "selector: {matchLabels: {app: reviews}}")
    assert findings(elsewhere, claim_vs()) == ERROR
    (message,) = messages(elsewhere, claim_vs())
    assert message.endswith("no RequestAuthentication of the repository applies to it; add a RequestAuthentication "
                            "in namespace istio-system or in the gateway pod's namespace, without selector or with "
                            "selector.matchLabels it carries")


# --- reading RequestAuthentications -----------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_a_request_authentication_is_read_in_the_versions_istio_serves(version):
    result = load(snapshot_of({"mesh.yaml": BASE + "---\n" + request_authentication(version=version)}))
    assert result.findings == []
    (ra,) = [o for o in result.objects if o.kind == "RequestAuthentication"]
    assert (ra.group, ra.version, ra.shown_kind) == ("security.istio.io", version, "RequestAuthentication")


@pytest.mark.parametrize("text, code", [
    # Istio's other security kinds stay unread, with their warning
    ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\n", "GAL0003"),
    ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x}\nspec: {mtls: {mode: STRICT}}\n",
     "GAL0003"),
    ("apiVersion: security.istio.io/v1alpha1\nkind: RequestAuthentication\nmetadata: {name: x}\n", "GAL0004"),
    ("apiVersion: networking.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: x}\n", "GAL0004"),
])
def test_other_security_kinds_and_versions(text, code):
    (finding,) = load(snapshot_of({"x.yaml": text})).findings
    assert finding.code == code, finding.text()
    if code == "GAL0004" and "networking" in text:
        assert "RequestAuthentication belongs to security.istio.io" in finding.message


@pytest.mark.parametrize("spec, what", [
    ("selector: {matchLabel: {istio: ingressgateway}}", "matchLabel"),    # misspelt: would apply to all
    ("selector: {matchLabels: {istio: 1}}", "matchLabels"),
    ("targetRef: {kind: Gateway}", "name"),
    ("targetRefs: {kind: Gateway, name: web}", "targetRefs"),
])
def test_a_request_authentication_s_selector_and_targets_are_checked(spec, what):
    (finding,) = load(snapshot_of({"x.yaml": request_authentication(spec=spec)})).findings
    assert (finding.code, finding.kind) == ("IST0106", "RequestAuthentication") and what in finding.message, \
        finding.text()


def test_the_rest_of_a_request_authentication_is_read_as_written():
    spec = ("selector: {matchLabels: {istio: ingressgateway}}\n"
            "futureField: {anything: [1, 2]}\n")
    assert load(snapshot_of({"x.yaml": request_authentication(spec=spec)})).findings == []


def test_request_authentications_never_reach_the_mesh():
    files = sample_files()
    extra = request_authentication() + "---\n" + request_authentication("bookinfo", "", name="all")
    plain = load(snapshot_of(files, "r"))
    both = load(snapshot_of({**files, "security/jwt.yaml": extra}, "r"))
    assert plain.valid and both.valid and both.findings == plain.findings, [f.text() for f in both.findings]
    assert len([o for o in both.objects if o.kind == "RequestAuthentication"]) == 2
    without, with_them = build_mesh(plain.objects, "r"), build_mesh(both.objects, "r")
    assert with_them.digest == without.digest
    assert list(with_them.per_service_objects.by_digest) == list(without.per_service_objects.by_digest)
