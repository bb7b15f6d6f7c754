"""RDS: the route configurations one proxy gets, translated from VirtualServices as Istio does.

A sidecar gets one configuration per outbound HTTP port (``9080``) with a
virtual host per service on that port; a gateway ("router") gets one per
HTTP or TLS-terminating server port (``http.80``) with a virtual host per
VirtualService host its servers admit. HTTP rules become Envoy routes in
VirtualService order. Pure and deterministic: same mesh and view, same bytes.
"""
from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable, Iterable, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from . import cache, provenance
from .protos import pack
from .durations import duration
from .gateways import MESH_GATEWAY, MeshVirtualServices, bound_gateways, qualified_gateways, weighted_destinations
from .hosts import fqdn, matches
from .model import Mesh, Port, Service
from .names import cluster_name, gateway_route_name, parse_cluster_name, sidecar_route_name, virtual_host_name
from .parse import SourceObject
from .view import ROUTER, ProxyView


FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
DEFAULT_ROUTE_NAME = "default"  # Istio's name for the route of a service without VirtualService
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRIES = 2
DEFAULT_RETRIABLE_STATUS = 503
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
# Istio accepts direct-response bodies up to 1 MiB; Envoy's own default limit is 4 KiB.
MAX_DIRECT_RESPONSE_BODY = 1024 * 1024
NO_TIMEOUT = "0s"

# Gateway TLS modes in which the gateway decrypts, so HTTP routing applies behind the TLS.
TERMINATING_TLS_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")
PASSTHROUGH_TLS_MODES = ("PASSTHROUGH", "AUTO_PASSTHROUGH")

Redirect = rc.RedirectAction
REDIRECT_CODES = {301: Redirect.MOVED_PERMANENTLY, 302: Redirect.FOUND, 303: Redirect.SEE_OTHER,
                  307: Redirect.TEMPORARY_REDIRECT, 308: Redirect.PERMANENT_REDIRECT}
# gRPC status names in code order (OK is 0), as a fault abort's grpcStatus names them.
GRPC_STATUS_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                     "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                     "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                     "UNAUTHENTICATED")

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
MILLION = percent_pb2.FractionalPercent.MILLION
HUNDRED = percent_pb2.FractionalPercent.HUNDRED


def build_routes(mesh: Mesh, view: ProxyView, services: list[Service]) -> list[RouteConfiguration]:
    """The route configurations for a proxy with this view, given the services it sees (scoped, sorted
    by host); sorted by name."""
    if view.role == ROUTER:
        configs = _gateway_configs(mesh, view, services)
    else:
        by_host = {service.host: service for service in services}
        configs = [route_configuration(table.name, [sidecar_virtual_host(mesh, view, table.port, by_host, service)
                                                    for service in table.services])
                   for table in sidecar_route_tables(services)]
    return sorted(configs, key=lambda config: config.name)


@dataclass(frozen=True)
class _Context:
    """What routes are translated for: one proxy, one port, and the gateway (or the mesh) serving it."""

    mesh: Mesh
    view: ProxyView
    port: int
    services: Mapping[str, Service]  # the visible services, by host
    gateways: frozenset[str]  # "mesh" for a sidecar, "namespace/name" of the Gateway for a router
    tls: bool = False  # clients reached this port over TLS (redirects keep the scheme)


@dataclass
class _VirtualHost:
    """A virtual host being assembled; gateways may merge several VirtualServices into one."""

    name: str
    domains: list[str]
    routes: list[rc.Route]
    sources: list[SourceObject]
    require_tls: bool = False
    merged: bool = False


# --- sidecars -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SidecarRoutes:
    """A sidecar's route configuration for one outbound HTTP port: the services whose virtual hosts
    it holds, in host order."""

    name: str
    port: int
    services: list[Service]


def sidecar_route_tables(services: list[Service]) -> list[SidecarRoutes]:
    """A sidecar's route configurations, one per port some service routes HTTP on, by port."""
    ports = sorted({port.number for service in services for port in service.ports if port.routes_http})
    return [SidecarRoutes(sidecar_route_name(port), port, [s for s in services if _serves_http_on(s, port)])
            for port in ports]


def sidecar_virtual_host(mesh: Mesh, view: ProxyView, port: int, services: Mapping[str, Service],
                         service: Service) -> rc.VirtualHost:
    """A sidecar's virtual host for one service on one port (``services``: every service it sees, by
    host, which its routes may send traffic to)."""
    ctx = _Context(mesh, view, port, services, frozenset({MESH_GATEWAY}))
    return _virtual_host_message(_service_virtual_host(ctx, service))


