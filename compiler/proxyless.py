"""The configuration of a proxyless gRPC client: gRPC's own xDS client (``xds:///host:port``).

gRPC asks for every resource by name, state of the world only: the Listener
named as its target (``echo.default.svc.cluster.local:7070``), which carries an
``api_listener`` (an HTTP connection manager with RDS and the router filter,
since there is no socket to bind), the RouteConfiguration that names, then the
clusters its routes use and their ClusterLoadAssignments. This is Istio's
``GENERATOR: grpc`` configuration (pilot/pkg/networking/grpcgen): the listener
and its route configuration share the name ``host:port``.

Routes, clusters and endpoints are the sidecar's, built by routes.py,
clusters.py and endpoints.py, with only the changes gRPC's client needs; each
change below says what gRPC does without it. Pure and deterministic, like the
other generators.
"""
from __future__ import annotations

import dataclasses
import itertools

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from . import clusters, endpoints, provenance, routes
from .model import Mesh, Port, Service
from .names import parse_cluster_name
from .protos import ads, pack
from .scope import visible_services
from .view import SIDECAR, ProxyView

FAULT_FILTER = "envoy.filters.http.fault"
ROUTER_FILTER = "envoy.filters.http.router"
TLS_SOCKET = "envoy.transport_sockets.tls"
# Istio's names for the proxyless client's certificates: the certificate provider instance that the
# gRPC bootstrap declares (reconciler/bootstrap.py), and in it the workload certificate and the root.
CERTIFICATE_PROVIDER = "default"
WORKLOAD_CERTIFICATE, ROOT_CERTIFICATE = "default", "ROOTCA"
# A route with more withoutHeaders than this is not expanded for gRPC (2**n routes; see below).
MAX_ABSENT_VARIANTS = 4


def resource_name(host: str, port: int) -> str:
    """The name of a service port's listener and route configuration: gRPC's target, ``host:port``."""
    return f"{host}:{port}"


def proxyless_services(mesh: Mesh, view: ProxyView) -> list[Service]:
    """A proxyless client sees what a sidecar in its place sees (Istio scopes it by Sidecar too)."""
    return visible_services(mesh, dataclasses.replace(view, role=SIDECAR))


# --- listeners ------------------------------------------------------------------------------------


def build_listeners(mesh: Mesh, view: ProxyView, services: list[Service]) -> list[listener_pb2.Listener]:
    """One listener per HTTP port of each service (gRPC speaks HTTP/2: a port declared TCP is not
    for it), sorted by name."""
    listeners = [_listener(mesh, service, port.number) for service in services for port in service.ports
                 if port.routes_http]
    return sorted(listeners, key=lambda listener: listener.name)


def _listener(mesh: Mesh, service: Service, port: int) -> listener_pb2.Listener:
    name = resource_name(service.host, port)
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"outbound_{name}",
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=name),
        http_filters=[
            # gRPC NACKs a listener with an HTTP filter it does not implement, so the sidecar's CORS
            # filter is left out (CORS is for browsers; routes' CORS policies go too, see _adapt_route).
            # Fault injection it implements (gRFC A33): VirtualService faults apply as for a sidecar.
            hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
            # Without the router last, gRPC never becomes ready (NOTES.md).
            hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
        ])
    listener = listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager)))
    provenance.set_sources(listener.metadata, service.source)
    return listener


# --- routes ---------------------------------------------------------------------------------------


def build_routes(mesh: Mesh, view: ProxyView, services: list[Service]) -> list[route_pb2.RouteConfiguration]:
    """A route configuration per listener, with the service's virtual host as a sidecar has it,
    sorted by name."""
    configs = routes.service_route_configurations(mesh, view, services, resource_name)
    for config in configs:
        for vhost in config.virtual_hosts:
            adapted = [variant for route in vhost.routes for variant in _adapt_route(route)]
            del vhost.routes[:]
            vhost.routes.extend(adapted)
    return sorted(configs, key=lambda config: config.name)


def _adapt_route(shared: rc.Route) -> list[rc.Route]:
    """The route (a copy) as gRPC must get it to read it as Envoy reads the original: usually one
    route, the same but for the CORS policy.

    The rest of a sidecar's route gRPC accepts (measured with grpcio 1.85): it honours the match
    (path, headers, case), weighted clusters, header hash policies, fault injection, retries (of
    the retry_on conditions only those naming gRPC codes; it logs and skips connect-failure and the
    like) and the route timeout as max_stream_duration (0 is no limit, as for Envoy). It ignores
    cookie and source-IP hash policies and mirrors; a redirect or direct response fails the RPC
    with UNAVAILABLE.
    """
    route = rc.Route()
    route.CopyFrom(shared)
    # The listener has no CORS filter (see _listener), and gRPC NACKs a route configuration that
    # configures a filter it does not have ("unsupported filter type").
    if routes.CORS_FILTER in route.typed_per_filter_config:
        del route.typed_per_filter_config[routes.CORS_FILTER]
    return _absent_header_variants(route)


