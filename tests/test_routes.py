"""RDS: VirtualServices to Envoy route configurations, checked field by field against Istio's output."""
from __future__ import annotations

import textwrap

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, wrappers_pb2

from compiler.model import build_mesh
from compiler.parse import parse
from compiler.routes import build_routes
from compiler.scope import visible_services
from compiler.revision import load
from compiler.view import make_view
from tests.conftest import ONE_CLUSTER, mesh_from, sample_files, snapshot_of

SIDECAR = "sidecar~10.1.0.9~client.bookinfo~bookinfo.svc.cluster.local"
ROUTER = "router~10.1.100.1~ingress.istio-system~istio-system.svc.cluster.local"
INGRESS = {"istio": "ingressgateway"}
REVIEWS = "reviews.bookinfo.svc.cluster.local"
RATINGS = "ratings.bookinfo.svc.cluster.local"
DETAILS = "details.bookinfo.svc.cluster.local"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"

MESH = ONE_CLUSTER + """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - address: 10.1.0.1
    labels: {app: reviews, version: v1, topology.istio.io/cluster: cluster-a}
  - address: 10.1.0.11
    labels: {app: reviews, version: v2, topology.istio.io/cluster: cluster-a}
  - address: 10.1.0.12
    labels: {app: reviews, version: v3, topology.istio.io/cluster: cluster-a}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: grpc, protocol: GRPC}
  endpoints:
  - address: 10.1.0.2
    labels: {app: ratings, version: v1, topology.istio.io/cluster: cluster-a}
  - address: 10.1.0.21
    labels: {app: ratings, version: v2, topology.istio.io/cluster: cluster-a}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: bookinfo}
spec:
  hosts: [details.bookinfo.svc.cluster.local]
  addresses: [240.0.0.5, 10.9.0.0/16]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - address: 10.1.0.3
    labels: {app: details, topology.istio.io/cluster: cluster-a}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysqldb, namespace: bookinfo}
spec:
  hosts: [mysqldb.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  endpoints:
  - address: 10.1.0.4
    labels: {app: mysqldb, topology.istio.io/cluster: cluster-a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo/*.example.com"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*/shop.example.com"]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 8443, name: tls, protocol: HTTPS}
    hosts: ["*/passthrough.example.com"]
    tls: {mode: PASSTHROUGH}
"""


def configs(extra: str = "", *, node_id: str = SIDECAR, labels=None, validated: bool = True,
            ) -> dict[str, rc.RouteConfiguration]:
    """The route configurations, by name, of a proxy in cluster-a given MESH plus ``extra`` YAML.

    ``validated=False`` skips the semantic checks, for input they reject but the compiler must
    still treat as Istio does."""
    files = {"mesh.yaml": MESH}
    if extra:
        files["extra.yaml"] = textwrap.dedent(extra).lstrip("\n")
    if validated:
        result = load(snapshot_of(files))
        assert result.valid, "\n".join(map(str, result.findings))
    else:
        result = parse(snapshot_of(files))
    model = build_mesh(result.objects, "rev-1")
    view = make_view(model, "cluster-a", node_id=node_id, labels=labels)
    built = build_routes(model, view, visible_services(model, view))
    assert [c.name for c in built] == sorted(c.name for c in built)
    return {c.name: c for c in built}


def document_line(text: str, marker: str) -> int:
    """The 1-based line where the YAML document holding ``marker`` starts (its provenance line)."""
    lines = text.splitlines()
    index = lines.index(marker)
    while not lines[index].startswith("apiVersion:"):
        index -= 1
    return index + 1


def vhost(config: rc.RouteConfiguration, name: str) -> rc.VirtualHost:
    (found,) = [v for v in config.virtual_hosts if v.name == name]
    return found


def routes_of(extra: str, host: str = REVIEWS, port: int = 9080, **kw) -> list[rc.Route]:
    return list(vhost(configs(extra, **kw)[str(port)], f"{host}:{port}").routes)


def only_route(extra: str, host: str = REVIEWS, port: int = 9080, **kw) -> rc.Route:
    (route,) = routes_of(extra, host, port, **kw)
    return route


def vs(http: str, hosts: str = "[reviews]", name: str = "reviews", extra_spec: str = "") -> str:
    """A VirtualService in namespace bookinfo with the given ``http:`` list (YAML, any indentation)."""
    body = textwrap.indent(textwrap.dedent(http).strip("\n"), "  ")
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {name}, namespace: bookinfo}}\n"
            f"spec:\n  hosts: {hosts}\n{extra_spec}  http:\n{body}\n")


def default_retry_policy(previous_hosts: bool = True) -> rc.RetryPolicy:
    policy = rc.RetryPolicy(retry_on=DEFAULT_RETRY_ON, num_retries=wrappers_pb2.UInt32Value(value=2),
                            retriable_status_codes=[503], host_selection_retry_max_attempts=5)
    if previous_hosts:
        predicate = policy.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
        predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    return policy