def service_route_configurations(mesh: Mesh, view: ProxyView, services: list[Service],
                                 name: Callable[[str, int], str]) -> list[RouteConfiguration]:
    """One configuration per HTTP port of each service, named ``name(host, port)``, holding that
    service's virtual host alone, built as a sidecar's is: for clients whose listener names one
    service (proxyless gRPC, see proxyless.py). Unsorted."""
    by_host = {service.host: service for service in services}
    configs = []
    for service in services:
        for port in service.ports:
            if port.routes_http:
                ctx = _Context(mesh, view, port.number, by_host, frozenset({MESH_GATEWAY}))
                vhost = _virtual_host_message(_service_virtual_host(ctx, service))
                configs.append(route_configuration(name(service.host, port.number), [vhost]))
    return configs


def _serves_http_on(service: Service, number: int) -> bool:
    port = service.port(number)
    return port is not None and port.routes_http


def _service_virtual_host(ctx: _Context, service: Service) -> _VirtualHost:
    """The service's VirtualService routes, or Istio's default route when none applies on this port."""
    name = virtual_host_name(service.host, ctx.port)
    domains = _service_domains(service, ctx.port) + [
        domain for alias in ctx.mesh.aliases_of(service.host) for domain in _domains(alias, ctx.port)]
    vs = MeshVirtualServices.of(ctx.mesh).for_host(service.host)
    if vs is not None:
        routes = _virtual_service_routes(ctx, vs)
        if routes:
            return _VirtualHost(name, domains, routes, [vs])
    return _VirtualHost(name, domains, [_default_route(ctx, service)], [service.source])


def _service_domains(service: Service, port: int) -> list[str]:
    domains = _domains(service.host, port)
    for address in service.addresses:
        if "/" not in address:  # a CIDR is no Host header a client sends
            domains += _domains(address, port)
    return domains


def _domains(host: str, port: int) -> list[str]:
    """``host`` and ``host:port``: clients send the port in Host when it is not the scheme's default."""
    if host == "*":
        return ["*"]
    with_port = f"{host}:{port}"
    if ":" in host:  # only an IPv6 address needs brackets (and parsing, which a name fails slowly)
        try:
            with_port = f"[{host}]:{port}" if ipaddress.ip_address(host).version == 6 else with_port
        except ValueError:
            pass
    return [host, with_port]


def _default_route(ctx: _Context, service: Service) -> rc.Route:
    """Istio's route for a service without VirtualService: everything to the service's port cluster,
    no timeout, default retries, and the DestinationRule's consistent hash if it has one."""
    route = rc.Route(name=DEFAULT_ROUTE_NAME, match=rc.RouteMatch(prefix="/"),
                     decorator=rc.Decorator(operation=f"{service.host}:{ctx.port}/*"))
    action = route.route
    action.cluster = cluster_name(ctx.port, None, service.host)
    _set_timeout(action, None)
    sources = [service.source]
    hashing = _hash_policy(ctx, service.host, ctx.port, None)
    if hashing is not None:
        action.hash_policy.append(hashing[0])
        sources.append(hashing[1])
    # Istio builds the default route's retries without regard to hashing: previous_hosts stays
    _set_retry_policy(action, None, hashing=False)
    provenance.set_sources(route.metadata, *sources)
    return route


# --- gateways -------------------------------------------------------------------------------------


def _gateway_configs(mesh: Mesh, view: ProxyView, services: list[Service]) -> list[RouteConfiguration]:
    by_host = {service.host: service for service in services}
    servers_by_port: dict[int, list[tuple[SourceObject, dict]]] = {}
    for gateway in mesh.gateways:
        if view.selected_by(gateway.spec.get("selector")):
            for server in gateway.spec.get("servers", []):
                if _routes_http(server):
                    servers_by_port.setdefault(server["port"]["number"], []).append((gateway, server))
    return [_gateway_config(mesh, view, by_host, port, servers) for port, servers in servers_by_port.items()]


def _routes_http(server: dict) -> bool:
    """Whether the gateway sees HTTP on this server: plain HTTP, or HTTPS it decrypts itself."""
    protocol = server["port"].get("protocol", "").upper()
    mode = (server.get("tls") or {}).get("mode", "")
    if mode in PASSTHROUGH_TLS_MODES:
        return False
    return Port(0, "", protocol).is_http or (protocol == "HTTPS" and mode in TERMINATING_TLS_MODES)


