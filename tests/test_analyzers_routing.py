"""Routing analyzers: rule reachability (IST0130, IST0131), mesh host conflicts with exportTo
(IST0109) and deprecated fields (IST0002).

The cases follow Istio's analyzeUnreachable{HTTP,TCP,TLS}Rules, ConflictingMeshGatewayHostsAnalyzer
and deprecation analyzer (with its webhook's deprecation warnings), written here in their spirit.
"""
from __future__ import annotations

import textwrap

import pytest

from compiler.revision import load
from tests.conftest import snapshot_of
from tests.analyzer_cases import BASE, check_failing, dr, vs

ROUTE = "  route:\n  - destination: {host: reviews}"


def rules(*matches: str) -> str:
    """HTTP rules, one per argument: its match list (YAML flow), or "" for a rule without a match."""
    return "\n".join(f"- match: {m}\n{ROUTE}" if m else "- " + ROUTE.lstrip() for m in matches)


def sidecar(spec: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: test, namespace: bookinfo}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")


CASES = {
    "virtual-service-unreachable-rule": (
        vs(rules("[{uri: {prefix: /a}}]", "[{uri: {prefix: /b}}]", "")),
        vs("- route:\n  - destination: {host: reviews, subset: v1}\n"
           "- route:  # <-\n  - destination: {host: reviews, subset: v2}"),
    ),
    "virtual-service-ineffective-match": (
        vs(rules("[{uri: {exact: /a}}]", "[{uri: {exact: /a}, method: {exact: POST}}]")),
        vs("- match:\n  - uri: {exact: /a}\n  - uri: {exact: /b}\n" + ROUTE + "\n"
           "- match:\n  - uri: {exact: /c}\n  - uri: {exact: /a}  # <-\n" + ROUTE),
    ),
    "deprecated-field": (
        vs("- fault:\n    delay: {fixedDelay: 5s, percentage: {value: 50}}\n" + ROUTE),
        vs("- fault:\n    delay:\n      fixedDelay: 5s\n      percent: 50  # <-\n" + ROUTE),
    ),
}



def found(case: str, *codes: str) -> list[tuple[str, int, str]]:
    """(code, line, message) of the findings with these codes when ``case`` is added to BASE."""
    findings = load(snapshot_of({"mesh.yaml": BASE + "---\n" + case})).findings
    # every object passed its schema, so the analyzers saw it
    assert not [f.text() for f in findings if f.code == "IST0106" or f.code.startswith("GAL000")]
    return [(f.code, f.line, f.message) for f in findings if f.code in codes]


def lines_of(case: str, marker: str = "# <-") -> list[int]:
    text = BASE + "---\n" + case
    return [i for i, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith(marker)]


# --- IST0130 / IST0131 ------------------------------------------------------------------------------

@pytest.mark.parametrize("first, second", [
    ("{name: one, uri: {prefix: /a}}", "{name: two, uri: {prefix: /a}}"),        # the name does not count
    ("{uri: {prefix: /a}}", "{uri: {prefix: /a}, port: 0, ignoreUriCase: false}"),  # zero values are unset
    ("{uri: {prefix: /a}}", "{uri: {prefix: /a}, sourceLabels: {}, gateways: [], statPrefix: ''}"),
    ("{headers: {a: {exact: x}, b: {prefix: y}}}", "{headers: {b: {prefix: y}, a: {exact: x}}}"),  # map order
    ("{}", "{}"),                                                                   # two empty matches
])
def test_matches_that_are_the_same_for_istio(first, second):
    case = vs(f"- match: [{first}]\n{ROUTE}\n- match:\n  - {second}  # <-\n{ROUTE}")
    rule = lines_of(case)[0] - 1
    assert sorted((code, line) for code, line, _ in found(case, "IST0130", "IST0131")) == \
        [("IST0130", rule), ("IST0131", rule + 1)]


@pytest.mark.parametrize("first, second", [
    ("{uri: {prefix: /a}}", "{uri: {exact: /a}}"),                                  # the kind of string match counts
    ("{uri: {prefix: /a}}", "{uri: {prefix: /a}, port: 8080}"),
    ("{uri: {prefix: /a}}", "{uri: {prefix: /a}, ignoreUriCase: true}"),
    ("{uri: {exact: /a}}", "{uri: {exact: /a}, sourceNamespace: x}"),
    ("{uri: {}}", "{}"),                                                            # empty uri is not no uri
    ("{uri: {exact: ''}}", "{uri: {}}"),                                            # an empty exact is set
    ("{gateways: [mesh, istio-system/ingress]}", "{gateways: [istio-system/ingress, mesh]}"),  # list order
])
def test_matches_that_differ_for_istio(first, second):
    case = vs(f"- match: [{first}]\n{ROUTE}\n- match: [{second}]\n{ROUTE}")
    assert found(case, "IST0130", "IST0131") == []


