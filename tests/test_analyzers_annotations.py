"""Istio's annotation analyzers (compiler/validate/annotations.py): unknown (IST0108), misplaced
(IST0107), invalid (IST0125), deprecated (IST0135) and alpha (IST0136) annotations, on the kinds
Galleon reads, a workload's pod template read as a Pod; and the registry and value checks behind them
(compiler/annotations.py, compiler/proxy_config.py)."""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from compiler import annotations as istio
from compiler.proxy_config import go_duration, proxy_address_error, proxy_config_errors
from compiler.revision import load
from tests.analyzer_cases import BASE
from tests.conftest import snapshot_of


def meta(annotations: str, indent: str = "  ") -> str:
    """An ``annotations:`` block of ``NAME: VALUE`` lines (each may end with a marker)."""
    lines = textwrap.dedent(annotations).strip("\n").splitlines()
    return f"{indent}annotations:\n" + "".join(f"{indent}  {line}\n" for line in lines)


def service(annotations: str, name: str = "web", namespace: str = "bookinfo", labels: str = "") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
            + (f"  labels: {labels}\n" if labels else "") + meta(annotations)
            + "spec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80}\n")


def pod(annotations: str, name: str = "web-1", labels: str = "{app: web}", init: str = "") -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: bookinfo\n  labels: {labels}\n"
            + meta(annotations) + "spec:\n  containers:\n  - {name: web, image: web}\n"
            + (f"  initContainers:\n  - {{name: {init}, image: proxyv2}}\n" if init else ""))


def deployment(template: str = "", own: str = "", kind: str = "Deployment", labels: str = "{app: web}") -> str:
    return (f"apiVersion: {'batch/v1' if kind == 'Job' else 'apps/v1'}\nkind: {kind}\n"
            "metadata:\n  name: web\n  namespace: bookinfo\n" + (meta(own) if own else "")
            + "spec:\n  selector: {matchLabels: {app: web}}\n  template:\n"
            f"    metadata:\n      labels: {labels}\n" + (meta(template, "      ") if template else "")
            + "    spec:\n      containers:\n      - {name: web, image: web}\n")


def service_entry(annotations: str, kind: str = "ServiceEntry") -> str:
    spec = ("  hosts: [w.example.com]\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"
            if kind == "ServiceEntry" else "  host: reviews\n")
    return (f"apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: annotated\n  namespace: bookinfo\n"
            + meta(annotations) + "spec:\n" + spec)


CASES = {
    "unknown-annotation": (
        service("traffic.istio.io/nodeSelector: '{\"zone\": \"a\"}'\nexample.com/owner: me"),
        service("networking.istio.io/exportThree: bar  # <-\nexample.com/owner: me"),
    ),
    "misplaced-annotation": (
        deployment("proxy.istio.io/config: '{concurrency: 2}'\nsidecar.istio.io/inject: 'true'",
                   labels="{app: web, sidecar.istio.io/inject: 'true'}"),
        deployment(own="proxy.istio.io/config: '{concurrency: 2}'  # <-")
        + "---\n" + service("kubernetes.io/ingress.class: istio  # <-"),
    ),
    "invalid-annotation": (
        pod("proxy.istio.io/config: |\n  holdApplicationUntilProxyStarts: true\n  concurrency: 2"),
        deployment("proxy.istio.io/config: '{statusPort: 0}'  # <-")
        + "---\n" + pod("proxy.istio.io/config: 'concurrency: two'  # <-"),
    ),
    "deprecated-annotation": (
        pod("sidecar.istio.io/inject: 'false'", labels="{app: web, sidecar.istio.io/inject: 'false'}"),
        pod("sidecar.istio.io/inject: 'false'  # <-"),
    ),
    "alpha-annotation": (
        pod("sidecar.istio.io/interceptionMode: REDIRECT\nproxy.istio.io/config: '{}'\nistio.io/rev: canary"),
        pod("sidecar.istio.io/interceptionMode: REDIRECT  # <-\nsidecar.istio.io/proxyImage: proxyv2  # <-",
            init="istio-init"),
    ),
}


def findings(*docs: str, base: str = BASE) -> list[tuple[str, int, str]]:
    text = base + "---\n" + "---\n".join(docs) if base else "---\n".join(docs)
    return [(f.code, f.line, f.message) for f in load(snapshot_of({"mesh.yaml": text})).findings]


def codes(*docs: str, base: str = "") -> list[tuple[str, int]]:
    return sorted((code, line) for code, line, _ in findings(*docs, base=base))