def galleon_metadata(message) -> dict:
    return dict(message.metadata.filter_metadata["galleon"])


TO_V1 = """
- route:
  - destination: {host: reviews, subset: v1}
"""


# --- sidecars: configurations, virtual hosts, default routes ---------------------------------------


def test_one_configuration_per_http_port_and_none_for_tcp():
    assert sorted(configs()) == ["9080", "9090"]


def test_service_without_virtual_service_gets_istios_default_route():
    config = configs()["9080"]
    assert not config.validate_clusters.value and config.HasField("validate_clusters")
    assert [v.name for v in config.virtual_hosts] == [f"{DETAILS}:9080", f"{RATINGS}:9080", f"{REVIEWS}:9080"]
    host = vhost(config, f"{REVIEWS}:9080")
    assert list(host.domains) == [REVIEWS, f"{REVIEWS}:9080"]
    (route,) = host.routes
    assert route.name == "default"
    assert route.match == rc.RouteMatch(prefix="/")
    assert route.route.cluster == f"outbound|9080||{REVIEWS}"
    assert route.route.timeout.ToTimedelta().total_seconds() == 0 and route.route.HasField("timeout")
    assert route.route.retry_policy == default_retry_policy()
    assert not route.route.hash_policy


def test_default_route_metadata_names_the_service_entry():
    host = vhost(configs()["9080"], f"{REVIEWS}:9080")
    line = document_line(MESH, "metadata: {name: reviews, namespace: bookinfo}")
    for message in (host, host.routes[0]):
        assert galleon_metadata(message) == {"source": "ServiceEntry/bookinfo/reviews", "file": "mesh.yaml",
                                             "line": float(line)}


def test_domains_add_the_service_addresses_but_not_cidrs():
    host = vhost(configs()["9080"], f"{DETAILS}:9080")
    assert list(host.domains) == [DETAILS, f"{DETAILS}:9080", "240.0.0.5", "240.0.0.5:9080"]


def test_second_port_has_only_services_with_it():
    config = configs()["9090"]
    assert [v.name for v in config.virtual_hosts] == [f"{RATINGS}:9090"]
    assert config.virtual_hosts[0].routes[0].route.cluster == f"outbound|9090||{RATINGS}"


# --- destinations and weights ----------------------------------------------------------------------


def test_single_destination_routes_to_its_subset_cluster():
    route = only_route(vs(TO_V1))
    assert route.match == rc.RouteMatch(prefix="/")  # a rule without match is one route for every path
    assert route.route.cluster == f"outbound|9080|v1|{REVIEWS}"
    assert route.route.retry_policy == default_retry_policy()
    assert route.route.timeout.ToNanoseconds() == 0 and route.route.HasField("timeout")


def test_weighted_destinations_keep_their_weights_and_skip_zero():
    route = only_route(vs("""
        - route:
          - {destination: {host: reviews, subset: v1}, weight: 50}
          - {destination: {host: reviews, subset: v2}, weight: 0}
          - {destination: {host: reviews.bookinfo.svc.cluster.local, subset: v3}, weight: 25}
        """))
    assert not route.route.HasField("cluster")
    assert [(c.name, c.weight.value) for c in route.route.weighted_clusters.clusters] == [
        (f"outbound|9080|v1|{REVIEWS}", 50), (f"outbound|9080|v3|{REVIEWS}", 25)]


def test_several_destinations_without_weights_split_evenly():
    route = only_route(vs("""
        - route:
          - destination: {host: reviews, subset: v1}
          - destination: {host: reviews, subset: v2}
        """))
    assert [(c.name, c.weight.value) for c in route.route.weighted_clusters.clusters] == [
        (f"outbound|9080|v1|{REVIEWS}", 1), (f"outbound|9080|v2|{REVIEWS}", 1)]


def test_destination_port_is_its_own_else_the_only_port_else_the_listeners():
    # validation asks for the port of a multi-port service; Istio still routes to the listener's
    routes = routes_of(vs("""
        - match: [{uri: {prefix: /own}}]
          route: [{destination: {host: ratings, port: {number: 9090}}}]
        - match: [{uri: {prefix: /only}}]
          route: [{destination: {host: reviews}}]
        - route: [{destination: {host: ratings}}]
        """, hosts="[ratings]", name="ratings"), RATINGS, 9080, validated=False)
    assert [r.route.cluster for r in routes] == [
        f"outbound|9090||{RATINGS}", f"outbound|9080||{REVIEWS}", f"outbound|9080||{RATINGS}"]
    grpc = routes_of(vs("- route: [{destination: {host: ratings}}]", hosts="[ratings]", name="ratings"),
                     RATINGS, 9090, validated=False)
    assert grpc[0].route.cluster == f"outbound|9090||{RATINGS}"


