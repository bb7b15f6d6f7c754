"""ServiceEntries, WorkloadEntries and what DestinationRules need of them: Istio's validation rules
(IST0106 / IST0133, and Galleon's own codes for the checks it had), IST0128/IST0129, IST0134, IST0173
and IST0177. Cases are YAML added to test_analyzers.BASE."""
from __future__ import annotations

import textwrap

import pytest

from compiler.revision import load
from compiler.validate import syntax
from tests.conftest import snapshot_of
from tests.analyzer_cases import BASE, dr, se, vs


def we(spec: str, name: str = "w", namespace: str = "bookinfo", labels: str = "") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
            f"metadata: {{name: {name}, namespace: {namespace}{labels}}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")


def rule(spec: str, name: str = "test", namespace: str = "bookinfo") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")


def entry(spec: str, name: str = "test", namespace: str = "bookinfo", labels: str = "") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: {name}, namespace: {namespace}{labels}}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")


HTTP = "ports: [{number: 80, name: http, protocol: HTTP}]"

CASES = {
    "invalid-service-entry": (
        se(f"hosts: [w.example.com]\nresolution: STATIC\n{HTTP}\n"
           "endpoints: [{address: 10.0.0.1, ports: {http: 8080}}]"),
        se("hosts: [w.example.com]\nresolution: STATIC\nports:\n- {number: 80, name: http, protocol: HTTP}\n"
           "- {number: 81, name: http, protocol: HTTP}  # <-\nendpoints: [{address: 10.0.0.1}]"),
    ),
    "service-entry-warning": (
        se(f"hosts: ['*.example.com']\n{HTTP}"),
        se(f"hosts:\n- '*example.com'  # <-\n{HTTP}"),
    ),
    "invalid-workload-entry": (
        we("address: unix:///var/run/app.sock\nlabels: {app: w}"),
        we("address: unix://var/run/app.sock  # <-\nlabels: {app: w}"),
    ),
    "workload-entry-warning": (
        we("address: 10.0.0.7\nnetwork: network-1"),
        we("network: network-1  # <-"),
    ),
    "no-server-certificate-verification": (
        dr("tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem}"),
        dr("tls:\n  mode: SIMPLE\n  caCertificates: ''  # <-"),
    ),
    "no-server-certificate-verification-port": (
        dr("portLevelSettings:\n- port: {number: 9080}\n  tls: {mode: MUTUAL, caCertificates: /ca.pem, "
           "clientCertificate: /c.pem, privateKey: /k.pem}"),
        dr("portLevelSettings:\n- port: {number: 9080}\n  tls:  # <-\n    mode: SIMPLE"),
    ),
    "destination-rule-subset-not-select-pods": (
        rule("host: reviews\nsubsets:\n- {name: v1, labels: {version: v1}}\n- {name: all}"),
        rule("host: reviews\nsubsets:\n- {name: v1, labels: {version: v1}}\n- name: v3\n"
             "  labels: {version: v3}  # <-"),
    ),
    "service-entry-addresses-required": (
        se("hosts: [db.example.com]\naddresses: [192.0.2.40]\nports: [{number: 5432, name: tcp, protocol: TCP}]"),
        se("hosts: [db.example.com]\nports:\n- number: 5432\n  name: tcp  # <-\n  protocol: TCP"),
    ),
    "conflicting-service-entry-protocol": (
        se("hosts: [reviews.bookinfo.svc.cluster.local]\nresolution: STATIC\n"
           "ports: [{number: 9080, name: http, protocol: http}]\nendpoints: [{address: 10.1.0.9}]"),
        se("hosts: [api.example.com]\nresolution: DNS\nports:\n- number: 443\n  name: tls\n  protocol: TLS  # <-",
           name="a") + "---\n"
        + se("hosts: [api.example.com]\nresolution: DNS\nports:\n- number: 443\n  name: https\n  protocol: HTTPS  # <-",
             name="b"),
    ),
}