def _gateway_config(mesh: Mesh, view: ProxyView, services: Mapping[str, Service], port: int,
                    servers: list[tuple[SourceObject, dict]]) -> RouteConfiguration:
    """All servers on one port share one configuration (the listener has one HTTP manager per port)."""
    vhosts: dict[str, _VirtualHost] = {}
    for gateway, server in servers:
        tls = server["port"].get("protocol", "").upper() == "HTTPS"
        ctx = _Context(mesh, view, port, services, frozenset({_gateway_ref(gateway)}), tls)
        https_redirect = bool((server.get("tls") or {}).get("httpsRedirect"))
        for vs in mesh.virtual_services:
            if _gateway_ref(gateway) not in bound_gateways(vs):
                continue
            hosts = _admitted_hosts(vs, gateway, server)
            routes = _virtual_service_routes(ctx, vs) if hosts else []
            for host in hosts if routes else []:  # without a route here, the VirtualService adds no host
                _add_gateway_routes(vhosts, host, port, routes, vs, https_redirect)
    for vhost in vhosts.values():
        if vhost.merged:
            vhost.routes = _catch_alls_last(vhost.routes)
    gateways = [gateway for gateway, _ in servers]
    if not vhosts:
        # Istio's answer when nothing is bound: a virtual host without routes, so Envoy says 404.
        vhosts["*"] = _VirtualHost(virtual_host_name("blackhole", port), ["*"], [], gateways[:1])
    return route_configuration(gateway_route_name(port), [_virtual_host_message(v) for v in vhosts.values()],
                               gateways)


def _gateway_ref(gateway: SourceObject) -> str:
    return f"{gateway.namespace}/{gateway.name}"


def _admitted_hosts(vs: SourceObject, gateway: SourceObject, server: dict) -> list[str]:
    """The VirtualService's hosts this server admits, each narrowed to the more specific of the
    two when one is a wildcard covering the other (``*.example.com`` on ``a.example.com``)."""
    hosts: list[str] = []
    for entry in server.get("hosts", []):
        namespace, _, pattern = entry.rpartition("/")
        namespace = gateway.namespace if namespace == "." else namespace
        if namespace not in ("", "*", vs.namespace):
            continue
        for vs_host in (fqdn(h, vs.namespace) for h in vs.spec.get("hosts", [])):
            host = vs_host if matches(pattern, vs_host) else pattern if matches(vs_host, pattern) else None
            if host is not None and host not in hosts:
                hosts.append(host)
    return hosts


def _add_gateway_routes(vhosts: dict[str, _VirtualHost], host: str, port: int, routes: list[rc.Route],
                        vs: SourceObject, https_redirect: bool) -> None:
    """Two VirtualServices claiming one host on one port share its virtual host, as in Istio:
    Envoy rejects a configuration with the same domain twice."""
    vhost = vhosts.get(host)
    if vhost is None:
        vhosts[host] = vhost = _VirtualHost(virtual_host_name(host, port), _domains(host, port), list(routes), [vs])
    elif vs not in vhost.sources:
        vhost.routes += routes
        vhost.sources.append(vs)
        vhost.merged = True
    vhost.require_tls |= https_redirect


def _catch_alls_last(routes: list[rc.Route]) -> list[rc.Route]:
    """After a merge, a catch-all of the first VirtualService would hide every route of the next."""
    return [r for r in routes if not _is_catch_all(r)] + [r for r in routes if _is_catch_all(r)]


# --- configurations and virtual hosts -------------------------------------------------------------


def route_configuration(name: str, vhosts: list[rc.VirtualHost],
                        sources: Iterable[SourceObject] = ()) -> RouteConfiguration:
    """A configuration of these virtual hosts, by name, naming ``sources``, else its first virtual
    host's (as a sidecar listener names its first service's); each virtual host and route carries its own."""
    config = route_configuration_shell(name)
    unique = list(dict.fromkeys(sources))
    if unique:
        provenance.set_sources(config.metadata, *unique)
    taken: set[str] = set()
    for vhost in sorted(vhosts, key=lambda v: v.name):
        # Envoy rejects a domain listed twice in one configuration: the first virtual host keeps it.
        domains = [d for d in dict.fromkeys(vhost.domains) if d not in taken]
        if domains:
            taken.update(domains)
            if len(domains) < len(vhost.domains):
                del vhost.domains[:]
                vhost.domains.extend(domains)
            if not config.HasField("metadata"):
                config.metadata.CopyFrom(vhost.metadata)  # the first's
            config.virtual_hosts.append(vhost)
    return config


def route_configuration_shell(name: str) -> RouteConfiguration:
    """A configuration's own fields, without virtual hosts or provenance."""
    return RouteConfiguration(
        name=name,
        # Routes may name clusters the proxy does not have (yet): Envoy answers 503, not NACK.
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        max_direct_response_body_size_bytes=wrappers_pb2.UInt32Value(value=MAX_DIRECT_RESPONSE_BODY))


def _virtual_host_message(vhost: _VirtualHost) -> rc.VirtualHost:
    message = rc.VirtualHost(name=vhost.name, domains=vhost.domains,
                             # Istio's default: lets applications see retries (x-envoy-attempt-count).
                             include_request_attempt_count=True)
    message.routes.extend(vhost.routes)
    provenance.set_sources(message.metadata, *vhost.sources)
    if vhost.require_tls:
        message.require_tls = rc.VirtualHost.ALL
    return message