def _absent_header_variants(route: rc.Route) -> list[rc.Route]:
    """A VirtualService's ``withoutHeaders`` matches a request without the header, as Envoy does
    with ``treat_missing_header_as_empty``; gRPC ignores that field and never matches an absent
    header with an inverted value matcher. Its own form of "absent" (an inverted present match) it
    does honour, so the route becomes one route per choice of absent or present-but-different for
    each such header; the choices exclude each other, so their order does not matter. Beyond
    MAX_ABSENT_VARIANTS headers the route is kept as is (gRPC then needs every header present)."""
    loose = [i for i, header in enumerate(route.match.headers)
             if header.invert_match and header.treat_missing_header_as_empty]
    if not loose or len(loose) > MAX_ABSENT_VARIANTS:
        return [route]
    variants = []
    for absent in itertools.product((False, True), repeat=len(loose)):
        variant = rc.Route()
        variant.CopyFrom(route)
        for index, is_absent in zip(loose, absent):
            header = variant.match.headers[index]
            if is_absent:
                header.CopyFrom(rc.HeaderMatcher(name=header.name, present_match=True, invert_match=True))
            else:
                header.treat_missing_header_as_empty = False  # what gRPC does anyway, said plainly
        variants.append(variant)
    return variants


# --- clusters -------------------------------------------------------------------------------------


def build_clusters(mesh: Mesh, view: ProxyView, services: list[Service]) -> list[Cluster]:
    """The sidecar's outbound clusters that gRPC can use, adapted to it, sorted by name."""
    out = []
    for service in services:
        rule = mesh.destination_rule(service.host)
        subsets = [None] + [s.name for s in rule.subsets] if rule else [None]
        for port in service.ports:
            for subset in subsets:
                cluster = _adapt_cluster(mesh, service, port, subset,
                                         clusters.build_cluster(mesh, view, service, port, subset))
                if cluster is not None:
                    out.append(cluster)
    return sorted(out, key=lambda c: c.name)


def _adapt_cluster(mesh: Mesh, service: Service, port: Port, subset: str | None, shared: Cluster) -> Cluster | None:
    """The sidecar's cluster as gRPC accepts it, or None when gRPC cannot do what it asks. gRPC
    gives a cluster it never got 15 s to appear (its channel's routes all wait meanwhile), then
    fails the RPCs routed to it with UNAVAILABLE ("CDS resource ... does not exist").

    Kept as they are, since gRPC accepts them: circuit breakers (it enforces max_requests),
    outlier detection (it accepts Istio's fields but ejects only on success rate and failure
    percentage, which Istio leaves off), locality-weighted and panic-threshold settings, HTTP
    protocol options, and auto mTLS's transport_socket_matches, which gRPC ignores: under auto
    mTLS a proxyless client speaks plaintext, and Istio mTLS needs a DestinationRule that says
    ISTIO_MUTUAL (as with Istio's proxyless gRPC).
    """
    cluster = Cluster()
    cluster.CopyFrom(shared)  # the sidecar's clusters are shared between views: never change them
    if not _adapt_discovery(cluster):
        return None
    _adapt_load_balancer(cluster)
    if cluster.HasField("transport_socket") and not _adapt_tls(cluster, mesh, service, port, subset):
        return None
    return cluster


def _adapt_discovery(cluster: Cluster) -> bool:
    """gRPC takes EDS and LOGICAL_DNS clusters only; it NACKs STRICT_DNS and ORIGINAL_DST
    ("unknown discovery type")."""
    if cluster.type in (Cluster.EDS, Cluster.LOGICAL_DNS):
        return True
    if cluster.type == Cluster.STRICT_DNS:
        # One DNS name that the client resolves and balances over is what LOGICAL_DNS means to gRPC;
        # several names do not fit one gRPC cluster, so such a cluster is left out.
        hosts = [lb for group in cluster.load_assignment.endpoints for lb in group.lb_endpoints]
        if len(hosts) != 1:
            return False
        cluster.type = Cluster.LOGICAL_DNS
        return True
    return False  # ORIGINAL_DST: a proxyless client has no original destination to forward to