# ------------------------------------------------------------------------------------ the analyzers

def test_the_checks_go_in_istios_order_unknown_then_deprecated_then_misplaced_then_invalid():
    """An unknown annotation gets IST0108 alone; a deprecated one IST0135 wherever it is, and IST0107
    when misplaced; a misplaced one is not checked for its value; an ``Any`` annotation fits anywhere."""
    yaml = deployment(own=("sidecar.istio.io/stats: x\n"  # line 7: unknown
                           "sidecar.istio.io/statsInclusionPrefixes: x\n"  # 8: deprecated, misplaced, alpha
                           "readiness.status.sidecar.istio.io/periodSeconds: soon\n"  # 9: misplaced (unchecked), alpha
                           "galley.istio.io/analyze-suppress: IST0118\n"))  # 10: Any: in place; alpha
    assert codes(yaml) == [("IST0107", 8), ("IST0107", 9), ("IST0108", 7), ("IST0135", 8), ("IST0136", 8),
                           ("IST0136", 9), ("IST0136", 10)]


def test_istios_annotations_are_those_of_its_domains_and_the_ingress_class():
    assert istio.is_istios("sidecar.istio.io/inject") and istio.is_istios("istio.io/rev")
    assert istio.is_istios("kubernetes.io/ingress.class")
    assert istio.is_istios("notistio.io/x")  # Istio compares the prefix's suffix only
    assert istio.is_istios("istio.io")  # no slash: the whole name is the prefix
    assert not istio.is_istios("kubernetes.io/psp") and not istio.is_istios("istio.io.example.com/x")
    assert not istio.is_istios("example.com/sidecar.istio.io")
    # Kubernetes' and other tools' annotations are never reported
    assert codes(service("kubernetes.io/psp: x\nkubectl.kubernetes.io/last-applied-configuration: '{}'\n"
                         "meta.helm.sh/release-name: web")) == []


def test_istios_own_bookkeeping_is_never_reported():
    """sidecar.istio.io/status, gateway.istio.io/controller-version and istio.io/rev: on any kind, not
    even as misplaced or alpha."""
    ignored = "sidecar.istio.io/status: '{}'\ngateway.istio.io/controller-version: '5'\nistio.io/rev: canary"
    assert codes(pod(ignored, init="istio-init"), service(ignored), service_entry(ignored, "DestinationRule"),
                 base=BASE) == []


def test_a_pod_templates_annotations_are_the_pods_and_a_workloads_own_are_its_kind():
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        # in the template: a Pod's annotation, its value checked
        assert codes(deployment("proxy.istio.io/config: '{concurrency: 2}'", kind=kind)) == [], kind
        assert codes(deployment("proxy.istio.io/config: '{concurrency: two}'", kind=kind)) == [("IST0125", 12)], kind
        # on the workload itself: misplaced, with what to do
        found = findings(deployment(own="proxy.istio.io/config: '{concurrency: 2}'", kind=kind), base="")
        assert [(c, line) for c, line, _ in found] == [("IST0107", 7)], kind
        assert "move it to spec.template.metadata.annotations" in found[0][2]
    # a Service annotation in a pod template is misplaced there
    (found,) = [f for f in findings(deployment("networking.istio.io/exportTo: .\n"), base="") if f[0] == "IST0107"]
    assert found[1] == 12 and "on a pod template Istio ignores it" in found[2]


def test_kinds_match_by_name_istio_networking_kinds_included():
    """ServiceEntry and WorkloadEntry are kinds annotations go on; on a DestinationRule, VirtualService
    or Sidecar only an ``Any`` annotation is in place."""
    distribution = "networking.istio.io/traffic-distribution: PreferClose"
    assert codes(service_entry(distribution), service(distribution)) == [("IST0136", 7), ("IST0136", 19)]  # (alpha)
    found = findings(service_entry(distribution, "DestinationRule"))
    assert sorted(c for c, _, _ in found) == ["IST0107", "IST0136"]
    assert "can only be applied to Namespace, Service, ServiceEntry" in [m for c, _, m in found if c == "IST0107"][0]
    assert [c for c, _, _ in findings(service_entry("galley.istio.io/analyze-suppress: '*'", "DestinationRule"))] == \
        ["IST0136"]  # in place on any kind; alpha
    entry = ("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: vm\n  namespace: bookinfo\n"
             "  annotations: {istio.io/autoRegistrationGroup: vms, istio.io/connectedAt: '2024-01-01T00:00:00Z'}\n"
             "spec: {address: 10.0.0.9}\n")
    assert codes(entry) == [("IST0136", 6), ("IST0136", 6)]  # (alpha, in place)
    # Gateway annotations (the registry means Kubernetes Gateways) fit an Istio Gateway by its kind's name
    gateway = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: istio-system\n"
               "  annotations: {networking.istio.io/service-type: ClusterIP}\nspec:\n  selector: {istio: ingressgateway}\n"
               "  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n")
    assert [c for c, _, _ in findings(gateway) if c.startswith("IST01") and c != "IST0101"] == ["IST0136"]