def found(case: str, base: str = BASE) -> list[tuple[str, int, str]]:
    """(code, line, message) of every finding for ``case`` added to ``base``; lines count from the case's
    first line (1)."""
    offset = base.count("\n") + 1 if base else 0
    text = base + "---\n" + case if base else case
    return sorted((f.code, f.line - offset, f.message)
                  for f in load(snapshot_of({"mesh.yaml": text})).findings)


def codes(case: str, base: str = BASE) -> list[tuple[str, int]]:
    return [(code, line) for code, line, _ in found(case, base)]


def check(case: str, base: str = BASE) -> None:
    """The findings of ``case`` added to ``base`` are exactly those its lines mark: ``# <- CODE ...``."""
    wanted = sorted((code, n) for n, line in enumerate(case.splitlines(), 1) if "# <- " in line
                    for code in line.split("# <- ", 1)[1].split())
    assert codes(case, base) == wanted, found(case, base)


# --- Istio's ServiceEntry validation -------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    # a whole "*" is no host for a ServiceEntry (and not GAL0117's or GAL0114's too)
    "hosts: ['*']  # <- IST0106\nresolution: DNS\n" + HTTP,
    # CIDR blocks only for NONE/STATIC
    "hosts: [a.example.com]\naddresses: [192.0.2.0/24]  # <- IST0106\nresolution: DNS\n" + HTTP,
    "hosts: [a.example.com]\naddresses: [192.0.2.0/24]\nresolution: STATIC\n" + HTTP,
    # port names and numbers once each; names DNS labels; protocols Istio knows
    "hosts: [a.example.com]\nports:\n- {number: 80, name: http, protocol: HTTP}\n"
    "- {number: 80, name: http2, protocol: HTTP2}  # <- IST0106",
    "hosts: [a.example.com]\nports: [{number: 80, name: http_1, protocol: HTTP}]  # <- IST0106",
    "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP3}]  # <- IST0106",
    "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: grpc-web}]",
    # NONE (the default) lists no endpoints
    "hosts: [a.example.com]\n" + HTTP + "\nendpoints: [{address: 10.0.0.1}]  # <- IST0106",
    "hosts: [a.example.com]\nresolution: NONE  # <- IST0106\n" + HTTP + "\nendpoints: [{address: 10.0.0.1}]",
    # DNS_ROUND_ROBIN resolves one name
    "hosts: [a.example.com]\nresolution: DNS_ROUND_ROBIN\n" + HTTP + "\nendpoints:\n- address: a1.example.com\n"
    "- address: a2.example.com  # <- IST0106",
    "hosts: [a.example.com]\nresolution: DNS\n" + HTTP + "\nendpoints:\n- address: a1.example.com\n"
    "- address: a2.example.com",
    # endpoints name declared ports only
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: 10.0.0.1\n"
    "  ports: {grpc: 9090}  # <- IST0106",
    "hosts: [a.example.com]\nresolution: DNS\n" + HTTP + "\nendpoints:\n- address: a1.example.com\n"
    "  ports: {grpc: 9090}  # <- IST0106",
    # endpoint labels are Kubernetes labels
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: 10.0.0.1\n"
    "  labels: {'bad key': x}  # <- IST0106",
    # an endpoint needs an address (or a network, with a warning)
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- labels: {app: a}  # <- IST0106",
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- network: network-1  # <- IST0133",
    # unix sockets: an absolute path or an abstract name, no ports, one service port
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: unix://@app",
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: unix:///run/app.sock",
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: unix:///run/  # <- IST0106",
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: unix://@app\n"
    "  ports: {http: 80}  # <- IST0106",
    "hosts: [a.example.com]\nresolution: STATIC\nports:\n- {number: 80, name: http, protocol: HTTP}\n"
    "- {number: 81, name: http2, protocol: HTTP2}\nendpoints:\n- address: unix://@app  # <- IST0106",
    # several hosts need HTTP or TLS ports, unless NONE
    "hosts: [a.example.com, b.example.com]\nresolution: DNS\nports:\n- {number: 80, name: http, protocol: HTTP}\n"
    "- {number: 5432, name: tcp, protocol: TCP}  # <- IST0106 IST0134",
    "hosts: [a.example.com, b.example.com]\nresolution: DNS\nports:\n- {number: 443, name: tls, protocol: TLS}",
    "hosts: [a.example.com, b.example.com]\naddresses: [192.0.2.1]\nports: [{number: 5432, name: tcp, protocol: TCP}]",
    # ... and with addresses and resolution DNS, a TLS port only warns (Istio)
    "hosts: [a.example.com, b.example.com]\naddresses: [192.0.2.1]\nresolution: DNS\n"
    "ports: [{number: 443, name: tls, protocol: TLS}]  # <- IST0133",
    # exportTo: each once, ~ alone
    "hosts: [a.example.com]\nexportTo: [., bookinfo]  # <- IST0106\n" + HTTP,
    "hosts: [a.example.com]\nexportTo: ['~']\n" + HTTP,
    "hosts: [a.example.com]\nexportTo: ['~', .]  # <- IST0106\n" + HTTP,
    "hosts: [a.example.com]\nexportTo: [Not_A_Namespace]  # <- IST0106\n" + HTTP,
    # workload selectors match exact values
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nworkloadSelector: {labels: {app: '*'}}  # <- IST0106",
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nworkloadSelector: {}  # <- IST0133",
    "hosts: [a.example.com]\n" + HTTP + "\nworkloadSelector: {labels: {app: a}}  # <- IST0133",
    # partial wildcards are a warning, but not with DYNAMIC_DNS
    "hosts: ['*-api.example.com']  # <- IST0133\n" + HTTP,
    "hosts: ['*-api.example.com']\nresolution: DYNAMIC_DNS\n" + HTTP,
    # DYNAMIC_DNS: wildcard hosts, no addresses or endpoints, HTTP/TLS/GRPC/HTTP2 ports
    "hosts: [a.example.com]  # <- IST0106\nresolution: DYNAMIC_DNS\n" + HTTP,
    "hosts: ['*.example.com']\nresolution: DYNAMIC_DNS\naddresses: [192.0.2.1]  # <- IST0106\n" + HTTP,
    "hosts: ['*.example.com']\nresolution: DYNAMIC_DNS\n"
    "ports: [{number: 443, name: https, protocol: HTTPS}]  # <- IST0106",
])
def test_service_entry_validation(spec):
    check(se(spec))