# --- matches ---------------------------------------------------------------------------------------


def test_each_match_entry_becomes_a_route_in_order():
    routes = routes_of(vs("""
        - name: pages
          match:
          - {name: exact, uri: {exact: /productpage}}
          - uri: {prefix: /static}
          - uri: {regex: "/api/v[0-9]+/.*"}
          route: [{destination: {host: reviews, subset: v2}}]
        - name: rest
          route: [{destination: {host: reviews, subset: v1}}]
        """))
    assert [r.name for r in routes] == ["pages.exact", "pages", "pages", "rest"]
    assert routes[0].match.path == "/productpage"
    assert routes[1].match.prefix == "/static"
    assert routes[2].match.safe_regex == regex_pb2.RegexMatcher(regex="/api/v[0-9]+/.*")
    assert all(r.match.case_sensitive.value for r in routes[:3])
    assert [r.route.cluster for r in routes] == [f"outbound|9080|v2|{REVIEWS}"] * 3 + [f"outbound|9080|v1|{REVIEWS}"]


def test_header_method_and_query_matchers():
    (route, _) = routes_of(vs("""
        - match:
          - headers:
              x-user: {exact: jason}
              cookie: {regex: "^(.*?;)?(user=jason)(;.*)?$"}
              x-tier: {prefix: gold}
              x-any: {}
            withoutHeaders:
              x-canary: {exact: "no"}
            method: {exact: GET}
            queryParams:
              ver: {exact: "2"}
              debug: {regex: "*"}
            ignoreUriCase: true
            uri: {prefix: /Reviews}
          route: [{destination: {host: reviews, subset: v2}}]
        - route: [{destination: {host: reviews, subset: v1}}]
        """))
    assert list(route.match.headers) == [
        rc.HeaderMatcher(name="cookie", string_match=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex="^(.*?;)?(user=jason)(;.*)?$"))),
        rc.HeaderMatcher(name="x-any", present_match=True),
        rc.HeaderMatcher(name="x-canary", string_match=string_pb2.StringMatcher(exact="no"), invert_match=True,
                         treat_missing_header_as_empty=True),
        rc.HeaderMatcher(name="x-tier", string_match=string_pb2.StringMatcher(prefix="gold")),
        rc.HeaderMatcher(name="x-user", string_match=string_pb2.StringMatcher(exact="jason")),
        rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET")),
    ]
    assert list(route.match.query_parameters) == [
        rc.QueryParameterMatcher(name="debug", present_match=True),
        rc.QueryParameterMatcher(name="ver", string_match=string_pb2.StringMatcher(exact="2")),
    ]
    assert route.match.prefix == "/Reviews"
    assert route.match.HasField("case_sensitive") and route.match.case_sensitive.value is False


def test_match_entries_for_another_port_are_skipped():
    spec = vs("""
        - match: [{port: 9090}]
          route: [{destination: {host: ratings, port: {number: 9090}}}]
          timeout: 3s
        - route: [{destination: {host: ratings, port: {number: 9080}}}]
        """, hosts="[ratings]", name="ratings")
    (on_http,) = routes_of(spec, RATINGS, 9080)
    (on_grpc,) = routes_of(spec, RATINGS, 9090)
    assert on_http.route.cluster == f"outbound|9080||{RATINGS}"
    assert on_grpc.route.cluster == f"outbound|9090||{RATINGS}"
    assert on_grpc.route.timeout.seconds == 3


def test_nothing_follows_a_catch_all_route():
    routes = routes_of(vs("""
        - match: [{headers: {x-user: {exact: jason}}}, {uri: {prefix: /}}, {uri: {prefix: /never}}]
          route: [{destination: {host: reviews, subset: v2}}]
        - route: [{destination: {host: reviews, subset: v1}}]
        """))
    assert [r.route.cluster for r in routes] == [f"outbound|9080|v2|{REVIEWS}"] * 2
    assert routes[1].match.prefix == "/"


def test_match_gateways_source_labels_and_namespace_guard_routes():
    spec = vs("""
        - match: [{gateways: [public]}]
          route: [{destination: {host: reviews, subset: v3}}]
        - match: [{sourceLabels: {app: productpage}}]
          route: [{destination: {host: reviews, subset: v2}}]
        - match: [{sourceNamespace: other}]
          route: [{destination: {host: reviews, subset: v3}}]
        - route: [{destination: {host: reviews, subset: v1}}]
        """)
    plain = routes_of(spec)
    assert [r.route.cluster for r in plain] == [f"outbound|9080|v1|{REVIEWS}"]
    # for productpage the sourceLabels match is a catch-all: Istio stops there
    productpage = routes_of(spec, labels={"app": "productpage"})
    assert [r.route.cluster for r in productpage] == [f"outbound|9080|v2|{REVIEWS}"]