def test_kubernetes_own_namespaces_are_left_alone():
    assert codes(service("networking.istio.io/exportThree: x", namespace="kube-system")) == []


def test_deprecated_inject_annotation_is_quiet_beside_the_label_and_says_what_to_use():
    (found,) = findings(pod("sidecar.istio.io/inject: 'true'"), base="")
    assert found[:2] == ("IST0135", 8)
    assert 'deprecated in favor of the "sidecar.istio.io/inject" label' in found[2]
    assert "Use the label sidecar.istio.io/inject" in found[2]
    # in a template, the template's labels count
    labelled = "{app: web, sidecar.istio.io/inject: 'true'}"
    assert codes(deployment("sidecar.istio.io/inject: 'true'", labels=labelled)) == []
    assert codes(deployment("sidecar.istio.io/inject: 'true'")) == [("IST0135", 12)]
    # the label on the Deployment itself is not the pods'
    other = deployment("sidecar.istio.io/inject: 'true'").replace(
        "  name: web\n", "  name: web\n  labels: {sidecar.istio.io/inject: 'true'}\n", 1)
    assert codes(other) == [("IST0135", 13)]


def test_alpha_cni_annotations_are_quiet_on_pods_without_istio_init():
    cni_set = ("sidecar.istio.io/interceptionMode: REDIRECT\n"
               "traffic.sidecar.istio.io/excludeInboundPorts: '15020'\n"
               "traffic.sidecar.istio.io/includeInboundPorts: '*'\n"
               "traffic.sidecar.istio.io/includeOutboundIPRanges: '*'")
    assert codes(pod(cni_set)) == []
    assert codes(pod(cni_set, init="istio-validation")) == []
    assert codes(pod(cni_set, init="istio-init")) == [("IST0136", line) for line in (8, 9, 10, 11)]
    # a pod template: its own init containers decide
    template = deployment(cni_set)
    assert codes(template) == []
    with_init = template.replace("      - {name: web, image: web}\n",
                                 "      - {name: web, image: web}\n      initContainers:\n      - {name: istio-init}\n")
    assert len(codes(with_init)) == 4
    # other alpha annotations are reported on any pod, and on any kind (misplaced or not)
    assert codes(pod("sidecar.istio.io/proxyImage: x")) == [("IST0136", 8)]
    assert codes(service("sidecar.istio.io/interceptionMode: REDIRECT")) == [("IST0107", 7), ("IST0136", 7)]


def test_unknown_annotation_suggests_a_close_name():
    (found,) = findings(pod("sidecar.istio.io/injcet: 'true'"), base="")
    assert found[0] == "IST0108" and "did you mean 'sidecar.istio.io/inject'?" in found[2]


def test_odd_but_valid_input_does_not_crash():
    odd = [
        deployment("").replace("    metadata:\n      labels: {app: web}\n", "    metadata: null\n"),
        deployment("sidecar.istio.io/proxyCPU: ''"),
        deployment(own="").replace("  template:\n", "  template: null\n  x:\n"),
        pod("proxy.istio.io/config: '&a [*a]'"),
        pod("proxy.istio.io/config: \"a: &x {b: *x}\""),
        pod("proxy.istio.io/config: '" + "[" * 200 + "'"),
        pod("sidecar.istio.io/interceptionMode: ''").replace("spec:\n  containers:",
                                                            "spec:\n  initContainers: [{}]\n  containers:"),
    ]
    for yaml in odd:
        findings(yaml, base="")


# ------------------------------------------------------------------------------------ values

