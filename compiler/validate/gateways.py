"""Checks on Gateways against each other, against the Services of their workloads, and against the
VirtualServices bound to them (Istio's gateway analyzers; a VirtualService may bind to a Kubernetes
Gateway API Gateway too, whose listeners' hostnames its hosts must match).

A Gateway's selector picks gateway workloads; servers of Gateways that share workloads end up on
the same proxies, where a host served twice on a port, or one certificate on two Gateways, goes
wrong. Which workloads a selector picks is read from the repository (Index.workloads), with Istio's
default ingress gateway when the repository has none (assumed.py); where the repository does not
hold what a verdict needs, there is none.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Mapping

from .. import kube
from ..findings import Level
from ..kinds import GATEWAY_API_GROUP, SERVICE, WORKLOAD_KINDS
from ..parse import SourceObject
from .assumed import shown
from .framework import analyzer
from .index import Index
from .references import INTERNAL_GATEWAY_MARK, gateway_key


def _name(obj: SourceObject) -> str:
    return f"{obj.namespace}/{obj.name}"


def selector_text(selector: Mapping[str, str]) -> str:
    """A label selector as Kubernetes writes it: ``key=value`` pairs in key order, joined by ``,``."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _selector(gw: SourceObject) -> dict[str, str]:
    return gw.spec.get("selector") or {}


# --- IST0145 ConflictingGateways ------------------------------------------------------------------

def _share_workloads(index: Index, a: Mapping[str, str], b: Mapping[str, str], memo: dict) -> bool:
    """Whether two Gateway selectors pick the same workloads, as Istio's analyzer decides it: they are
    equal, or one holds the other and some workload carries the labels of both."""
    if a == b:
        return True
    if not (a.items() <= b.items() or b.items() <= a.items()):
        return False
    wider = a if len(a) >= len(b) else b
    key = tuple(sorted(wider.items()))
    if key not in memo:
        memo[key] = index.selects_any(wider)
    return memo[key]


@analyzer("conflicting-gateways", "IST0145", Level.ERROR,
          "two Gateways on the same workloads serve the same host on the same port")