def test_virtual_service_with_no_route_on_a_port_leaves_the_default_route():
    spec = vs("""
        - match: [{port: 9090}]
          route: [{destination: {host: ratings, port: {number: 9090}}}]
        """, hosts="[ratings]", name="ratings")
    (route,) = routes_of(spec, RATINGS, 9080)
    assert route.name == "default" and route.route.cluster == f"outbound|9080||{RATINGS}"


# --- timeouts and retries --------------------------------------------------------------------------


def test_timeout_and_retries_from_the_rule():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          timeout: 5s
          retries: {attempts: 3, perTryTimeout: 1.5s, retryOn: "gateway-error,reset,429"}
        """))
    assert route.route.timeout.seconds == 5
    policy = route.route.retry_policy
    assert policy.num_retries.value == 3
    assert policy.per_try_timeout.ToMilliseconds() == 1500
    # a status code in retryOn becomes a retriable status code, and turns that condition on
    assert policy.retry_on == "gateway-error,reset,retriable-status-codes"
    assert list(policy.retriable_status_codes) == [429]
    # the rest is Istio's default policy
    assert list(policy.retry_host_predicate) == list(default_retry_policy().retry_host_predicate)
    assert policy.host_selection_retry_max_attempts == 5


def test_retries_without_retry_on_keep_istios_conditions():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          retries: {attempts: 4}
        """))
    expected = default_retry_policy()
    expected.num_retries.value = 4
    assert route.route.retry_policy == expected


def test_a_given_retry_on_replaces_the_default_status_codes():
    # Istio's ConvertPolicy: parseRetryOn sets both retry_on and the codes, so naming
    # retriable-status-codes without a code leaves the list empty (the default 503 is gone)
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          retries: {attempts: 1, retryOn: "connect-failure,retriable-status-codes"}
        """))
    assert route.route.retry_policy.retry_on == "connect-failure,retriable-status-codes"
    assert list(route.route.retry_policy.retriable_status_codes) == []


def test_zero_attempts_disable_retries():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          retries: {attempts: 0}
        """))
    assert not route.route.HasField("retry_policy")


# --- faults, rewrites, headers, mirrors ------------------------------------------------------------


def test_fault_injection_is_per_route_fault_filter_config():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          fault:
            delay: {fixedDelay: 7s, percentage: {value: 10}}
            abort: {httpStatus: 503, percentage: {value: 0.5}}
        """))
    assert list(route.typed_per_filter_config) == ["envoy.filters.http.fault"]
    packed = route.typed_per_filter_config["envoy.filters.http.fault"]
    assert packed.type_url == "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    fault = fault_pb2.HTTPFault()
    assert packed.Unpack(fault)
    assert fault.delay.fixed_delay.seconds == 7
    assert fault.delay.percentage == percent_pb2.FractionalPercent(
        numerator=100_000, denominator=percent_pb2.FractionalPercent.MILLION)
    assert fault.abort.http_status == 503
    assert fault.abort.percentage == percent_pb2.FractionalPercent(
        numerator=5_000, denominator=percent_pb2.FractionalPercent.MILLION)


def test_grpc_abort_uses_the_status_code_number():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
        """))
    fault = fault_pb2.HTTPFault()
    route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.abort.grpc_status == 14 and not fault.HasField("delay")


def test_rewrites():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          rewrite: {uri: /v2/reviews, authority: reviews.internal}
        """))
    assert route.route.prefix_rewrite == "/v2/reviews"
    assert route.route.host_rewrite_literal == "reviews.internal"


def test_header_operations():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          headers:
            request:
              set: {x-b: "1", x-a: two}
              add: {x-trace: "yes"}
              remove: [x-secret, ":path"]
            response:
              set: {cache-control: no-store}
              remove: [server]
        """))
    header = base_pb2.HeaderValueOption
    overwrite, append = header.OVERWRITE_IF_EXISTS_OR_ADD, header.APPEND_IF_EXISTS_OR_ADD
    assert [(h.header.key, h.header.value, h.append_action) for h in route.request_headers_to_add] == [
        ("x-a", "two", overwrite), ("x-b", "1", overwrite), ("x-trace", "yes", append)]
    assert list(route.request_headers_to_remove) == ["x-secret"]  # Envoy may not remove pseudo-headers
    assert [(h.header.key, h.header.value, h.append_action) for h in route.response_headers_to_add] == [
        ("cache-control", "no-store", overwrite)]
    assert list(route.response_headers_to_remove) == ["server"]