@pytest.mark.parametrize("name,good,bad", [
    ("sidecar.istio.io/interceptionMode", ["REDIRECT", "TPROXY", "NONE"], ["redirect", "", "AUTO"]),
    ("status.sidecar.istio.io/port", ["15020", " 8080 ", "0", "65535"], ["65536", "-1", "+80", "http", ""]),
    ("readiness.status.sidecar.istio.io/initialDelaySeconds", ["0", "10", "4294967295"],
     ["4294967296", " 10", "1.5", "-1", "", "１０"]),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", ["*", "", "10.0.0.0/8", "10.0.0.1/8,fd00::/8", "0.0.0.0/0"],
     ["10.0.0.0", "10.0.0.0/8, 11.0.0.0/8", "10.0.0.0/33", "10.0.0.0/08", "fe80::1%eth0/64", "10.0.0.0/8,",
      "010.0.0.0/8", "*,10.0.0.0/8"]),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", ["", "169.254.169.254/32"], ["*", "169.254.169.254"]),
    ("traffic.sidecar.istio.io/includeInboundPorts", ["*", "", "80,443", " 80 , 443 "], ["80,", "http", "80;443"]),
    ("traffic.sidecar.istio.io/excludeInboundPorts", ["15020", "", "  "], ["*", "70000"]),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", ["3306,5432"], ["3306-5432"]),
    ("traffic.sidecar.istio.io/excludeInterfaces", ["", "eth1", "eth1, net1", "veth_x.1-a"],
     ["eth1,", "1eth", "averyveryverylongname", "eth 1"]),
    ("prometheus.istio.io/merge-metrics", ["true", "False", "1", "t", "F"], ["yes", "", "on", "TRUE "]),
    ("sidecar.istio.io/proxyCPU", ["100m", "1", "0.5", "2k", "1e3", "1E-3", "+1", "-1", ".5", "1.", "0", "e3"],
     ["", "100 m", "1mi", "1K", "1e", "1.2.3", "1Gi3", "abc", "1\n"]),
    ("sidecar.istio.io/proxyMemoryLimit", ["128Mi", "1Gi", "1G", "1Ei", "1000000"], ["1GB", "1gi", "Mi1"]),
])
def test_values_as_istio_checks_them(name, good, bad):
    validate_value = istio.VALIDATORS[name]
    assert [v for v in good if validate_value(v)] == []
    assert [v for v in bad if not validate_value(v)] == []


@pytest.mark.parametrize("value", [
    "", "{}", "null", "concurrency: 2", "holdApplicationUntilProxyStarts: true",
    "proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'true'}", "tracing: {zipkin: {address: 'zipkin.istio-system:9411'}}",
    "tracing: {datadog: {address: '$(HOST_IP):8126'}}", "drainDuration: 1m", "terminationDrainDuration: 30s",
    "discoveryAddress: '[::1]:15012'", "discovery_address: istiod.istio-system.svc:15012",  # the proto name too
    "statusPort: '15021'", "controlPlaneAuthPolicy: NONE", "controlPlaneAuthPolicy: 1", "unknownField: [1, 2]",
    "tracingServiceName: CANONICAL_NAME_ONLY\nserviceCluster: ''",  # a oneof: the last declared wins
    "tracing: {lightstep: {}, datadog: {address: 'd:8126'}}",  # the same: datadog
    "tracing: {sampling: '0.5'}", "proxyAdminPort: 15000.0",  # jsonpb reads quoted numbers, YAML 15000.0 is 15000
    "extraStatTags: [a, null]",
    "proxyStatsMatcher: {inclusionPrefixes: [cluster.outbound]}", "gatewayTopology: {numTrustedProxies: 1}",
    "privateKeyProvider: {cryptomb: {pollDelay: 10ms}}", "connectionSettings: {httpIdleTimeout: 0s}",
    "configPath: 2024-01-01",  # a YAML timestamp is text to Istio
])
def test_proxy_configs_istio_accepts(value):
    assert proxy_config_errors(value) == []