def conflicting_gateways(index: Index):
    # (port, bind, host) -> the servers (gateway, server index) that serve it: Gateways conflict only
    # through a host written identically (Istio compares host strings, without wildcard matching)
    serving: dict[tuple, list[tuple[SourceObject, int]]] = defaultdict(list)
    for gw in index.by_kind["Gateway"]:
        for i, server in enumerate(gw.spec.get("servers", [])):
            port = server["port"]["number"]
            for host in dict.fromkeys(server.get("hosts", [])):
                serving[(port, server.get("bind", ""), host)].append((gw, i))
    # (gateway, server index) -> {other gateway's name: the hosts both serve}
    conflicts: dict[tuple[SourceObject, int], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    memo: dict = {}
    for (_, _, host), servers in serving.items():
        if len({gw.key for gw, _ in servers}) < 2:
            continue
        for a, i in servers:
            for b, _ in servers:
                if a.key != b.key and _share_workloads(index, _selector(a), _selector(b), memo):
                    conflicts[(a, i)][_name(b)].add(host)
    for (gw, i), others in conflicts.items():
        server = gw.spec["servers"][i]
        hosts = server["hosts"]
        shared = {h for names in others.values() for h in names}
        first = next(j for j, h in enumerate(hosts) if h in shared)
        port = server["port"]["number"]
        bind = f" bound to {server['bind']}" if server.get("bind") else ""
        yield gw, ("spec", "servers", i, "hosts", first), (
            f"Conflict with gateways {','.join(sorted(others))} (workload selector {selector_text(_selector(gw))}, "
            f"port {port}, hosts {','.join(hosts)}): {', '.join(repr(h) for h in hosts if h in shared)} "
            f"{'is' if len(shared) == 1 else 'are'} served on port {port}{bind} by Gateways on the same workloads, "
            "and the proxy keeps only one of these servers; serve each host on a port from one Gateway, "
            "or merge the Gateways")


# --- IST0138 GatewayDuplicateCertificate ----------------------------------------------------------

def _certificate(tls: Mapping) -> tuple | None:
    """What Istio compares to tell two servers use the same certificate: the credentialName, or
    (when neither names one) both the certificate and the key files; None: nothing to compare."""
    if tls.get("credentialName"):
        return ("credentialName", tls["credentialName"])
    if tls.get("serverCertificate") and tls.get("privateKey"):
        return ("serverCertificate", tls["serverCertificate"], tls["privateKey"])
    return None


@analyzer("gateway-duplicate-certificate", "IST0138", Level.WARNING,
          "two Gateways on the same workloads use the same TLS certificate")
def gateway_duplicate_certificate(index: Index):
    # certificate -> the Gateways whose servers use it, with the first such server of each
    users: dict[tuple, dict[SourceObject, int]] = defaultdict(dict)
    for gw in index.by_kind["Gateway"]:
        for i, server in enumerate(gw.spec.get("servers", [])):
            certificate = _certificate(server.get("tls") or {})
            if certificate is not None:
                users[certificate].setdefault(gw, i)
    # (Gateway, other Gateway) -> the Gateway's first server whose certificate the other uses too
    shared: dict[tuple[SourceObject, SourceObject], tuple[int, tuple]] = {}
    for certificate, gateways in users.items():
        for gw, i in gateways.items():
            mine = _selector(gw).items()
            for other in gateways:
                # Istio's direction: the Gateway whose selector the other's holds (an empty one: every other)
                if other.key != gw.key and mine <= _selector(other).items():
                    if (gw, other) not in shared or i < shared[(gw, other)][0]:
                        shared[(gw, other)] = (i, certificate)
    for (gw, other), (i, certificate) in shared.items():
        field = certificate[0]
        yield gw, ("spec", "servers", i, "tls", field), (
            f"Duplicate certificate in multiple gateways [{_name(gw)} {_name(other)}] may cause 404s "
            f"if clients re-use HTTP2 connections: {field} {certificate[1]!r} is also used by Gateway "
            f"{_name(other)}, whose workloads this Gateway's selector picks too; give each Gateway its own "
            "certificate, or serve the hosts from one Gateway")


# --- IST0162 GatewayPortNotDefinedOnService -------------------------------------------------------

def _container_ports(workload: SourceObject) -> dict[str, int]:
    """The named container ports of the pods a workload object runs: name -> number. The schemas leave
    containers open (Kubernetes checks them), so anything else written there is passed over."""
    pod_spec = workload.spec if workload.kind == "Pod" else (workload.spec.get("template") or {}).get("spec")
    found: dict[str, int] = {}
    containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
    for container in containers if isinstance(containers, list) else ():
        ports = container.get("ports") if isinstance(container, dict) else None
        for port in ports if isinstance(ports, list) else ():
            if isinstance(port, dict) and isinstance(port.get("name"), str) and type(port.get("containerPort")) is int:
                found.setdefault(port["name"], port["containerPort"])
    return found


def _tcp_ports(service: SourceObject) -> tuple[frozenset[int], frozenset[str]]:
    """A Service's TCP ports and numeric target ports, and the container port names it targets."""
    numbers: set[int] = set()
    named: set[str] = set()
    for port in kube.service_ports(service):
        if port.kubernetes_protocol != "TCP":
            continue
        numbers.add(port.number)
        target = port.target_port
        if isinstance(target, str) and not target.isdigit():
            named.add(target)
        elif target:
            numbers.add(int(target))
    return frozenset(numbers), frozenset(named)


def _service_ports_of(services: list[tuple[str, dict, SourceObject]], labels: Mapping[str, str],
                      workloads: list[SourceObject], known: dict[SourceObject, tuple]) -> tuple[set[int], set[str]]:
    """(the TCP ports and target ports of the Services selecting pods with these labels, those
    Services' names); a named target port is the number the workloads' containers give that name."""
    accepted: set[int] = set()
    names: set[str] = set()
    targeted: set[str] = set()
    for name, selector, service in services:
        if selector.items() <= labels.items():
            if service not in known:
                known[service] = _tcp_ports(service)
            numbers, named = known[service]
            names.add(name)
            accepted |= numbers
            targeted |= named
    if targeted:
        for workload in workloads:
            accepted.update(number for name, number in _container_ports(workload).items() if name in targeted)
    return accepted, names


@analyzer("gateway-port-not-defined-on-service", "IST0162", Level.WARNING,
          "a Gateway listens on a port that no Service of its workloads exposes")
def gateway_port_not_defined_on_service(index: Index):
    # the workload objects (not WorkloadEntries: no Kubernetes Service fronts them) by their pods'
    # labels, then namespace: a mesh has many workloads but few label sets
    groups: dict[frozenset, dict[str, list[SourceObject]]] = defaultdict(lambda: defaultdict(list))
    for kind in sorted(WORKLOAD_KINDS):
        for obj in index.by_kind.get(kind, ()):
            groups[frozenset(kube.workload_labels(obj).items())][obj.namespace].append(obj)
    # namespace -> (name, selector, Service) of its Services that select pods
    services: dict[str, list[tuple[str, dict, SourceObject]]] = defaultdict(list)
    for service in index.by_kind[SERVICE]:
        if kube.selector(service):
            services[service.namespace].append((shown(service), kube.selector(service), service))
    known: dict[SourceObject, tuple] = {}  # a Service's ports (_tcp_ports), read when first needed
    memo: dict[tuple[frozenset, str], tuple[set[int], set[str]]] = {}
    for gw in index.by_kind["Gateway"]:
        selector = _selector(gw)
        if not selector:
            continue  # every workload of the repository, gateways or not: no telling which Services count
        wanted = selector.items()
        accepted: set[int] = set()
        names: set[str] = set()
        for labels, by_namespace in groups.items():
            if not wanted <= labels:
                continue
            for namespace, workloads in by_namespace.items():
                if (labels, namespace) not in memo:
                    memo[(labels, namespace)] = _service_ports_of(services.get(namespace, []), dict(labels), workloads,
                                                                  known)
                ports, found = memo[(labels, namespace)]
                accepted |= ports
                names |= found
        if not names:
            continue  # no workload of the selector, or no Service for them, in the repository: no verdict
        reported: set[int] = set()
        for i, server in enumerate(gw.spec.get("servers", [])):
            number = server["port"]["number"]
            if number in accepted or number in reported:
                continue
            reported.add(number)
            yield gw, ("spec", "servers", i, "port", "number"), (
                f"The gateway is listening on a target port (port {number}) that is not defined in the Service "
                f"associated with its workload instances (Pod selector {selector_text(selector)}): "
                f"{', '.join(sorted(names))} expose{'s' if len(names) == 1 else ''} "
                f"{', '.join(map(str, sorted(accepted))) or 'no TCP port'}; add the port (or a port whose "
                "targetPort it is) to the Service, or listen on one of those")


# --- IST0132 VirtualServiceHostNotFoundInGateway --------------------------------------------------

SHOWN_HOSTS = 8  # a Gateway's hosts named in a finding, at most

def istio_host_matches(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: symmetric, ``*`` wildcards on either side, no FQDN expansion."""
    a_wild, b_wild = a.startswith("*"), b.startswith("*")
    if a_wild and b_wild:
        short, long = (a, b) if len(a) < len(b) else (b, a)
        return long[1:].endswith(short[1:])
    if a_wild:
        return b.endswith(a[1:])
    if b_wild:
        return a.endswith(b[1:])
    return a == b


def visible_gateway_hosts(gateway_namespace: str, hosts: Iterator[str] | tuple[str, ...],
                          namespace: str) -> list[str]:
    """The hosts of a Gateway's servers a VirtualService of ``namespace`` may bind: ``./h`` only from
    the Gateway's namespace, ``ns/h`` only from ``ns``, ``*/h`` and a bare ``h`` from every one."""
    visible = []
    for host in hosts:
        if "/" not in host:
            visible.append(host)
            continue
        scope, name = host.split("/", 1)
        if scope == ".":
            scope = gateway_namespace
        if scope in ("*", namespace):
            visible.append(name)
    return visible


def _shown_hosts(hosts: list[str]) -> str:
    shown = list(dict.fromkeys(hosts))
    return ", ".join(map(repr, shown[:SHOWN_HOSTS])) + (
        f" and {len(shown) - SHOWN_HOSTS} more" if len(shown) > SHOWN_HOSTS else "")


@analyzer("virtual-service-host-not-found-in-gateway", "IST0132", Level.WARNING,
          "none of a VirtualService's hosts is served by a Gateway it binds to (Istio's, or a Kubernetes "
          "Gateway API one's listeners), or the Gateway does not exist",
          local=("gateway_hosts", "kubernetes_gateway_hosts"), kinds=("VirtualService",))
def virtual_service_host_not_found_in_gateway(index: Index):
    gateway_hosts = dict(index.gateway_hosts)
    listener_hosts = dict(index.kubernetes_gateway_hosts)
    for vs in index.by_kind["VirtualService"]:
        hosts = vs.spec.get("hosts", [])
        for i, ref in enumerate(vs.spec.get("gateways", [])):
            if ref == "mesh" or INTERNAL_GATEWAY_MARK in ref:
                continue
            key = gateway_key(vs, ref)
            prefix = (f"one or more host [{' '.join(hosts)}] defined in VirtualService {_name(vs)} not found in "
                      f"Gateway {key}: ")
            if key in gateway_hosts:  # an Istio Gateway: Istio's GatewayAnalyzer looks among those first
                visible = visible_gateway_hosts(key.split("/", 1)[0], gateway_hosts[key], vs.namespace)
                if any(istio_host_matches(g, h) for g in visible for h in hosts):
                    continue
                yield vs, ("spec", "gateways", i), (
                    prefix + "the Istio Gateway serves "
                    + (f"{_shown_hosts(visible)} to namespace {vs.namespace}" if visible
                       else f"no host to namespace {vs.namespace}")
                    + ", so the proxy never routes these hosts by this VirtualService; add a host to the Gateway "
                      "or the VirtualService, or bind it to another Gateway")
            elif key in listener_hosts:
                # A Kubernetes Gateway: its listeners' hostnames, as written, whatever the VirtualService's
                # namespace (Istio reads neither allowedRoutes nor namespaces here); a listener without a
                # hostname accepts every host
                hostnames = listener_hosts[key]
                if "" in hostnames or any(istio_host_matches(g, h) for g in hostnames for h in hosts):
                    continue
                yield vs, ("spec", "gateways", i), (
                    prefix + f"it is a Kubernetes Gateway ({GATEWAY_API_GROUP})"
                    + (f", whose listeners accept only {_shown_hosts(list(hostnames))}" if hostnames
                       else " without listeners")
                    + ", so it never routes these hosts by this VirtualService; add a listener for one of them "
                      "(or one without hostname) to the Gateway, a host to the VirtualService, or bind it to "
                      "another Gateway")
            else:
                # No Gateway of either kind has the name: gateway-not-found reports the reference (IST0101);
                # as in Istio's GatewayAnalyzer, no gateway hosts match either
                yield vs, ("spec", "gateways", i), (
                    prefix + "no Gateway of that name exists (neither an Istio Gateway nor a Kubernetes Gateway "
                    f"({GATEWAY_API_GROUP})), so no gateway serves these hosts for this VirtualService; create the "
                    "Gateway, or bind the VirtualService to one that serves them")