def test_setting_the_host_header_is_a_host_rewrite():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          headers: {request: {set: {host: reviews.example.com}}}
        """))
    assert route.route.host_rewrite_literal == "reviews.example.com"
    assert not route.request_headers_to_add


def test_destination_headers_of_weighted_destinations_stay_with_them():
    route = only_route(vs("""
        - route:
          - destination: {host: reviews, subset: v1}
            weight: 90
          - destination: {host: reviews, subset: v2}
            weight: 10
            headers: {request: {set: {x-canary: "true"}}}
        """))
    first, second = route.route.weighted_clusters.clusters
    assert not first.request_headers_to_add
    assert [(h.header.key, h.header.value) for h in second.request_headers_to_add] == [("x-canary", "true")]


def test_mirror_with_percentage():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          mirror: {host: reviews, subset: v2}
          mirrorPercentage: {value: 12.5}
        """))
    (mirror,) = route.route.request_mirror_policies
    assert mirror.cluster == f"outbound|9080|v2|{REVIEWS}"
    assert mirror.runtime_fraction == base_pb2.RuntimeFractionalPercent(default_value=percent_pb2.FractionalPercent(
        numerator=125_000, denominator=percent_pb2.FractionalPercent.MILLION))
    assert mirror.trace_sampled == wrappers_pb2.BoolValue(value=False)


def test_mirror_without_percentage_mirrors_everything_and_zero_mirrors_nothing():
    everything = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          mirror: {host: reviews, subset: v3}
        """))
    (mirror,) = everything.route.request_mirror_policies
    assert mirror.cluster == f"outbound|9080|v3|{REVIEWS}"
    fraction = mirror.runtime_fraction.default_value
    assert fraction.numerator / {0: 100, 2: 1_000_000}[fraction.denominator] == 1
    nothing = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          mirror: {host: reviews, subset: v2}
          mirrorPercentage: {value: 0}
        """))
    assert not nothing.route.request_mirror_policies


def test_cors_policy_is_per_route_cors_filter_config():
    route = only_route(vs("""
        - route: [{destination: {host: reviews, subset: v1}}]
          corsPolicy:
            allowOrigins: [{exact: "https://example.com"}, {prefix: "https://app."}]
            allowMethods: [GET, POST]
            allowHeaders: [x-user]
            maxAge: 24h
            allowCredentials: true
        """))
    policy = cors_pb2.CorsPolicy()
    assert route.typed_per_filter_config["envoy.filters.http.cors"].Unpack(policy)
    assert list(policy.allow_origin_string_match) == [string_pb2.StringMatcher(exact="https://example.com"),
                                                      string_pb2.StringMatcher(prefix="https://app.")]
    assert (policy.allow_methods, policy.allow_headers, policy.max_age) == ("GET,POST", "x-user", "86400")
    assert policy.allow_credentials.value is True
    assert policy.filter_enabled.default_value.numerator == 100


# --- redirects and direct responses ----------------------------------------------------------------


def test_redirect():
    route = only_route(vs("""
        - redirect: {uri: /v1/reviews, authority: new.example.com, redirectCode: 302, scheme: https, port: 8443}
        """))
    assert route.WhichOneof("action") == "redirect"
    assert route.redirect == rc.RedirectAction(
        path_redirect="/v1/reviews", host_redirect="new.example.com", scheme_redirect="https", port_redirect=8443,
        response_code=rc.RedirectAction.FOUND)


def test_redirect_defaults_to_301_and_drops_a_default_port():
    route = only_route(vs("- redirect: {uri: /moved, port: 80}"))
    assert route.redirect == rc.RedirectAction(path_redirect="/moved",
                                               response_code=rc.RedirectAction.MOVED_PERMANENTLY)


def test_direct_response():
    routes = routes_of(vs("""
        - match: [{uri: {exact: /health}}]
          directResponse: {status: 200, body: {string: ok}}
        - directResponse: {status: 418, body: {bytes: "dGVh"}}
        """))
    assert routes[0].direct_response == rc.DirectResponseAction(
        status=200, body=base_pb2.DataSource(inline_string="ok"))
    assert routes[1].direct_response == rc.DirectResponseAction(
        status=418, body=base_pb2.DataSource(inline_bytes=b"tea"))
    assert not any(r.HasField("route") for r in routes)


# --- consistent hashing from DestinationRules ------------------------------------------------------

HASHED_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: bookinfo}}
spec:
  host: ratings.bookinfo.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash: {hash}
  subsets:
  - name: v1
    labels: {{version: v1}}
    trafficPolicy:
      loadBalancer:
        consistentHash: {{httpHeaderName: x-subset}}