# --- VirtualService HTTP rules to routes ----------------------------------------------------------


def _virtual_service_routes(ctx: _Context, vs: SourceObject) -> list[rc.Route]:
    """Each match of each HTTP rule becomes a route, in order. As in Istio, nothing follows a
    catch-all (Envoy picks the first matching route, so it would never be used)."""
    routes = []
    for rule in vs.spec.get("http", []):
        for match in rule.get("match") or [None]:
            route = _route(ctx, vs, rule, match)
            if route is None:
                continue
            routes.append(route)
            if _is_catch_all(route):
                return routes
        if not rule.get("match"):
            return routes
    return routes


def _match_applies(ctx: _Context, vs: SourceObject, match: dict) -> bool:
    """Istio's guards on a match: its port, its gateways, else the client's labels and namespace."""
    if match.get("port") and match["port"] != ctx.port:
        return False
    if match.get("gateways"):
        return bool(qualified_gateways(match["gateways"], vs.namespace) & ctx.gateways)
    if not ctx.view.selected_by(match.get("sourceLabels")):
        return False
    return match.get("sourceNamespace", "") in ("", ctx.view.namespace)


def _route(ctx: _Context, vs: SourceObject, rule: dict, match: dict | None) -> rc.Route | None:
    if match is not None and not _match_applies(ctx, vs, match):
        return None
    route = rc.Route(name=_route_name(rule, match), match=_route_match(match))
    if match and match.get("statPrefix"):
        route.stat_prefix = match["statPrefix"]
    operations = _header_operations(rule.get("headers"))
    _add_header_operations(route, operations)
    sources: list[SourceObject] = [vs]
    if "redirect" in rule:
        redirect = _redirect(rule["redirect"], ctx)
        if redirect is None:
            return None  # an unsupported redirect code: Envoy would reject a route without action
        route.redirect.CopyFrom(redirect)
    elif "directResponse" in rule:
        route.direct_response.CopyFrom(_direct_response(rule["directResponse"]))
    elif rule.get("route") and (destinations := weighted_destinations(rule["route"])):
        sources += _apply_route_action(ctx, vs, rule, destinations, route, operations.authority)
    else:
        return None  # nothing to do with a matched request (a delegate is not expanded here)
    route.decorator.operation = _operation(route, vs.name, ctx.port)
    _add_filter_configs(route, rule)
    provenance.set_sources(route.metadata, *sources)
    return route


def _route_name(rule: dict, match: dict | None) -> str:
    """Istio's ``rule.match`` naming, so route stats and config dumps read the same."""
    name = rule.get("name", "")
    if match and match.get("name"):
        return f"{name}.{match['name']}"
    return name


def _add_filter_configs(route: rc.Route, rule: dict) -> None:
    fault = _fault(rule["fault"]) if rule.get("fault") else None
    if fault is not None:
        route.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))
    if rule.get("corsPolicy"):
        route.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(_cors(rule["corsPolicy"])))


def _operation(route: rc.Route, vs_name: str, port: int) -> str:
    """Istio's tracing operation: ``host:port/path`` for one cluster, else ``vsname:port/path``."""
    which = route.match.WhichOneof("path_specifier")
    if which == "prefix":
        path = route.match.prefix + "*"
    elif which == "path":
        path = route.match.path
    elif which == "safe_regex":
        path = route.match.safe_regex.regex
    else:
        path = "/*"
    if route.WhichOneof("action") == "route" and route.route.WhichOneof("cluster_specifier") == "cluster":
        cluster_port, _, host = parse_cluster_name(route.route.cluster)
        return f"{host}:{cluster_port}{path}"
    return f"{vs_name}:{port}{path}"


# --- matches --------------------------------------------------------------------------------------


def _route_match(match: dict | None) -> rc.RouteMatch:
    out = rc.RouteMatch(prefix="/")
    if match is None:
        return out
    headers = [_header_matcher(name, m) for name, m in (match.get("headers") or {}).items()]
    headers += [_header_matcher(name, m, invert=True) for name, m in (match.get("withoutHeaders") or {}).items()]
    headers.sort(key=lambda h: h.name)  # Envoy ANDs them: sorted, as Istio does, for a stable order
    # Istio matches these pseudo-headers after the named ones.
    for pseudo, key in ((":method", "method"), (":authority", "authority"), (":scheme", "scheme")):
        if key in match:
            headers.append(_header_matcher(pseudo, match[key]))
    out.headers.extend(headers)
    out.query_parameters.extend(_query_matcher(name, m) for name, m in sorted((match.get("queryParams") or {}).items()))
    uri = match.get("uri") or {}
    if "exact" in uri:
        out.path = uri["exact"]
    elif "prefix" in uri:
        out.prefix = uri["prefix"]
    elif "regex" in uri:
        out.safe_regex.CopyFrom(_regex(uri["regex"]))
    out.case_sensitive.value = not match.get("ignoreUriCase", False)
    return out


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    # No engine named: Envoy's default is RE2, and its google_re2 field is deprecated (Istio omits it too).
    return regex_pb2.RegexMatcher(regex=pattern)