@pytest.mark.parametrize("value,reason", [
    ("[a, b]", "want a mapping"),
    ("just text", "want a mapping"),
    ("a: [", "failed to convert"),
    ("concurrency: two", "concurrency: want a 32-bit integer"),
    ("holdApplicationUntilProxyStarts: 'true'", "want true or false"),
    ("meshId: 7", "meshId: want a string"),
    ("drainDuration: 45", "drainDuration: want a duration"),
    ("drainDuration: 1500ms", "seconds precision"),
    ("drainDuration: 0s", "greater than 1ms"),
    ("proxyMetadata: {A: 1}", "proxyMetadata['A']: want a string"),
    ("interceptionMode: AUTO", "one of REDIRECT, TPROXY, NONE"),
    ("configPath: ''", "config path must be set"),
    ("binary_path: ''", "binary path must be set"),
    ("serviceCluster: ''", "service cluster must be specified"),
    ("discoveryAddress: ''", "discovery address must be set"),
    ("discoveryAddress: istiod", "missing port in address"),
    ("discoveryAddress: 'istiod:port'", "is not a number"),
    ("discoveryAddress: 'istiod_x:15012'", "is not a valid hostname or an IP address"),
    ("statsdUdpAddress: 'statsd:0'", "must be in the range 1..65535"),
    ("proxyAdminPort: 0", "invalid proxy admin port"),
    ("statusPort: 70000", "invalid status port"),
    ("controlPlaneAuthPolicy: INHERIT", "unrecognized control plane auth policy"),
    ("tracing: {zipkin: {}}", "invalid zipkin config"),
    ("tracing: {lightstep: {address: 'ls:8080'}}", "access token is required"),
    ("tracing: {zipkin: {address: 'z:9411'}, lightstep: {}}", "address is required"),  # lightstep wins
    ("proxyAdminPort: 15000.5", "want a 32-bit integer"),
    ("envoyAccessLogService: {address: als}", "invalid envoyAccessLogService.address"),
    ("privateKeyProvider: {}", "private key provider configuration is required"),
    ("privateKeyProvider: {qat: {}}", "pollDelay is required"),
    ("privateKeyProvider: {qat: {}, cryptomb: {pollDelay: 1s}}", "qat: pollDelay is required"),  # qat wins
    ("privateKeyProvider: {cryptomb: {pollDelay: 0s}}", "pollDelay must be non zero"),
    ("connectionSettings: {httpIdleTimeout: -1s}", "http_idle_timeout must be non-negative"),
    ("connectionSettings: {http2InitialStreamWindowSize: 1024}", "at least 65535"),
    ("tracing: {sampling: high}", "tracing.sampling: want a number"),
])
def test_proxy_configs_istio_rejects(value, reason):
    problems = proxy_config_errors(value)
    assert problems and reason in "; ".join(problems), problems


def test_go_durations_and_proxy_addresses():
    assert go_duration("1h30m") == 5400 * 10**9 and go_duration("-1.5s") == -15 * 10**8
    assert go_duration("0") == 0 and go_duration(".5ms") == 5 * 10**5 and go_duration("1us") == 1000
    assert [go_duration(t) for t in ("", "1", "s", "1.5", "1d", "1s2", "--1s")] == [None] * 7
    assert proxy_address_error("istiod.istio-system.svc:15012") is None
    assert proxy_address_error("10.0.0.1:80") is None and proxy_address_error("[fd00::1]:80") is None
    assert proxy_address_error("fd00::1:80") and proxy_address_error("[fd00::1]") and proxy_address_error(":80")


# ------------------------------------------------------------------------------------ the registry

def test_the_registry_is_istio_apis_when_its_mirror_is_here():
    """REGISTRY states what istio/api's annotations.yaml says (python -m compiler.annotations); a
    check run where a mirror of istio/api is at hand."""
    mirror = Path("/work/.mirror/istio+api/repo")
    if not mirror.exists():
        pytest.skip("no istio/api mirror here")
    text = subprocess.run(["git", "-C", str(mirror), "show", "HEAD:annotation/annotations.yaml"],
                          capture_output=True, text=True, check=True).stdout
    assert istio.registry_changes(istio.read_istio_registry(text)) == []


def test_registry_facts():
    assert len(istio.REGISTRY) == 68
    inject = istio.REGISTRY["sidecar.istio.io/inject"]
    assert inject == istio.Annotation("sidecar.istio.io/inject", ("Pod",), "Beta", True)
    assert istio.REGISTRY["networking.istio.io/exportTo"].status == istio.ALPHA
    assert istio.REGISTRY["galley.istio.io/analyze-suppress"].resources == (istio.ANY,)
    assert set(istio.VALIDATORS) == set(istio.EXPECTED) and set(istio.VALIDATORS) <= set(istio.REGISTRY)
    assert istio.ALWAYS_IGNORED <= set(istio.REGISTRY) and istio.SET_BY_CNI <= set(istio.REGISTRY)
    assert set(istio.REPLACEMENTS) == {a.name for a in istio.REGISTRY.values()
                                       if a.deprecated and a.resources == ("Pod",)}