"""


def hash_policy(**fields) -> rc.RouteAction.HashPolicy:
    return rc.RouteAction.HashPolicy(**fields)


@pytest.mark.parametrize("consistent_hash, expected", [
    ("{httpHeaderName: x-user}", hash_policy(header=rc.RouteAction.HashPolicy.Header(header_name="x-user"))),
    ("{httpCookie: {name: session, ttl: 60s, path: /}}", hash_policy(cookie=rc.RouteAction.HashPolicy.Cookie(
        name="session", ttl={"seconds": 60}, path="/"))),
    ("{useSourceIp: true}", hash_policy(
        connection_properties=rc.RouteAction.HashPolicy.ConnectionProperties(source_ip=True))),
    ("{httpQueryParameterName: user}", hash_policy(
        query_parameter=rc.RouteAction.HashPolicy.QueryParameter(name="user"))),
])
def test_consistent_hash_becomes_the_routes_hash_policy(consistent_hash, expected):
    rule = HASHED_RULE.format(hash=consistent_hash)
    (default,) = routes_of(rule, RATINGS)
    assert list(default.route.hash_policy) == [expected]
    # Istio builds the default route's retry policy without regard to hashing (ConvertPolicy(default, false))
    assert default.route.retry_policy == default_retry_policy(previous_hosts=True)
    assert galleon_metadata(default)["also"] == ["DestinationRule/bookinfo/ratings (extra.yaml:1)"]
    routed = only_route(rule + "---\n" + vs("- route: [{destination: {host: ratings, port: {number: 9080}}}]",
                                            hosts="[ratings]", name="ratings"), RATINGS)
    assert list(routed.route.hash_policy) == [expected]


def test_subset_consistent_hash_wins():
    rule = HASHED_RULE.format(hash="{httpHeaderName: x-user}")
    to_v1 = "- route: [{destination: {host: ratings, subset: v1, port: {number: 9080}}}]"
    route = only_route(rule + "---\n" + vs(to_v1, hosts="[ratings]", name="ratings"), RATINGS)
    assert route.route.hash_policy[0].header.header_name == "x-subset"


# --- provenance and binding ------------------------------------------------------------------------


def test_virtual_service_routes_carry_its_provenance():
    config = configs(vs(TO_V1))["9080"]
    host = vhost(config, f"{REVIEWS}:9080")
    expected = {"source": "VirtualService/bookinfo/reviews", "file": "extra.yaml", "line": 1.0}
    assert galleon_metadata(host) == expected
    assert galleon_metadata(host.routes[0]) == expected
    # the configuration names its first virtual host's sources (its revision is stamped when the view is compiled)
    assert galleon_metadata(config) == galleon_metadata(config.virtual_hosts[0])


def test_short_and_wildcard_virtual_service_hosts():
    wildcard = vs("- route: [{destination: {host: reviews, subset: v3}}]",
                  hosts="['*.bookinfo.svc.cluster.local']", name="catch-all")
    exact = vs(TO_V1, name="reviews-exact")
    routes = routes_of(wildcard + "---\n" + exact)
    assert [r.route.cluster for r in routes] == [f"outbound|9080|v1|{REVIEWS}"]  # the exact host wins
    (ratings,) = routes_of(wildcard, RATINGS)
    assert ratings.route.cluster == f"outbound|9080|v3|{REVIEWS}"


# --- gateways --------------------------------------------------------------------------------------

GATEWAY_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: bookinfo}
spec:
  hosts: [shop.example.com, "*.example.com"]
  gateways: [istio-system/public]
  http:
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}}]
  - route:
    - {destination: {host: ratings.bookinfo.svc.cluster.local, port: {number: 9080}}, weight: 70}
    - {destination: {host: details.bookinfo.svc.cluster.local}, weight: 30}
"""


def gateway_configs(extra: str = GATEWAY_VS, labels=INGRESS) -> dict[str, rc.RouteConfiguration]:
    return configs(GATEWAY + "---\n" + textwrap.dedent(extra).lstrip("\n"), node_id=ROUTER, labels=labels)


def test_gateway_route_configurations_per_terminated_http_port():
    built = gateway_configs()
    assert sorted(built) == ["http.443", "http.80"]  # the PASSTHROUGH server has no HTTP routes
    http = built["http.80"]
    assert [v.name for v in http.virtual_hosts] == ["*.example.com:80", "shop.example.com:80"]
    assert list(vhost(http, "shop.example.com:80").domains) == ["shop.example.com", "shop.example.com:80"]
    https = built["http.443"]
    # "*.example.com" narrows to the one host the HTTPS server admits, which the VS also names
    assert [v.name for v in https.virtual_hosts] == ["shop.example.com:443"]


def test_gateway_destinations_and_routes():
    routes = list(vhost(gateway_configs()["http.80"], "shop.example.com:80").routes)
    assert routes[0].match.prefix == "/reviews"
    assert routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"
    assert [(c.name, c.weight.value) for c in routes[1].route.weighted_clusters.clusters] == [
        (f"outbound|9080||{RATINGS}", 70), (f"outbound|9080||{DETAILS}", 30)]
    assert routes[0].route.retry_policy == default_retry_policy()
    assert galleon_metadata(routes[0])["source"] == "VirtualService/bookinfo/shop"