def test_a_rule_without_match_hides_every_later_rule_once_each():
    case = vs("- route:\n  - destination: {host: reviews, subset: v1}\n"
              "- match:  # <- ("
              "\n  - uri: {prefix: /a}\n  - uri: {prefix: /b}\n" + ROUTE + "\n"
              "- name: last\n  route:\n  - destination: {host: reviews, subset: v2}")
    got = found(case, "IST0130", "IST0131")
    first = lines_of(case, "# <- (")[0]
    assert [(code, line) for code, line, _ in got] == [("IST0130", first), ("IST0130", first + 5)]
    assert "rule #1 not used (route without matches defined before)" in got[0][2]
    assert 'rule "last" not used (only the last rule can have no matches)' in got[1][2]


def test_rules_are_named_as_istio_names_them_and_found_at_their_name():
    case = vs("- name: first\n  match: [{uri: {exact: /a}}]\n" + ROUTE + "\n"
              "- match:\n  - name: 'say \"hi\"'\n    uri: {exact: /a}\n"
              "  name: second  # <-\n" + ROUTE)
    got = found(case, "IST0130", "IST0131")
    line = lines_of(case)[0]
    assert sorted((code, line) for code, line, _ in got) == [("IST0130", line), ("IST0131", line - 2)]
    messages = dict((code, message) for code, _, message in got)
    assert messages["IST0131"].startswith(
        'VirtualService rule "second" match "say \\"hi\\"" is not used (duplicate/overlapping match in rule "first")')
    assert messages["IST0130"].startswith('VirtualService rule "second" not used (all matches used by prior rules)')


def test_a_rule_with_one_new_match_is_reachable():
    case = vs(rules("[{uri: {exact: /a}}]", "[{uri: {exact: /a}}, {uri: {exact: /b}}]"))
    assert [code for code, _, _ in found(case, "IST0130", "IST0131")] == ["IST0131"]


def test_tcp_and_tls_rules_are_checked_each_list_apart():
    tcp = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: t, namespace: bookinfo}\n"
           "spec:\n  hosts: [ratings]\n"
           "  http:\n  - match: [{port: 9090}]\n    route:\n    - destination: {host: ratings, port: {number: 9090}}\n"
           "  tcp:\n  - match: [{port: 9090}]\n    route:\n    - destination: {host: ratings, port: {number: 9090}}\n"
           "  - match: [{port: 9090, sourceLabels: {}}]  # <-\n"
           "    route:\n    - destination: {host: ratings, port: {number: 9090}}\n"
           "  tls:\n  - match: [{sniHosts: [a.example.com]}]\n"
           "    route:\n    - destination: {host: ratings, port: {number: 9090}}\n"
           "  - match: [{sniHosts: [b.example.com]}]\n"
           "    route:\n    - destination: {host: ratings, port: {number: 9090}}\n"
           "  - match: [{sniHosts: [b.example.com], port: 0}]  # <- tls\n"
           "    route:\n    - destination: {host: ratings, port: {number: 9090}}\n")
    got = sorted((code, line) for code, line, _ in found(tcp, "IST0130", "IST0131"))
    line = lines_of(tcp)[0]
    tls = lines_of(tcp, "# <- tls")[0]
    assert got == [("IST0130", line), ("IST0130", tls), ("IST0131", line), ("IST0131", tls)]


