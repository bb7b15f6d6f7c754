"""Gateways judged as `istioctl analyze` judges files offline: Istio's default ingress gateway assumed
when the repository has none (compiler/validate/assumed.py)."""
from __future__ import annotations

from compiler.model import build_mesh
from compiler.revision import load
from compiler.validate import assumed, validate_objects
from compiler.validate.framework import run_all
from compiler.validate.index import Index
from tests.analyzer_cases import BASE
from tests.conftest import ONE_CLUSTER, sample_files, snapshot_of


def docs(*parts: str) -> str:
    return "---\n".join(parts)


CASES: dict[str, tuple[str, str]] = {}  # no analyzer of its own: the default changes what others see


def findings(*parts: str, base: str = BASE) -> list[tuple[str, str, str, int]]:
    """(code, level, object, line) of every finding of ``base`` with these documents."""
    text = base + "---\n" + docs(*parts)
    return sorted((f.code, f.level.value, f"{f.kind}/{f.namespace}/{f.name}", f.line)
                  for f in load(snapshot_of({"mesh.yaml": text})).findings)


def codes(*parts: str, base: str = BASE) -> list[str]:
    return [code for code, *_ in findings(*parts, base=base)]


def messages(*parts: str, base: str = BASE) -> list[str]:
    return [f.text() for f in load(snapshot_of({"mesh.yaml": base + "---\n" + docs(*parts)})).findings]


# --- Istio's default ingress gateway ----------------------------------------------------------------

def plain_gateway(ports: tuple[int, ...] = (80,), selector: str = "{istio: ingressgateway}",
                  namespace: str = "default") -> str:
    servers = "".join(f"  - port: {{number: {p}, name: http-{p}, protocol: HTTP}}\n    hosts: ['*']\n" for p in ports)
    return (f"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: httpbin-gateway, "
            f"namespace: {namespace}}}\nspec:\n  selector: {selector}\n  servers:\n{servers}")


def own_ingress(ports: str = "[{name: http2, port: 80, targetPort: 8080}]", service: bool = True) -> str:
    deployment = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: my-ingress, namespace: ingress}\n"
                  "spec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  template:\n"
                  "    metadata: {labels: {istio: ingressgateway}}\n    spec:\n      containers:\n"
                  "      - {name: istio-proxy, image: auto}\n")
    return deployment + ("---\napiVersion: v1\nkind: Service\nmetadata: {name: my-ingress, namespace: ingress}\n"
                         f"spec:\n  selector: {{istio: ingressgateway}}\n  ports: {ports}\n" if service else "")


def test_the_default_ingress_gateway_is_istios_and_valid():
    pod, service = assumed._ingress_gateway()
    assert (pod.kind, pod.namespace, pod.name, pod.labels) == (
        "Pod", "istio-system", "istio-ingressgateway-dummypod", {"istio": "ingressgateway"})
    assert (service.kind, service.namespace, service.name) == ("Service", "istio-system", "istio-ingressgateway")
    assert [(p["name"], p["port"], p["targetPort"]) for p in service.spec["ports"]] == [
        ("http2", 80, 80), ("https", 443, 443), ("tcp", 31400, 31400), ("tls", 15443, 15443)]
    assert all(assumed.is_assumed(obj) for obj in (pod, service))
    # they pass their schemas, as the repository's objects that the index holds
    assert validate_objects([pod, service])[1] == []


def test_a_gateway_of_the_default_selector_selects_the_default_ingress_gateway():
    # before: "Referenced selector not found: istio=ingressgateway matches no workload in the repository"
    assert codes(plain_gateway(), base=ONE_CLUSTER) == []
    assert codes(plain_gateway(selector="{istio: egressgateway}"), base=ONE_CLUSTER) == ["IST0101"]


def test_gateway_ports_are_judged_against_the_default_service():
    """Istio's gatewayBadPort case: the Service exposes 80, 443, 31400 and 15443."""
    assert codes(plain_gateway((80, 443, 15443, 31400)), base=ONE_CLUSTER) == []
    (text,) = messages(plain_gateway((80, 8004)), base=ONE_CLUSTER)
    assert " warning IST0162 Gateway default/httpbin-gateway: " in text and "(port 8004)" in text
    assert ("istio-system/istio-ingressgateway (Istio's default ingress gateway, assumed as istioctl analyze "
            "assumes it offline) exposes 80, 443, 15443, 31400") in text