def _value_match(string_match: dict | None) -> dict | None:
    """The match a value must pass, or None where Istio reads "the header is present": an empty
    match, the regex ``*``, and an empty prefix (which Envoy rejects) all mean that."""
    if not string_match or string_match.get("regex") == "*" or string_match.get("prefix") == "":
        return None
    return string_match if any(k in string_match for k in ("exact", "prefix", "regex")) else None


def _string_matcher(string_match: dict) -> string_pb2.StringMatcher:
    if "exact" in string_match:
        return string_pb2.StringMatcher(exact=string_match["exact"])
    if "prefix" in string_match:
        return string_pb2.StringMatcher(prefix=string_match["prefix"])
    return string_pb2.StringMatcher(safe_regex=_regex(string_match["regex"]))


def _header_matcher(name: str, string_match: dict | None, invert: bool = False) -> rc.HeaderMatcher:
    matcher = rc.HeaderMatcher(name=name, invert_match=invert)
    value = _value_match(string_match)
    if value is None:
        matcher.present_match = True
    else:
        matcher.string_match.CopyFrom(_string_matcher(value))
        # withoutHeaders: a request lacking the header does not carry the unwanted value either.
        matcher.treat_missing_header_as_empty = invert
    return matcher


def _query_matcher(name: str, string_match: dict | None) -> rc.QueryParameterMatcher:
    value = _value_match(string_match)
    if value is None:
        return rc.QueryParameterMatcher(name=name, present_match=True)
    return rc.QueryParameterMatcher(name=name, string_match=_string_matcher(value))


def _is_catch_all(route: rc.Route) -> bool:
    """Istio's test: every path, no header or query condition."""
    which = route.match.WhichOneof("path_specifier")
    every_path = ((which == "prefix" and route.match.prefix == "/")
                  or (which == "safe_regex" and route.match.safe_regex.regex == ".*"))
    return every_path and not route.match.headers and not route.match.query_parameters


# --- route actions --------------------------------------------------------------------------------


def _apply_route_action(ctx: _Context, vs: SourceObject, rule: dict, destinations: list[tuple[dict, int]],
                        route: rc.Route, authority: str) -> list[SourceObject]:
    """Forward to the rule's destinations (its weighted_destinations, which the caller has); returns
    the DestinationRules that shaped the route."""
    action = route.route
    _set_timeout(action, rule.get("timeout"))
    rewrite = rule.get("rewrite") or {}
    if rewrite.get("uriRegexRewrite"):
        regex_rewrite = rewrite["uriRegexRewrite"]
        action.regex_rewrite.pattern.CopyFrom(_regex(regex_rewrite["match"]))
        action.regex_rewrite.substitution = regex_rewrite.get("rewrite", "")
    elif rewrite.get("uri"):
        action.prefix_rewrite = rewrite["uri"]
    authority = rewrite.get("authority") or authority
    if authority:
        action.host_rewrite_literal = authority
    action.request_mirror_policies.extend(_mirror_policies(ctx, vs, rule))
    if len(rule["route"]) == 1:
        _route_to_one(ctx, vs, destinations[0][0], route)
    else:
        for destination, weight in destinations:
            _add_cluster_weight(action.weighted_clusters.clusters, ctx, vs, destination, weight)
    sources: list[SourceObject] = []
    for weighted, _ in destinations:  # as Istio: every destination's DestinationRule hash, in order
        target = weighted["destination"]
        host = fqdn(target["host"], vs.namespace)
        hashing = _hash_policy(ctx, host, _destination_port(ctx, host, target), target.get("subset"))
        if hashing is not None:
            action.hash_policy.append(hashing[0])
            sources.append(hashing[1])
    # Only a single hashed destination switches to consistent-hash retries (Istio's route.go)
    _set_retry_policy(action, rule.get("retries"), hashing=len(destinations) == 1 and bool(sources))
    return sources


def _set_timeout(action: rc.RouteAction, timeout: str | None) -> None:
    """Istio's default is no timeout at all (Envoy's own default is 15s)."""
    text = timeout or NO_TIMEOUT
    cache.merge(action, cache.ROUTE_TIMEOUTS, text, lambda: _timeouts(text))