def test_dynamic_dns_internal_entries_need_no_waypoint():
    spec = "hosts: ['*.example.com']\nresolution: DYNAMIC_DNS\nlocation: MESH_INTERNAL@\n" + HTTP
    check(entry(spec.replace("@", "")))
    check(entry(spec.replace("@", ""), labels=", labels: {istio.io/use-waypoint: none}"))
    check(entry(spec.replace("@", "  # <- IST0106"), labels=", labels: {istio.io/use-waypoint: waypoint}"))


@pytest.mark.parametrize("spec", [
    # an unsupported protocol is not also "not HTTP" for several hosts, nor for DYNAMIC_DNS
    "hosts: [a.example.com, b.example.com]\nresolution: DNS\n"
    "ports: [{number: 80, name: http, protocol: HTTP3}]  # <- IST0106",
    "hosts: ['*.example.com']\nresolution: DYNAMIC_DNS\nports: [{number: 80, name: http, protocol: HTTP3}]  # <- IST0106",
    # a port number repeated in one entry is IST0106, not a protocol conflict with itself (IST0177)
    "hosts: [a.example.com]\nports:\n- {number: 80, name: http, protocol: HTTP}\n"
    "- {number: 80, name: tls, protocol: TLS}  # <- IST0106",
    # several hosts with a TCP port and addresses: the error, not also the warning
    "hosts: [a.example.com, b.example.com]\naddresses: [192.0.2.1]\nresolution: DNS\n"
    "ports: [{number: 5432, name: tcp, protocol: TCP}]  # <- IST0106",
    # a STATIC endpoint that is no IP is GAL0112's, not GAL0111's too
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: 10.0.0.300  # <- GAL0112",
    # an undeclared endpoint port name is not also an invalid one
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: 10.0.0.1\n"
    "  ports: {'@': 80}  # <- IST0106",
    # unix ports are reported as such, not also as undeclared
    "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n- address: unix://@app\n"
    "  ports: {grpc: 80}  # <- IST0106",
    # a DNS "*" host is IST0106's only
    "hosts: ['*']  # <- IST0106\nresolution: DNS\n" + HTTP,
])
def test_one_mistake_is_reported_once(spec):
    check(se(spec))