@pytest.mark.parametrize("first, later, overlaps", [
    ("{uri: {prefix: /api}}", "{uri: {prefix: /api/v1}}", True),                   # no method: GET
    ("{uri: {prefix: /api}}", "{uri: {prefix: /api/v1}, method: {exact: GET}}", True),
    ("{uri: {prefix: /api}}", "{uri: {prefix: /api/v1}, method: {exact: POST}}", False),
    ("{uri: {prefix: /api}, method: {exact: POST}}", "{uri: {prefix: /api/v1}}", False),
    ("{uri: {prefix: /api/v1}}", "{uri: {prefix: /api}}", False),                  # the longer prefix first
    ("{uri: {prefix: /api}}", "{uri: {prefix: /api/v1}, port: 8080}", False),
    ("{uri: {prefix: /api}}", "{uri: {prefix: /api/v1}, headers: {x: {exact: y}}}", False),
    ("{uri: {prefix: /api}, headers: {x: {exact: abc}}}", "{uri: {prefix: /api/v1}, headers: {x: {exact: ab}}}",
     True),  # "exact:abc" starts with "exact:ab"
    ("{uri: {prefix: /api}, headers: {x: {exact: y}}}", "{uri: {prefix: /api/v1}, headers: {z: {exact: y}}}",
     False),
    ("{uri: {prefix: /api}, authority: {exact: a.example.com}}", "{uri: {prefix: /api/v1}}", True),  # as Istio
    ("{uri: {prefix: /api}}", "{uri: {prefix: /api/v1}, authority: {exact: a.example.com}}", False),
    ("{uri: {prefix: /api}}", "{uri: {exact: /api/v1}}", False),                    # only prefixes are compared
    ("{uri: {regex: /api.*}}", "{uri: {prefix: /api/v1}}", False),
])
def test_prefix_overlap(first, later, overlaps):
    case = vs(f"- match: [{first}]\n{ROUTE}\n- match:\n  - {later}  # <-\n{ROUTE}")
    got = found(case, "IST0130", "IST0131")
    assert [(code, line) for code, line, _ in got] == ([("IST0131", lines_of(case)[0])] if overlaps else [])
    if overlaps:
        assert "match #0 of prefix /api/v1 is not used (duplicate/overlapping match in rule #0 of prefix /api on #0)" \
            in got[0][2]


def test_prefix_overlap_inside_one_rule_and_not_after_an_exact_duplicate():
    case = vs("- match:\n  - uri: {prefix: /p}\n  - uri: {prefix: /p}  # <- dup\n  - uri: {prefix: /pq}  # <-\n"
              + ROUTE)
    got = sorted((code, line) for code, line, _ in found(case, "IST0130", "IST0131"))
    assert got == [("IST0131", lines_of(case, "# <- dup")[0]), ("IST0131", lines_of(case)[0])]


def test_the_same_prefix_is_left_to_the_duplicate_check():
    case = vs(rules("[{uri: {prefix: /p}, headers: {a: {exact: x}}}]", "[{uri: {prefix: /p}}]"))
    assert found(case, "IST0130", "IST0131") == []


def test_odd_rules_do_not_crash():
    case = vs("- match:\n  - {}\n  - uri: {}\n  - headers: {}  # <-\n" + ROUTE
              + "\n- match: [{uri: {prefix: ''}}, {uri: {prefix: /x}, method: {regex: G.*}}]\n" + ROUTE
              + "\n- match: []\n" + ROUTE)
    assert [(code, line) for code, line, _ in found(case, "IST0130", "IST0131")] == \
        [("IST0131", lines_of(case)[0])]  # an empty map is no map: the same as the empty match before it


# --- IST0109 ------------------------------------------------------------------------------------------

def mesh_vs(name: str, namespace: str, hosts: str, export_to: str = "", gateways: str = "") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  hosts: {hosts}\n"
            + (f"  exportTo: {export_to}\n" if export_to else "")
            + (f"  gateways: {gateways}\n" if gateways else "")
            + "  http:\n  - route:\n    - destination: {host: reviews.bookinfo.svc.cluster.local}\n")


def conflicts(*objects: str) -> list[tuple[str, str]]:
    """(namespace/name, message) of every IST0109, validating these VirtualServices alone."""
    findings = load(snapshot_of({f"vs{i}.yaml": text for i, text in enumerate(objects)})).findings
    assert not [f.text() for f in findings if f.code == "IST0106" or f.code.startswith("GAL000")]
    return [(f"{f.namespace}/{f.name}", f.message) for f in findings if f.code == "IST0109"]


def test_virtual_services_exported_to_their_own_namespaces_do_not_conflict():
    assert conflicts(mesh_vs("r", "team1", "[ratings]", "['.']"),
                     mesh_vs("r", "team2", "[ratings.team1.svc.cluster.local]", "['.']")) == []
    # ... but they do in a namespace both are exported to
    got = conflicts(mesh_vs("r", "team1", "[ratings]", "['.', team3]"),
                    mesh_vs("r", "team2", "[ratings.team1.svc.cluster.local]", "[team3]"))
    assert [who for who, _ in got] == ["team1/r", "team2/r"]
    assert "in namespace 'team3'" in got[0][1]


def test_a_virtual_service_exported_everywhere_conflicts_in_each_namespace_by_wildcard():
    got = conflicts(mesh_vs("a", "foo", "['*.example.com']", "['*']"),
                    mesh_vs("b", "bar", "[api.example.com]", "[foo]"))
    assert sorted(who for who, _ in got) == ["bar/b", "foo/a"]
    assert "overlapping hosts '*.example.com', 'api.example.com' in namespace 'foo'" in got[0][1]
    # Two VirtualServices exported everywhere meet only on equal hosts, as in Istio.
    assert conflicts(mesh_vs("a", "foo", "['*.example.com']"), mesh_vs("b", "bar", "[api.example.com]")) == []