def _timeouts(timeout: str) -> rc.RouteAction:
    """A RouteAction's timeout fields for a route timeout."""
    action = rc.RouteAction(timeout=duration(timeout))
    # As Istio does: honour a gRPC client's grpc-timeout header, capped by the route timeout (0: no cap).
    # (max_stream_duration, not the deprecated max_grpc_timeout that Envoy warns about.)
    action.max_stream_duration.max_stream_duration.CopyFrom(action.timeout)
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(action.timeout)
    return action


def _destination_port(ctx: _Context, host: str, destination: dict) -> int:
    """Istio's rule: the destination's port, else the service's only port, else the listener's."""
    number = (destination.get("port") or {}).get("number")
    if number:
        return number
    service = ctx.services.get(host)
    if service is not None and len(service.ports) == 1:
        return service.ports[0].number
    return ctx.port


def _destination_cluster(ctx: _Context, vs: SourceObject, destination: dict) -> str:
    # An ExternalName Service's host is an alias: traffic to it goes to the host it stands for (Istio)
    host = ctx.mesh.resolve_alias(fqdn(destination["host"], vs.namespace))
    return cluster_name(_destination_port(ctx, host, destination), destination.get("subset"), host)


def _route_to_one(ctx: _Context, vs: SourceObject, destination: dict, route: rc.Route) -> None:
    """A single destination: its cluster, and its header operations join the route's."""
    route.route.cluster = _destination_cluster(ctx, vs, destination["destination"])
    operations = _header_operations(destination.get("headers"))
    _add_header_operations(route, operations)
    # The rule's own authority rewrite wins over the destination's.
    if operations.authority and not route.route.host_rewrite_literal:
        route.route.host_rewrite_literal = operations.authority


def _add_cluster_weight(clusters, ctx: _Context, vs: SourceObject, destination: dict, weight: int) -> None:
    """One of several destinations: its header operations apply only to the traffic it gets.
    (Added in place: building a ClusterWeight and copying it in costs twice as much.)"""
    cluster = clusters.add(name=_destination_cluster(ctx, vs, destination["destination"]))
    cluster.weight.value = weight
    operations = _header_operations(destination.get("headers"))
    _add_header_operations(cluster, operations)
    if operations.authority:
        cluster.host_rewrite_literal = operations.authority


def _hash_policy(ctx: _Context, host: str, port: int, subset: str | None
                 ) -> tuple[rc.RouteAction.HashPolicy, SourceObject] | None:
    """The route side of a DestinationRule's consistentHash load balancer (the cluster side picks
    the ring; the route says what to hash), with the rule it came from."""
    consistent = (ctx.mesh.policy(host, port, subset).get("loadBalancer") or {}).get("consistentHash")
    if not consistent:
        return None  # most destinations: no message to build
    policy = rc.RouteAction.HashPolicy()
    if "httpHeaderName" in consistent:
        policy.header.header_name = consistent["httpHeaderName"]
    elif "httpCookie" in consistent:
        cookie = consistent["httpCookie"]
        policy.cookie.name = cookie.get("name", "")
        if cookie.get("ttl"):
            policy.cookie.ttl.CopyFrom(duration(cookie["ttl"]))
        policy.cookie.path = cookie.get("path", "")
    elif consistent.get("useSourceIp"):
        policy.connection_properties.source_ip = True
    elif "httpQueryParameterName" in consistent:
        policy.query_parameter.name = consistent["httpQueryParameterName"]
    else:
        return None
    rule = ctx.mesh.destination_rule(host)
    assert rule is not None, "only a DestinationRule sets a load balancer"
    return policy, rule.source


def _set_retry_policy(action: rc.RouteAction, retries: dict | None, hashing: bool) -> None:
    """Most routes have the same retries: built once per distinct ``retries`` (keyed by its repr: equal
    reprs are equal settings)."""
    cache.merge(action.retry_policy, cache.RETRY_POLICIES, (repr(retries), hashing),
                lambda: _retry_policy(retries, hashing))


def _retry_policy(retries: dict | None, hashing: bool) -> rc.RetryPolicy | None:
    """Istio's retries: its default policy when the rule sets none, none at all for ``attempts: 0``,
    else the default with the rule's fields laid over it."""
    policy = rc.RetryPolicy(retry_on=DEFAULT_RETRY_ON, num_retries=wrappers_pb2.UInt32Value(value=DEFAULT_RETRIES),
                            retriable_status_codes=[DEFAULT_RETRIABLE_STATUS],
                            host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS)
    if not hashing:
        # Retry on another endpoint; with consistent hashing the request belongs to its own host.
        policy.retry_host_predicate.append(_previous_hosts())
    if retries is None:
        return policy
    if retries.get("attempts", 0) <= 0:
        return None
    policy.num_retries.value = retries["attempts"]
    if retries.get("retryOn"):
        _set_retry_on(policy, retries["retryOn"])
    if retries.get("perTryTimeout"):
        policy.per_try_timeout.CopyFrom(duration(retries["perTryTimeout"]))
    if retries.get("retryIgnorePreviousHosts") is not None:
        del policy.retry_host_predicate[:]
        if retries["retryIgnorePreviousHosts"]:
            policy.retry_host_predicate.append(_previous_hosts())
    if retries.get("retryRemoteLocalities"):
        policy.retry_priority.name = PREVIOUS_PRIORITIES
        policy.retry_priority.typed_config.CopyFrom(
            pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2)))
    if retries.get("backoff"):
        policy.retry_back_off.base_interval.CopyFrom(duration(retries["backoff"]))
    return policy