# --- Galleon's codes, accepting what Istio accepts ----------------------------------------------------


@pytest.mark.parametrize("host", ["*x", "*-foo.com", "reviews", "Reviews.Example.COM", "example.com.",
                                  "*.example.com", "123", "a-1.b"])
def test_invalid_host_accepts_what_istio_accepts(host):
    assert "GAL0117" not in [c for c, _ in codes(se(f"hosts: ['{host}']\n{HTTP}"))]
    assert [c for c, _ in codes(dr("loadBalancer: {simple: RANDOM}", host=f"'{host}'"))] in ([], ["IST0174"])


@pytest.mark.parametrize("host", ["foo*", "a..b", "foo.*", "1.2.3.4", "a_b.example.com", "-a.example.com",
                                  "a.b.123", "x" * 64 + ".com", "w.example.com - v.example.com"])
def test_invalid_host_rejects_what_istio_rejects(host):
    check(se(f"hosts: ['{host}']  # <- GAL0117\nresolution: NONE\n{HTTP}"))


def test_virtual_service_hosts_as_istio():
    route = "- route:\n  - destination: {host: reviews}"
    check(vs(route, hosts="[10.0.0.1]"))
    # a destination is never "*" (nor is it declared: IST0101)
    check(vs(route, hosts="[reviews]").replace("host: reviews}", "host: '*'}  # <- GAL0117 IST0101"))
    tls = ("  tls:\n  - match: [{port: 443, sniHosts: [a.example.com]}]\n"
           "    route: [{destination: {host: reviews}}]\n")
    gateway_bound = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: sni, namespace: bookinfo}\n"
                     "spec:\n  hosts: [outbound_.9080_._.reviews.bookinfo.svc.cluster.local]@\n"
                     "  gateways: [GATEWAY]\n")
    check(gateway_bound.replace("@", "").replace("GATEWAY", "istio-system/ingress") + tls)
    check(gateway_bound.replace("@", "  # <- GAL0117").replace("GATEWAY", "mesh") + tls)


@pytest.mark.parametrize("spec", [
    "hosts: ['*.example.com']  # <- GAL0114\nresolution: DNS\n" + HTTP,
    # with endpoints, those are resolved: a wildcard host is fine (Istio)
    "hosts: ['*.example.com']\nresolution: DNS\n" + HTTP + "\nendpoints: [{address: proxy.example.com}]",
    # a single all-numeric label is a host, but not one DNS resolves
    "hosts: ['123']  # <- GAL0114\nresolution: DNS_ROUND_ROBIN\n" + HTTP,
    "hosts: [reviews]\nresolution: DNS\n" + HTTP,
])
def test_hosts_with_dns_resolution(spec):
    check(se(spec))


def test_an_empty_workload_selector_with_endpoints_is_rejected():
    check(se("hosts: [a.example.com]\nresolution: STATIC\n" + HTTP + "\nworkloadSelector: {}  # <- GAL0113 IST0133\n"
             "endpoints: [{address: 10.0.0.1}]"))