def test_only_mesh_virtual_services_conflict_and_a_repeated_host_is_not_a_conflict():
    assert conflicts(mesh_vs("a", "foo", "[ratings]"),
                     mesh_vs("b", "foo", "[ratings]", gateways="[istio-system/ingress]")) == []
    assert [who for who, _ in conflicts(mesh_vs("a", "foo", "[ratings]"),
                                        mesh_vs("b", "foo", "[ratings]", gateways="[istio-system/ingress, mesh]"))] \
        == ["foo/a", "foo/b"]
    assert conflicts(mesh_vs("a", "foo", "[ratings, ratings.foo.svc.cluster.local]")) == []  # GAL0101's


def test_each_virtual_service_is_reported_once_with_the_same_conflict_whatever_the_order():
    objects = [mesh_vs("a", "foo", "[x.example.com, y.example.com]"), mesh_vs("b", "bar", "[y.example.com]"),
               mesh_vs("c", "baz", "[x.example.com]")]
    got = conflicts(*objects)
    assert sorted(who for who, _ in got) == ["bar/b", "baz/c", "foo/a"]
    assert dict(got)["foo/a"].startswith("The VirtualServices baz/c, foo/a associated with the mesh gateway define "
                                         "the same host 'x.example.com' and are both exported to every namespace")
    assert sorted(conflicts(*reversed(objects))) == sorted(got)


def test_the_finding_is_on_the_conflicting_host():
    case = mesh_vs("a", "bookinfo", "\n  - ratings\n  - reviews  # <-") + "---\n" + \
        mesh_vs("b", "bookinfo", "\n  - reviews.bookinfo.svc.cluster.local  # <-")
    check_failing("conflicting-mesh-virtual-service-hosts", case)


# --- IST0002 ------------------------------------------------------------------------------------------

def test_deprecated_fields_istio_warns_about():
    case = (vs("- match: [{port: 9080}]\n  mirror: {host: ratings}\n  mirrorPercent: 0  # <-\n" + ROUTE
               + "\n- mirror: {host: ratings}\n  mirror_percent: 20  # <-\n" + ROUTE, hosts="[ratings]")
            .replace("host: reviews}", "host: ratings, port: {number: 9080}}")
            .replace("{host: ratings}\n", "{host: ratings, port: {number: 9080}}\n")
            + "---\n" + dr("outlierDetection:\n  consecutiveErrors: 5  # <-\n"
                           "loadBalancer:\n  consistentHash:\n    httpHeaderName: x\n    minimumRingSize: 1024  # <-")
            + "---\n" + sidecar("egress: [{hosts: ['./*']}]\noutboundTrafficPolicy:\n  mode: ALLOW_ANY\n"
                                "  egressProxy:  # <-\n    host: ratings.bookinfo.svc.cluster.local\n"
                                "    port: {number: 9080}"))
    check_failing("deprecated-field", case)
    messages = [message for _, _, message in found(case, "IST0002")]
    assert any('using deprecated setting "mirrorPercent" (mirror_percent: 20)' in m for m in messages)
    assert any("outlier detection consecutive errors (consecutiveErrors: 5) is deprecated" in m for m in messages)


def test_deprecated_fields_istio_does_not_warn_about():
    """Zero and unset values; and subset or port-level policies, whose warnings Istio's validation drops."""
    case = (vs("- fault:\n    delay: {fixedDelay: 5s, percent: 0}\n  mirror: {host: reviews}\n  mirrorPercent: null\n"
               + ROUTE)
            + "---\n" + dr("outlierDetection: {consecutiveErrors: 0, consecutive5xxErrors: 5}\n"
                           "loadBalancer:\n  warmupDurationSecs: 10s\n"
                           "  consistentHash: {httpHeaderName: x, minimumRingSize: 0}\n"
                           "portLevelSettings:\n- port: {number: 9080}\n  outlierDetection: {consecutiveErrors: 3}\n")
            .replace("  trafficPolicy:", "  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n"
                     "      outlierDetection: {consecutiveErrors: 3}\n  trafficPolicy:")
            + "---\n" + sidecar("egress: [{hosts: ['./*']}]\noutboundTrafficPolicy: {mode: ALLOW_ANY}"))
    assert found(case, "IST0002") == []