def test_gateway_only_virtual_service_is_not_used_by_sidecars():
    sidecar = configs(GATEWAY + "---\n" + textwrap.dedent(GATEWAY_VS).lstrip("\n"))
    (route,) = vhost(sidecar["9080"], f"{REVIEWS}:9080").routes
    assert route.name == "default"
    assert not any(v.name.startswith("shop.") for c in sidecar.values() for v in c.virtual_hosts)


def test_router_not_selected_by_the_gateway_gets_nothing():
    assert gateway_configs(labels={"istio": "eastwestgateway"}) == {}


def test_server_host_namespace_restricts_virtual_services():
    other_namespace = GATEWAY_VS.replace("namespace: bookinfo", "namespace: shop")
    built = gateway_configs(other_namespace)
    # port 80 admits bookinfo/* only: Istio's 404 virtual host; port 443 admits */shop.example.com
    (blackhole,) = built["http.80"].virtual_hosts
    assert (blackhole.name, list(blackhole.domains), len(blackhole.routes)) == ("blackhole:80", ["*"], 0)
    assert [v.name for v in built["http.443"].virtual_hosts] == ["shop.example.com:443"]


def test_gateway_binding_by_short_name_and_https_redirect():
    gateway = GATEWAY.replace("protocol: HTTP}", "protocol: HTTP}\n    tls: {httpsRedirect: true}")
    bound = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: local, namespace: istio-system}
    spec:
      hosts: [shop.example.com]
      gateways: [public]
      http:
      - route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v1}}]
    """
    built = configs(gateway.replace("bookinfo/*.example.com", "*/*.example.com") + "---\n"
                    + textwrap.dedent(bound).lstrip("\n"), node_id=ROUTER, labels=INGRESS)
    host = vhost(built["http.80"], "shop.example.com:80")
    assert host.require_tls == rc.VirtualHost.ALL
    assert host.routes[0].route.cluster == f"outbound|9080|v1|{REVIEWS}"
    assert vhost(built["http.443"], "shop.example.com:443").require_tls == rc.VirtualHost.NONE


def test_virtual_services_sharing_a_gateway_host_are_merged():
    second = GATEWAY_VS.replace("name: shop", "name: shop-api").replace(
        'hosts: [shop.example.com, "*.example.com"]', "hosts: [shop.example.com]").replace(
        "prefix: /reviews", "prefix: /api")
    text = GATEWAY_VS + "---\n" + second
    host = vhost(gateway_configs(text)["http.80"], "shop.example.com:80")
    # the catch-all of the first no longer hides the second's /api
    assert [(r.match.prefix, galleon_metadata(r)["source"]) for r in host.routes] == [
        ("/reviews", "VirtualService/bookinfo/shop"), ("/api", "VirtualService/bookinfo/shop-api"),
        ("/", "VirtualService/bookinfo/shop"), ("/", "VirtualService/bookinfo/shop-api")]
    line = document_line(GATEWAY + "---\n" + text.lstrip("\n"), "metadata: {name: shop-api, namespace: bookinfo}")
    assert galleon_metadata(host)["also"] == [f"VirtualService/bookinfo/shop-api (extra.yaml:{line})"]


# --- the sample repository -------------------------------------------------------------------------


def sample_views(mesh):
    for cluster in sorted(mesh.clusters):
        yield make_view(mesh, cluster)
        yield make_view(mesh, cluster, node_id=ROUTER, labels=INGRESS)


def test_every_sample_cluster_builds_complete_deterministic_routes(sample_mesh):
    mesh = sample_mesh
    seen = set()
    for view in sample_views(mesh):
        services = visible_services(mesh, view)
        first = build_routes(mesh, view, services)
        # a freshly built mesh: what one mesh memoizes must not change the output
        second = build_routes(mesh_from(sample_files(), "sample"), view, visible_services(mesh, view))
        assert first, view
        for a, b in zip(first, second, strict=True):
            assert a.IsInitialized()
            assert a.SerializeToString(deterministic=True) == a.SerializeToString(deterministic=True)
            assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
            seen.add(a.name)
    assert seen == {"9080", "9090", "18080", "http.80", "http.443"}


def test_sample_routes_match_the_bookinfo_intent(sample_mesh):
    mesh = sample_mesh
    view = make_view(mesh, "cluster-a")
    sidecar = {c.name: c for c in build_routes(mesh, view, visible_services(mesh, view))}
    reviews = vhost(sidecar["9080"], f"{REVIEWS}:9080").routes
    assert reviews[0].match.headers[0] == rc.HeaderMatcher(name="end-user",
                                                           string_match=string_pb2.StringMatcher(exact="jason"))
    assert [(c.name.split("|")[2], c.weight.value) for c in reviews[1].route.weighted_clusters.clusters] == [
        ("v1", 50), ("v2", 40), ("v3", 10)]
    (ratings_grpc,) = vhost(sidecar["9090"], f"{RATINGS}:9090").routes
    assert ratings_grpc.route.retry_policy.retry_on == "unavailable,cancelled,resource-exhausted"
    assert ratings_grpc.route.timeout.seconds == 3
    router = make_view(mesh, "cluster-a", node_id=ROUTER, labels=INGRESS)
    gateway = {c.name: c for c in build_routes(mesh, router, visible_services(mesh, router))}
    productpage = vhost(gateway["http.80"], "productpage.bookinfo.svc.cluster.local:80").routes
    # the mesh-only catch-all rule is not exposed at the gateway
    assert [r.match.WhichOneof("path_specifier") for r in productpage] == ["path", "prefix", "path", "path", "prefix"]
    assert "/" not in [r.match.prefix for r in productpage]


def test_packed_configs_are_any_compatible():
    config = configs(vs(TO_V1))["9080"]
    packed = any_pb2.Any()
    packed.Pack(config)
    assert packed.type_url == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


# --- the real Envoy ---------------------------------------------------------------------------------

EVERYTHING = vs("""
    - name: shaped
      match:
      - uri: {regex: "/api/v[0-9]+/.*"}
        headers: {x-user: {exact: jason}, x-any: {}}
        withoutHeaders: {x-canary: {prefix: "y"}}
        method: {exact: GET}
        queryParams: {ver: {regex: "[0-9]+"}}
        ignoreUriCase: true
      route:
      - {destination: {host: reviews, subset: v1}, weight: 70}
      - destination: {host: reviews, subset: v2}
        weight: 30
        headers: {request: {set: {x-canary: "true", host: canary.internal}}, response: {remove: [x-debug]}}
      timeout: 2.5s
      retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,429", retryRemoteLocalities: true, backoff: 25ms}
      fault:
        delay: {fixedDelay: 100ms, percentage: {value: 0.1}}
        abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
      rewrite: {uri: /v2/api, authority: reviews.internal}
      headers:
        request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
        response: {set: {x-d: "4"}, add: {x-e: "5"}, remove: [x-f]}
      mirror: {host: reviews, subset: v3}
      mirrorPercentage: {value: 33.3}
      corsPolicy:
        allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*[.]example[.]com"}]
        allowMethods: [GET]
        maxAge: 1h
    - match: [{uri: {exact: /moved}}]
      redirect: {uri: /new, authority: example.com, redirectCode: 308, derivePort: FROM_REQUEST_PORT}
    - match: [{uri: {prefix: /teapot}}]
      directResponse: {status: 418, body: {string: "short and stout"}}
    - route: [{destination: {host: reviews, subset: v1}}]
      retries: {attempts: 0}
    """) + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: bookinfo}
spec:
  host: details.bookinfo.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: session, ttl: 30s, path: /}}
"""