@pytest.mark.parametrize("address, ok", [
    ("10.0.0.1", True), ("2001:db8::1", True), ("fe80::1%eth0", True),
    ("backend.example.com", True), ("backend", True), ("backend.example.com.", True),
    ("backend.123", False), ("10.0.0.300", False), ("unix:///run/a.sock", False), ("'*.example.com'", False),
    ("''", False),
])
def test_dns_endpoint_addresses(address, ok):
    check(se(f"hosts: [a.example.com]\nresolution: DNS\n{HTTP}\nendpoints:\n- address: {address}"
             + ("" if ok else "  # <- GAL0111")))


@pytest.mark.parametrize("address, ok", [
    ("192.0.2.1", True), ("192.0.2.0/24", True), ("192.0.2.1/32", True), ("2001:db8::/32", True), ("001:db8::", True),
    ("192.0.2.0/33", False), ("192.0.2.0/255.255.255.0", False), ("192.0.2.0/024", False), ("fe80::%eth0/64", False),
    ("192.0.2.01", False),
])
def test_service_entry_addresses(address, ok):
    check(se(f"hosts: [a.example.com]\naddresses: ['{address}']" + ("" if ok else "  # <- GAL0111") + f"\n{HTTP}"))


# --- WorkloadEntries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    "address: 1.2.3.4\nserviceAccount: sa\nnetwork: network-1\nlabels: {app: app}\nports: {http: 1}\nweight: 2\n"
    "locality: foo/bar/baz",
    "address: example.com",
    "address: unix://@foo",
    "network: network-1  # <- IST0133",
    "address: unix:///dir/  # <- IST0106",
    "address: unix://relative  # <- IST0106",
    "address: unix://@foo\nports: {http: 80}  # <- IST0106",
    "address: 1.1.1.1\nports: {http: 99999}  # <- GAL0115",
    "address: 1.1.1.1\nports: {'@': 80}  # <- IST0106",
    "address: bad_name.example.com  # <- GAL0111",
    "address: 1.1.1.1\nlabels: {app: 'x y'}  # <- IST0106",
])
def test_workload_entry_validation(spec):
    check(we(spec))


@pytest.mark.parametrize("spec", ["{}", "{labels: {app: w}}"])
def test_a_workload_entry_needs_an_address_or_a_network(spec):
    check(we("").replace("spec:", f"spec: {spec}  # <- IST0106"))


# --- IST0128 / IST0129 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [
    "tls: {mode: ISTIO_MUTUAL}",
    "tls: {mode: DISABLE}",
    "tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}  # <- IST0128",
    # insecureSkipVerify does not silence it (Istio)
    "tls: {mode: SIMPLE, insecureSkipVerify: true}  # <- IST0128",
    # a credentialName holds the CA only for a gateway's rule (one with a workloadSelector): below
    "tls: {mode: SIMPLE, credentialName: cert}  # <- IST0128",
    "portLevelSettings:\n- port: {number: 9080}\n  tls: {mode: SIMPLE, caCertificates: ''}  # <- IST0129",
])
def test_certificate_verification(policy):
    check(dr(policy))


def test_certificate_verification_corners():
    with_selector = dr("tls: {mode: SIMPLE, credentialName: cert}").replace(
        "  trafficPolicy:", "  workloadSelector: {matchLabels: {istio: ingressgateway}}\n  trafficPolicy:")
    check(with_selector)
    # subset policies are not checked (Istio)
    check(dr("tls: {mode: ISTIO_MUTUAL}").replace(
        "  trafficPolicy:", "  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy: {tls: {mode: SIMPLE}}\n"
                            "  trafficPolicy:"))
    both = dr("tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}\nportLevelSettings:\n"
              "- port: {number: 9080}\n  tls: {mode: SIMPLE}")
    messages = found(both)
    assert [(c, line) for c, line, _ in messages] == [("IST0128", 7), ("IST0129", 10)]
    assert "mode set to SIMPLE" in messages[1][2] and "at port 9080" in messages[1][2]
    assert messages[0][2].startswith("DestinationRule bookinfo/test in namespace bookinfo has TLS mode set to MUTUAL "
                                     "but no caCertificates are set to validate server identity for host: reviews")