def test_a_repository_with_its_own_ingress_gateway_is_judged_on_it_alone():
    # its own Deployment labelled istio: ingressgateway, and its Service: no default
    objects = load(snapshot_of({"mesh.yaml": ONE_CLUSTER + "---\n" + own_ingress()})).objects
    assert Index(objects).assumed == ()
    (text,) = messages(plain_gateway((80, 443)), own_ingress(), base=ONE_CLUSTER)
    assert "(port 443)" in text and "ingress/my-ingress exposes 80, 8080;" in text and "assumed" not in text
    # its own workload and no Service: no verdict on ports, as without the default
    assert codes(plain_gateway((443,)), own_ingress(service=False), base=ONE_CLUSTER) == []
    # a WorkloadEntry labelled istio: ingressgateway is its own too (BASE's): the selector is judged on it
    assert Index(load(snapshot_of({"mesh.yaml": BASE})).objects).assumed == ()
    # its own Service istio-system/istio-ingressgateway and no workload: the selector matches nothing
    service = ("apiVersion: v1\nkind: Service\nmetadata: {name: istio-ingressgateway, namespace: istio-system}\n"
               "spec:\n  selector: {istio: ingressgateway}\n  ports: [{name: http2, port: 80}]\n")
    assert codes(plain_gateway(), service, base=ONE_CLUSTER) == ["IST0101"]


def test_nothing_is_reported_on_the_default_ingress_gateway():
    """A second Service selecting its pod in an injected istio-system gives its port 80 another
    protocol: the analyzers find the dummy Pod wrong (IST0116), validation reports nothing of it."""
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n  labels: {istio-injection: enabled}\n"
    other = ("apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: istio-system}\n"
             "spec:\n  selector: {istio: ingressgateway}\n  ports: [{name: dns, port: 80, protocol: UDP}]\n")
    result = load(snapshot_of({"mesh.yaml": docs(ONE_CLUSTER, namespace, other, plain_gateway())}))
    assert [f.text() for f in result.findings] == []
    found = [(check.code, obj.name) for check, obj, _, _ in run_all(Index(result.objects)) if assumed.is_assumed(obj)]
    assert ("IST0116", "istio-ingressgateway-dummypod") in found


def test_the_default_ingress_gateway_does_not_make_istio_system_a_namespace_of_known_workloads():
    """A Sidecar of istio-system selecting something else: the repository holds no workload there, so
    a warning (it cannot be checked), not the error of a namespace whose workloads it holds."""
    sidecar = ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: istio-system}\n"
               "spec:\n  workloadSelector: {labels: {app: other}}\n")
    assert findings(sidecar, base=ONE_CLUSTER) == [("IST0101", "warning", "Sidecar/istio-system/s", 19)]
    matching = sidecar.replace("app: other", "istio: ingressgateway")
    assert findings(matching, base=ONE_CLUSTER) == []


def test_the_default_ingress_gateway_does_not_make_istio_system_a_namespace_of_known_services():
    """A destination in istio-system other than the default Service stays one of a namespace whose
    Services the repository does not hold (a warning: Istio's installation makes them); the default
    Service itself is declared, as istioctl analyze finds it offline."""
    vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\n"
          "spec:\n  hosts: [a.example.com]\n  gateways: [default/httpbin-gateway]\n  http:\n"
          "  - match: [{uri: {prefix: /istiod}}]\n"
          "    route:\n    - destination: {host: istiod.istio-system.svc.cluster.local, port: {number: 15012}}\n"
          "  - route:\n    - destination: {host: istio-ingressgateway.istio-system.svc.cluster.local,"
          " port: {number: 80}}\n")
    assert findings(plain_gateway(), vs, base=ONE_CLUSTER) == [("IST0101", "warning", "VirtualService/default/vs", 33)]


def test_a_finding_naming_the_default_service_says_it_is_assumed():
    rule = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr, namespace: istio-system}\n"
            "spec:\n  host: istio-ingressgateway\n  subsets:\n  - {name: v1, labels: {version: v1}}\n")
    (text,) = messages(rule, base=ONE_CLUSTER)
    assert " warning IST0173 DestinationRule istio-system/dr: " in text
    assert ("none of the workloads Service istio-system/istio-ingressgateway (Istio's default ingress gateway, "
            "assumed as istioctl analyze assumes it offline) selects carries version=v1") in text


def test_the_default_ingress_gateway_never_reaches_the_mesh():
    text = docs(ONE_CLUSTER, plain_gateway())
    result = load(snapshot_of({"mesh.yaml": text}))
    assert not any(assumed.is_assumed(obj) for obj in result.objects)
    mesh = build_mesh(result.objects, "r")
    assert "istio-ingressgateway.istio-system.svc.cluster.local" not in mesh.services


def test_the_sample_repository_has_its_own_ingress_gateway():
    result = load(snapshot_of(sample_files()))
    assert result.valid and Index(result.objects).assumed == ()