@pytest.mark.e2e
def test_envoy_accepts_every_route_feature(tmp_path):
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    from tests.e2e.envoy import validate_with_envoy

    built = configs(EVERYTHING) | configs(GATEWAY + "---\n" + textwrap.dedent(GATEWAY_VS).lstrip("\n"),
                                          node_id=ROUTER, labels=INGRESS)
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id, boot.node.cluster = SIDECAR, "validate"
    for port, (name, config) in enumerate(sorted(built.items()), start=20000):
        manager = hcm_pb2.HttpConnectionManager(stat_prefix=name, route_config=config)
        for filter_name, typed in (("envoy.filters.http.fault", fault_pb2.HTTPFault()),
                                   ("envoy.filters.http.cors", cors_pb2.Cors()),
                                   ("envoy.filters.http.router", router_pb2.Router())):
            manager.http_filters.add(name=filter_name).typed_config.Pack(typed)
        listener = boot.static_resources.listeners.add(name=name)
        listener.address.socket_address.address, listener.address.socket_address.port_value = "127.0.0.1", port
        chain_filter = listener.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager")
        chain_filter.typed_config.Pack(manager)
    result = validate_with_envoy(boot, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]


def test_weighted_route_appends_every_destination_hash_and_keeps_previous_hosts():
    rules = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  subsets:
  - name: a
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-a}}}
  - name: b
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-b}}}
"""
    route = only_route(rules + "---\n" + vs(
        "- route:\n"
        "  - {destination: {host: ratings, subset: a, port: {number: 9080}}, weight: 50}\n"
        "  - {destination: {host: ratings, subset: b, port: {number: 9080}}, weight: 50}",
        hosts="[ratings]", name="ratings"), RATINGS)
    assert [h.header.header_name for h in route.route.hash_policy] == ["x-a", "x-b"]
    assert [p.name for p in route.route.retry_policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"]