def _set_retry_on(policy: rc.RetryPolicy, retry_on: str) -> None:
    """Istio lets retryOn list status codes next to Envoy's conditions (``5xx,503``)."""
    conditions, codes = [], []
    for part in (p.strip() for p in retry_on.split(",")):
        if part.isdigit() and int(part) in HTTPStatus._value2member_map_:
            codes.append(int(part))
        elif part:
            conditions.append(part)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    # As Istio: a retryOn given replaces the default codes too, even when it names none
    policy.retry_on = ",".join(conditions)
    policy.retriable_status_codes[:] = codes


def _previous_hosts() -> rc.RetryPolicy.RetryHostPredicate:
    return rc.RetryPolicy.RetryHostPredicate(name=PREVIOUS_HOSTS,
                                             typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()))


# --- mirrors, faults, CORS ------------------------------------------------------------------------


def _mirror_policies(ctx: _Context, vs: SourceObject, rule: dict) -> list[rc.RouteAction.RequestMirrorPolicy]:
    wanted = []
    if rule.get("mirror"):
        legacy = rule.get("mirrorPercent", rule.get("mirror_percent"))
        wanted.append((rule["mirror"], _mirror_fraction(rule.get("mirrorPercentage"), legacy)))
    for mirror in rule.get("mirrors", []):
        if mirror.get("destination"):
            wanted.append((mirror["destination"], _mirror_fraction(mirror.get("percentage"), None)))
    return [rc.RouteAction.RequestMirrorPolicy(
        cluster=_destination_cluster(ctx, vs, destination),
        runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=fraction),
        trace_sampled=wrappers_pb2.BoolValue(value=False))  # as Istio: mirrored requests do not start traces
        for destination, fraction in wanted if fraction is not None]


def _mirror_fraction(percentage: dict | None, legacy_percent: int | None) -> percent_pb2.FractionalPercent | None:
    """How much to mirror: the percentage, else the deprecated integer percent, else all; 0 is none."""
    if percentage is not None:
        value = percentage.get("value", 0)
        return _percent(value) if value > 0 else None
    percent = 100 if legacy_percent is None else legacy_percent
    return percent_pb2.FractionalPercent(numerator=percent, denominator=HUNDRED) if percent > 0 else None


def _percent(value: float) -> percent_pb2.FractionalPercent:
    """Istio's Percent (a float, 0-100) in millionths; rounded so 0.29 stays 2900, not 2899."""
    return percent_pb2.FractionalPercent(numerator=round(value * 10_000), denominator=MILLION)


def _fault(fault: dict) -> fault_pb2.HTTPFault | None:
    out = fault_pb2.HTTPFault()
    delay = fault.get("delay") or {}
    if "fixedDelay" in delay:  # exponential delays are not supported by Istio either
        out.delay.fixed_delay.CopyFrom(duration(delay["fixedDelay"]))
        if "percentage" in delay:
            out.delay.percentage.CopyFrom(_percent(delay["percentage"].get("value", 0)))
        else:  # the deprecated integer percent; neither means no request is delayed
            out.delay.percentage.CopyFrom(percent_pb2.FractionalPercent(numerator=delay.get("percent", 0),
                                                                        denominator=HUNDRED))
    abort = fault.get("abort") or {}
    if "httpStatus" in abort:
        out.abort.http_status = abort["httpStatus"]
    elif abort.get("grpcStatus") in GRPC_STATUS_NAMES:
        out.abort.grpc_status = GRPC_STATUS_NAMES.index(abort["grpcStatus"])
    if out.HasField("abort") and "percentage" in abort:
        out.abort.percentage.CopyFrom(_percent(abort["percentage"].get("value", 0)))
    return out if out.HasField("delay") or out.HasField("abort") else None