# --- IST0173 -----------------------------------------------------------------------------------------------


SELECTED = (entry("hosts: [vm.example.com]\nlocation: MESH_INTERNAL\nresolution: STATIC\n" + HTTP
                  + "\nworkloadSelector: {labels: {app: vm}}", name="vm")
            + "---\n" + we("address: 10.2.0.1\nlabels: {app: vm, version: v1}", name="vm-1")
            + "---\n" + we("address: 10.2.0.2\nlabels: {app: other, version: v2}", name="other-1"))

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1, namespace: shop}
spec:
  selector: {matchLabels: {app: web, version: v1}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec: {containers: [{name: web, image: web:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: stray, namespace: shop, labels: {app: stray, version: v2}}
spec: {containers: [{name: stray, image: stray:1}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-vm, namespace: shop}
spec: {address: 10.3.0.1, labels: {app: web, version: v3}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v4, namespace: other}
spec:
  selector: {matchLabels: {app: web, version: v4}}
  template:
    metadata: {labels: {app: web, version: v4}}
    spec: {containers: [{name: web, image: web:1}]}
"""


def subsets(host: str, *versions: str, namespace: str = "bookinfo", missing: tuple[str, ...] = ()) -> str:
    listed = "".join(f"- {{name: s{i}, labels: {{version: {v}}}}}" + ("  # <- IST0173" if v in missing else "") + "\n"
                     for i, v in enumerate(versions))
    return rule(f"host: {host}\nsubsets:\n{listed}", namespace=namespace)


def test_subsets_of_a_service_entry_selecting_workload_entries():
    # its workloadSelector is merged in: v2 is carried only by a WorkloadEntry it does not select
    check(SELECTED + "---\n" + subsets("vm.example.com", "v1", "v2", missing=("v2",)))


def test_subsets_of_a_kubernetes_service():
    # v1: a Deployment's pods; v3: a WorkloadEntry; v2 only on a pod the Service does not select; v4 in another namespace
    check(SERVICE + "---\n" + subsets("web.shop.svc.cluster.local", "v1", "v2", "v3", "v4", missing=("v2", "v4")))
    # the subset's labels clash with the Service's selector: none of its workloads can carry both
    check(SERVICE + "---\n" + rule("host: web.shop.svc.cluster.local\nsubsets:\n"
                                   "- {name: a, labels: {app: stray}}  # <- IST0173"))


def test_no_verdict_without_the_hosts_workloads():
    # a Service whose pods the repository does not hold
    service = ("apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n"
               "  selector: {app: api}\n  ports: [{name: http, port: 80}]\n")
    check(service + "---\n" + subsets("api.shop.svc.cluster.local", "v9"))
    # a ServiceEntry selecting no WorkloadEntry here, one with neither endpoints nor selector
    check(entry("hosts: [vm.example.com]\nresolution: STATIC\n" + HTTP + "\nworkloadSelector: {labels: {app: x}}")
          + "---\n" + subsets("vm.example.com", "v9"))
    check(entry("hosts: [ext.example.com]\nresolution: DNS\n" + HTTP) + "---\n" + subsets("ext.example.com", "v9"))
    # an unknown host is IST0174's
    check(subsets("nowhere.example.com  # <- IST0174", "v9"))


def test_subset_host_is_looked_up_where_the_rule_is():
    # reviews, written short in namespace other, is reviews.other...: not BASE's entry
    check(subsets("reviews  # <- IST0174", "v9", namespace="other"))
    check(subsets("reviews.bookinfo.svc.cluster.local", "v9", namespace="other", missing=("v9",)))


def test_subsets_of_an_entry_with_many_endpoints():
    """Each subset is looked for among all of the entry's endpoints: one only the last endpoint carries
    selects it, one none carries is flagged, whatever the order of the rules."""
    endpoints = "".join(f"- {{address: 10.9.{i // 250}.{i % 250 + 1}, labels: {{version: v1, idx: '{i}'}}}}\n"
                        for i in range(400))
    endpoints += "- {address: 10.9.9.9, labels: {version: v2, track: canary}}\n"
    many = entry("hosts: [api.example.com]\nresolution: STATIC\n" + HTTP + "\nendpoints:\n" + endpoints,
                 name="api")
    rules = rule("host: api.example.com\nsubsets:\n"
                 "- {name: a, labels: {version: v2, track: canary}}\n"
                 "- {name: b, labels: {version: v2, track: stable}}  # <- IST0173\n"
                 "- {name: c, labels: {idx: '399'}}\n"
                 "- {name: d, labels: {version: v1}}\n")
    check(many + "---\n" + rules)


# --- IST0134 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    "hosts: [db.example.com]\nports: [{number: 5432, name: tcp, protocol: tcp}]  # <- IST0134",
    "hosts: [db.example.com]\nports: [{number: 5432, name: tcp}]  # <- IST0134",
    "hosts: [db.example.com]\nresolution: DNS\nports:\n- {number: 5432, name: tcp}  # <- IST0134\n"
    "- {number: 5433, name: tcp2}  # <- IST0134",
    "hosts: [db.example.com]\nports: [{number: 5432, name: tls, protocol: TLS}]",
    # Galleon gives cross-cluster names a VIP of their own
    "hosts: [db.bookinfo.global]\nports: [{number: 5432, name: tcp}]",
    "hosts: [db.bookinfo.global, db.example.com]\nports: [{number: 5432, name: tcp}]  # <- IST0134",
    # addresses Istio allocated
    "hosts: [db.example.com]\nports: [{number: 5432, name: tcp}]\n@status: {addresses: [{value: 240.240.0.1}]}",
])
def test_addresses_required(spec):
    check(se(spec).replace("  @status", "status"))


def test_the_cross_cluster_suffix_is_the_mesh_configs():
    mesh = "apiVersion: galleon.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {dnsSuffix: mesh.internal}\n"
    check(mesh + "---\n" + se("hosts: [db.bookinfo.mesh.internal]\nports: [{number: 5432, name: tcp}]"))
    check(mesh + "---\n" + se("hosts: [db.bookinfo.global]\nports: [{number: 5432, name: tcp}]  # <- IST0134"))


# --- IST0177 -----------------------------------------------------------------------------------------------


def test_conflicting_protocols_are_reported_on_every_entry():
    other = se("hosts: [reviews.bookinfo.svc.cluster.local]\nresolution: STATIC\n"
               "ports: [{number: 9080, name: grpc, protocol: GRPC}]\nendpoints: [{address: 10.1.0.9}]")
    messages = found(other)
    assert [c for c, _, _ in messages] == ["IST0177", "IST0177"]
    assert messages[0][2] == messages[1][2]
    assert messages[0][2].startswith(
        "Multiple ServiceEntries (bookinfo/reviews, bookinfo/test) define the same host "
        "'reviews.bookinfo.svc.cluster.local' and port 9080 with conflicting protocols (GRPC, HTTP)")


def _exported(name, namespace, export_to, proto, mark=""):
    return entry(f"hosts: [api.example.com]\nexportTo: {export_to}\nresolution: DNS\n"
                 f"ports: [{{number: 443, name: p, protocol: {proto}}}]{mark}", name=name, namespace=namespace)


@pytest.mark.parametrize("case", [
    # visible in different namespaces only: no conflict
    _exported("a", "ns1", "[.]", "TLS") + "---\n" + _exported("b", "ns2", "[.]", "HTTPS"),
    # one exported everywhere: a conflict where the other is visible
    _exported("a", "ns1", "[.]", "TLS", "  # <- IST0177") + "---\n" + _exported("b", "ns2", "['*']", "HTTPS", "  # <- IST0177"),
    # exported to the same namespace
    _exported("a", "ns1", "[ns3]", "TLS", "  # <- IST0177") + "---\n" + _exported("b", "ns2", "[ns3]", "HTTPS", "  # <- IST0177"),
    # protocols compare without case
    _exported("a", "ns1", "['*']", "tls") + "---\n" + _exported("b", "ns2", "['*']", "TLS"),
    # an unset protocol (detected) differs from TCP
    entry("hosts: [api.example.com]\naddresses: [192.0.2.9]\nports: [{number: 443, name: p, protocol: TCP}]  # <- IST0177",
          name="a", namespace="ns1") + "---\n"
    + entry("hosts: [api.example.com]\naddresses: [192.0.2.9]\nports: [{number: 443, name: p}]  # <- IST0177",
            name="c", namespace="ns3"),
])
def test_conflicts_follow_export_to(case):
    check(case)


def test_conflict_report_is_deterministic():
    case = "---\n".join(
        entry(f"hosts: [api.example.com]\nresolution: DNS\nports: [{{number: 443, name: p, protocol: {p}}}]",
              name=n, namespace="ns1") for n, p in (("c", "TLS"), ("a", "HTTPS"), ("b", "HTTP")))
    first = found(case)
    assert len(first) == 3 and all(m == first[0][2] for _, _, m in first)
    assert "(ns1/a, ns1/b, ns1/c)" in first[0][2] and "(HTTP, HTTPS, TLS)" in first[0][2]
    assert found(case) == first


# --- robustness ----------------------------------------------------------------------------------------------


def test_odd_but_schema_valid_input_does_not_crash():
    odd = [
        se("hosts: ['']\nports: []\nendpoints: []\naddresses: []\nexportTo: []"),
        se("hosts: [a.example.com]\nworkloadSelector: {labels: {'': ''}}\nresolution: STATIC"),
        se("hosts: [a.example.com]\nresolution: STATIC\nendpoints: [{}, {address: ''}, {ports: {}}, {labels: {}}]"),
        se("hosts: [a.example.com]\nports: [{number: 0, name: '', protocol: ''}]") + "status: hello\n",
        we("{}", name="empty"),
        rule("host: ''\nsubsets: [{name: a}, {name: a, labels: {}}]"),
        rule("host: reviews\ntrafficPolicy: {tls: {}, portLevelSettings: [{tls: {mode: SIMPLE}}, {}]}"),
    ]
    for case in odd:
        found(case)


@pytest.mark.parametrize("text, ok", [("a", True), ("A-1", True), ("-a", False), ("a" * 63, True), ("a" * 64, False),
                                      ("", False), ("a_b", False)])
def test_dns1123_label(text, ok):
    assert syntax.is_dns1123_label(text) is ok


def test_fqdn_and_wildcard_domains():
    assert syntax.fqdn_error("reviews") is None
    assert syntax.fqdn_error("1.2.3.4") == "domain name '1.2.3.4' invalid (top level domain '4' cannot be all-numeric)"
    assert syntax.wildcard_domain_error("1.2.3.4") == \
        "domain name '2.3.4' invalid (top level domain '4' cannot be all-numeric)"
    assert syntax.wildcard_domain_error("*") is None and syntax.fqdn_error("*") is not None
    assert syntax.fqdn_error("a." + "b" * 260) == f"domain name {'a.' + 'b' * 260!r} too long (max 255)"
    # Go's Atoi: a label of more digits than an int64 holds is not "numeric"
    assert syntax.fqdn_error("a." + "9" * 20) is None