def _adapt_load_balancer(cluster: Cluster) -> None:
    """gRPC NACKs every lb_policy but ROUND_ROBIN and RING_HASH ("LB policy is not supported"),
    and has no least-request policy in load_balancing_policy either."""
    if cluster.lb_policy == Cluster.MAGLEV:
        # Both hash what the route's hash policy names onto the endpoints; gRPC has only the ring.
        cluster.lb_policy = Cluster.RING_HASH
        cluster.ClearField("maglev_lb_config")
    elif cluster.lb_policy not in (Cluster.ROUND_ROBIN, Cluster.RING_HASH):
        # LEAST_REQUEST (Istio's default) and RANDOM: round robin is gRPC's own default.
        cluster.lb_policy = Cluster.ROUND_ROBIN


def _adapt_tls(cluster: Cluster, mesh: Mesh, service: Service, port: Port, subset: str | None) -> bool:
    """gRPC takes certificates only from the certificate providers of its bootstrap: it NACKs SDS
    secret configs and certificate files ("feature unsupported", "no CA certs configured"). Istio
    mTLS becomes Istio's proxyless form, the workload certificate and root of the bootstrap's
    ``default`` provider (gRPC NACKs a provider name its bootstrap lacks; reconciler/bootstrap.py
    declares it), with the sidecar's SNI, which gRPC sends. TLS to servers outside the mesh (files,
    credentialName) has no such form: the cluster is left out rather than sent without its TLS.
    gRPC applies this TLS only on channels with xDS credentials; an insecure channel speaks
    plaintext whatever the cluster says."""
    policy = mesh.policy(service.host, port.number, subset)
    if (policy.get("tls") or {}).get("mode") != "ISTIO_MUTUAL":
        return False
    sidecar = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(sidecar)
    context = tls_pb2.UpstreamTlsContext(sni=sidecar.sni)
    common = context.common_tls_context
    common.tls_certificate_provider_instance.CopyFrom(common_pb2.CertificateProviderPluginInstance(
        instance_name=CERTIFICATE_PROVIDER, certificate_name=WORKLOAD_CERTIFICATE))
    validation = common.combined_validation_context.default_validation_context
    validation.ca_certificate_provider_instance.CopyFrom(common_pb2.CertificateProviderPluginInstance(
        instance_name=CERTIFICATE_PROVIDER, certificate_name=ROOT_CERTIFICATE))
    # The server identities to accept. gRPC silently ignores the typed matchers the sidecar has, and
    # would then take any certificate of the mesh's CA; it checks the untyped (deprecated) field,
    # which matches a URI SAN as the sidecar's URI matchers do (measured: a wrong SPIFFE id there
    # fails the handshake, in the typed field it passes).
    sidecar_validation = sidecar.common_tls_context.combined_validation_context.default_validation_context
    validation.match_subject_alt_names.extend(m.matcher for m in sidecar_validation.match_typed_subject_alt_names)
    cluster.transport_socket.name = TLS_SOCKET
    cluster.transport_socket.typed_config.CopyFrom(pack(context))
    return True


# --- endpoints ------------------------------------------------------------------------------------


def build_load_assignments(mesh: Mesh, view: ProxyView, services: list[Service],
                           eds_clusters: list[Cluster]) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """The assignment of each EDS cluster: a sidecar's, without other networks' gateways."""
    by_host = {service.host: service for service in services}
    out = []
    for cluster in eds_clusters:
        port, subset, host = parse_cluster_name(cluster.name)
        service = by_host[host]
        groups = _groups(mesh, view, service, service.known_port(port), subset or None)
        auto_mtls = endpoints.mtls_mode(mesh, host, port, subset or None) is None
        out.append(endpoints.encode(mesh, cluster.name, groups, service.source, mark_tls_mode=auto_mtls))
    return out


def _groups(mesh: Mesh, view: ProxyView, service: Service, port: Port, subset: str | None) -> list[endpoints.Group]:
    """endpoints.compute_groups, but a remote network's endpoints are left out where a sidecar gets
    that network's east-west gateway. A gateway standing for endpoints in two localities appears in
    both, and gRPC NACKs the whole assignment ("duplicate endpoint address"); and the gateway routes
    by the SNI of Istio mTLS, which gRPC sends only on a channel with xDS credentials to an
    ISTIO_MUTUAL cluster, something Galleon cannot know of a client (an insecure channel would
    reach the gateway and never the service). The split horizon's rule for a client without Istio
    mTLS (``mtls=False``) does exactly this; endpoints of a network without gateways stay, as they
    are reached directly."""
    groups = endpoints.subset_groups(mesh, service, port, subset)
    groups = endpoints.split_horizon(groups, view.network, mesh.networks, mtls=False)
    return endpoints.locality_lb(groups, view, endpoints.locality_policy(mesh, service.host, port.number, subset))