def _cors(policy: dict) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        filter_enabled=base_pb2.RuntimeFractionalPercent(
            default_value=percent_pb2.FractionalPercent(numerator=100, denominator=HUNDRED)),
        # Istio forwards preflights that match no origin unless told to ignore them.
        forward_not_matching_preflights=wrappers_pb2.BoolValue(value=policy.get("unmatchedPreflights") != "IGNORE"))
    if policy.get("allowOrigins"):
        out.allow_origin_string_match.extend(_string_matcher(value) for m in policy["allowOrigins"]
                                             if (value := _value_match(m)) is not None)
    else:
        out.allow_origin_string_match.extend(string_pb2.StringMatcher(exact=o) for o in policy.get("allowOrigin", []))
    if policy.get("allowCredentials") is not None:
        out.allow_credentials.value = policy["allowCredentials"]
    out.allow_headers = ",".join(policy.get("allowHeaders", []))
    out.allow_methods = ",".join(policy.get("allowMethods", []))
    out.expose_headers = ",".join(policy.get("exposeHeaders", []))
    if policy.get("maxAge"):
        out.max_age = str(duration(policy["maxAge"]).seconds)
    return out


# --- redirects and direct responses ---------------------------------------------------------------


def _redirect(redirect: dict, ctx: _Context) -> rc.RedirectAction | None:
    code = REDIRECT_CODES.get(redirect.get("redirectCode") or 301)
    if code is None:
        return None
    out = rc.RedirectAction(response_code=code, host_redirect=redirect.get("authority", ""))
    if "uri" in redirect:
        out.path_redirect = redirect["uri"]
    elif "prefixRewrite" in redirect:
        out.prefix_rewrite = redirect["prefixRewrite"]
    if redirect.get("scheme"):
        out.scheme_redirect = redirect["scheme"]
    if "port" in redirect or "derivePort" in redirect:
        _set_redirect_port(out, redirect, ctx)
    return out


def _set_redirect_port(out: rc.RedirectAction, redirect: dict, ctx: _Context) -> None:
    if "port" in redirect:
        out.port_redirect = redirect["port"]
    elif redirect["derivePort"] == "FROM_REQUEST_PORT":
        out.port_redirect = ctx.port  # routes are built per port, so the request's port is known
    scheme = redirect.get("scheme") or ("https" if ctx.tls else "http")
    if (scheme, out.port_redirect) in (("http", 80), ("https", 443)):
        out.port_redirect = 0  # no explicit default port in the Location header


def _direct_response(response: dict) -> rc.DirectResponseAction:
    out = rc.DirectResponseAction(status=response["status"])
    body = response.get("body") or {}
    if "string" in body:
        out.body.inline_string = body["string"]
    elif "bytes" in body:
        out.body.inline_bytes = base64.b64decode(body["bytes"])  # bytes fields are base64 in YAML/JSON
    return out


# --- header operations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _HeaderOperations:
    request_add: tuple[base_pb2.HeaderValueOption, ...] = ()
    request_remove: tuple[str, ...] = ()
    response_add: tuple[base_pb2.HeaderValueOption, ...] = ()
    response_remove: tuple[str, ...] = ()
    authority: str = ""  # setting Host or :authority is a host rewrite in Envoy, not a header operation


NO_HEADER_OPERATIONS = _HeaderOperations()


def _header_operations(headers: dict | None) -> _HeaderOperations:
    if not headers:
        return NO_HEADER_OPERATIONS  # most rules and destinations (three per route of a canary split)
    request = headers.get("request") or {}
    response = headers.get("response") or {}
    return _HeaderOperations(
        tuple(_header_values(request.get("set"), OVERWRITE) + _header_values(request.get("add"), APPEND)),
        tuple(_modifiable(request.get("remove") or [])),
        tuple(_header_values(response.get("set"), OVERWRITE) + _header_values(response.get("add"), APPEND)),
        tuple(_modifiable(response.get("remove") or [])),
        _authority(request.get("set")) or _authority(request.get("add")))


def _is_internal(name: str) -> bool:
    """Headers Envoy does not let routes modify (pseudo-headers and Host)."""
    return name.startswith(":") or name.lower() == "host"


def _modifiable(names: Iterable[str]) -> list[str]:
    return [name for name in names if not _is_internal(name)]


def _header_values(values: Mapping[str, str] | None, append_action: int) -> list[base_pb2.HeaderValueOption]:
    # Sorted by name as Istio does; each name appears once in a mapping, so order carries no meaning.
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=str(value)),
                                       append_action=append_action)
            for key, value in sorted((values or {}).items()) if not _is_internal(key)]


def _authority(values: Mapping[str, str] | None) -> str:
    found = [str(v) for k, v in (values or {}).items() if k.lower() in (":authority", "host")]
    return found[-1] if found else ""


def _add_header_operations(target: rc.Route | rc.WeightedCluster.ClusterWeight,
                           operations: _HeaderOperations) -> None:
    if operations is NO_HEADER_OPERATIONS:
        return  # most rules and destinations: four empty extends saved
    target.request_headers_to_add.extend(operations.request_add)
    target.request_headers_to_remove.extend(operations.request_remove)
    target.response_headers_to_add.extend(operations.response_add)
    target.response_headers_to_remove.extend(operations.response_remove)
