"""Istio's workload analyzers, on the workload objects a repository holds: a Pod, or the pod template
of a Deployment, StatefulSet, DaemonSet, ReplicaSet or Job, stands for the pods it runs.

- IST0144: an application container runs as UID 1337, the proxy's (Istio's ApplicationUIDAnalyzer);
- IST0116 and IST0137: the Services selecting a workload's pods give one port two protocols, or one
  target port two ports (Istio's ServiceAssociationAnalyzer);
- IST0146 and IST0147: a proxy container written ``image: auto`` (filled in by injection) in pods
  that will not be injected (Istio's ImageAutoAnalyzer);
- IST0140: a VirtualService bound to gateways routes, without a subset, to a host whose own
  VirtualService routes by subsets (Istio's DestinationHostAnalyzer).

Whether pods get a sidecar is decided as Istio's injection webhooks and injector decide it (the
``sidecar-injector`` webhooks Istio installs, and ``injectRequired``), from what the repository
holds: the labels of the pods' Namespace object and the pods' own label or annotation
``sidecar.istio.io/inject``. A repository often holds no Namespace objects (a cluster's namespaces
are made elsewhere): then the verdict is open unless the pods decide it themselves, and the checks
that need it give none (a live namespace may be labelled either way). Revisions are assumed
installed; a control plane's ``enableNamespacesByDefault`` and its never/always-inject selectors
are not known to the repository, which is Istio's default (none).

Istio's PodMissingProxy (IST0103) is not implemented: it reports a live pod of a namespace labelled
``istio-injection=enabled`` that runs without a proxy, not opting out nor on the host network. A
manifest is read before admission, where injection adds the proxy: under exactly those conditions
the webhook injects it (and where the injector refuses, in Kubernetes' own namespaces, Istio's
analyzers do not look). The repository cannot tell a pod that will miss its proxy; every finding
would be false.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Mapping

from .. import kube
from ..findings import Level
from ..kinds import CLUSTER_LABEL, INJECT_LABEL, INJECTION_LABEL, REVISION_LABEL, SERVICE, WORKLOAD_KINDS
from ..parse import Path, SourceObject
from .framework import analyzer
from .index import Index
from .services import IGNORED_NAMESPACES

KINDS = tuple(sorted(WORKLOAD_KINDS))
CONTROLLERS = tuple(kind for kind in KINDS if kind != "Pod")
PROXY = "istio-proxy"
OPERATOR = "istio-operator"
PROXY_UID = 1337  # the sidecar's user: its iptables rules let this user's traffic bypass it
AUTO_IMAGE = "auto"  # a proxy container's image the injector fills in
# Waypoint Deployments Istio's controller generates (gateway.istio.io/managed)
MANAGED_LABEL = "gateway.istio.io/managed"
WAYPOINT = "istio.io-mesh-controller"


def _name(obj: SourceObject) -> str:
    return f"{obj.namespace}/{obj.name}"


def _what(obj: SourceObject) -> str:
    return f"{obj.kind} {obj.name}"


# --- the pods a workload object runs ----------------------------------------------------------------

def _pod(obj: SourceObject) -> tuple[dict, dict, Path]:
    """(metadata, spec, the path of the spec) of the pods a workload object runs: a Pod's own, a
    controller's pod template's (the schemas make each a mapping when written)."""
    if obj.kind == "Pod":
        return obj.body.get("metadata") or {}, obj.spec, ("spec",)
    template = obj.spec.get("template") or {}
    return template.get("metadata") or {}, template.get("spec") or {}, ("spec", "template", "spec")


def _labels_path(obj: SourceObject) -> Path:
    return ("metadata", "labels") if obj.kind == "Pod" else ("spec", "template", "metadata", "labels")


def _containers(spec: Mapping, field: str = "containers") -> list[tuple[int, dict]]:
    """(index, container) of a pod spec's containers. The schemas leave containers open (Kubernetes
    checks them), so whatever else is written there is passed over."""
    containers = spec.get(field)
    return [(i, c) for i, c in enumerate(containers) if isinstance(c, dict)] if isinstance(containers, list) else []


def _run_as_user(holder: Mapping) -> int | None:
    context = holder.get("securityContext")
    uid = context.get("runAsUser") if isinstance(context, dict) else None
    return uid if type(uid) is int else None


def _declares_proxy(spec: Mapping) -> bool:
    """Whether the pods list the proxy container with its image (injected by hand): Istio's test of a
    pod in the mesh, but for ``image: auto``, which runs only where injection fills it in."""
    return any(c.get("name") == PROXY and c.get("image") and c.get("image") != AUTO_IMAGE
               for _, c in _containers(spec) + _containers(spec, "initContainers"))


def _control_plane(obj: SourceObject) -> bool:
    """Istio's control plane and gateways (a label ``istio``, or ``release: istio``), on the object or
    its pods, which the UID check leaves alone."""
    return any("istio" in labels or labels.get("release") == "istio"
               for labels in (obj.labels, kube.workload_labels(obj)))


# --- sidecar injection --------------------------------------------------------------------------------

Namespaces = dict[tuple[str, str], dict[str, str]]


def _namespaces(index: Index) -> Namespaces:
    """(cluster, name) -> injection labels of every Namespace object (Index.namespace_injection)."""
    return {(cluster, name): dict(labels) for cluster, name, labels in index.namespace_injection}


def _namespace_labels(namespaces: Namespaces, obj: SourceObject) -> dict[str, str] | None:
    """The injection labels of the Namespace the object is in, None when the repository holds none:
    the object's cluster's (its ``topology.istio.io/cluster`` label), else one without a cluster; for
    an object without a cluster label, the Namespaces of that name when they all agree."""
    cluster = obj.labels.get(CLUSTER_LABEL, "")
    found = namespaces.get((cluster, obj.namespace))
    if found is None and cluster:
        found = namespaces.get(("", obj.namespace))
    if found is None and not cluster:
        seen = {tuple(sorted(labels.items())) for (_, name), labels in namespaces.items() if name == obj.namespace}
        if len(seen) == 1:
            found = dict(seen.pop())
    return found


def injection(obj: SourceObject, namespace: Mapping[str, str] | None) -> tuple[bool | None, str]:
    """Whether the pods of a workload object will be injected with a sidecar, and why: True, False, or
    None when the repository cannot tell (it holds no Namespace object for them, and they do not
    decide it themselves). ``namespace``: the injection labels of their Namespace, None when unknown.

    Istio's webhooks are called for a pod (selectors on labels only): in a namespace labelled
    ``istio-injection=enabled``, or ``istio.io/rev`` without ``istio-injection``, unless the pod is
    labelled ``sidecar.istio.io/inject=false``; in a namespace with neither label, for a pod labelled
    ``sidecar.istio.io/inject=true`` or ``istio.io/rev``. The injector then refuses pods on the host
    network, in Kubernetes' own namespaces, and those whose label (else annotation)
    ``sidecar.istio.io/inject`` is ``false``.
    """
    metadata, spec, _ = _pod(obj)
    labels = kube.workload_labels(obj)
    annotations = metadata.get("annotations") or {}
    pods, are = ("the Pod", "is") if obj.kind == "Pod" else ("its pods", "are")
    if spec.get("hostNetwork") is True:
        return False, f"{pods} {'runs' if obj.kind == 'Pod' else 'run'} on the host network (hostNetwork), " \
                      "which Istio never injects"
    if obj.namespace in IGNORED_NAMESPACES:
        return False, f"namespace {obj.namespace!r} is one of Kubernetes' own, which Istio never injects"
    said = labels.get(INJECT_LABEL, annotations.get(INJECT_LABEL))
    if said == "false":
        where = "labelled" if INJECT_LABEL in labels else "annotated"
        return False, f"{pods} {are} {where} {INJECT_LABEL}=false"
    opted_in = labels.get(INJECT_LABEL) == "true" or REVISION_LABEL in labels
    if namespace is None:
        # the webhooks that read the pod's labels call the injector in any namespace but one labelled
        # istio-injection with another value than enabled: likely injected, else unknown
        return (True, "") if opted_in else (None, "")
    if INJECTION_LABEL in namespace:
        value = namespace[INJECTION_LABEL]
        if value == "enabled":
            return True, ""
        return False, (f"its namespace {obj.namespace!r} is labelled {INJECTION_LABEL}={value}, so no Istio "
                       "webhook is called for its pods (not even those that opt in)")
    if REVISION_LABEL in namespace or opted_in:
        return True, ""
    return False, (f"its namespace {obj.namespace!r} has neither label {INJECTION_LABEL}=enabled nor "
                   f"{REVISION_LABEL}, and {pods} {are} labelled neither {INJECT_LABEL}=true nor {REVISION_LABEL}")


def _in_mesh(obj: SourceObject, namespaces: Namespaces) -> bool | None:
    """Whether the workload's pods run a sidecar: they list the proxy, or they will be injected."""
    if _declares_proxy(_pod(obj)[1]):
        return True
    return injection(obj, _namespace_labels(namespaces, obj))[0]


# --- IST0144 InvalidApplicationUID --------------------------------------------------------------------

@analyzer("invalid-application-uid", "IST0144", Level.WARNING,
          "an application container runs as user ID 1337, which Istio reserves for the sidecar proxy",
          local=("namespace_injection",), kinds=KINDS)
def invalid_application_uid(index: Index):
    namespaces = _namespaces(index)
    for kind in KINDS:
        for obj in index.by_kind[kind]:
            if obj.namespace in IGNORED_NAMESPACES or _control_plane(obj):
                continue
            _, spec, at = _pod(obj)
            pod_uid = _run_as_user(spec)
            own = [(i, c) for i, c in _containers(spec) if c.get("name") not in (PROXY, OPERATOR)]
            own_uid = {i: _run_as_user(c) for i, c in own}
            if PROXY_UID not in own_uid.values() and pod_uid != PROXY_UID:
                continue
            if _in_mesh(obj, namespaces) is False:
                continue  # no proxy, so nothing to bypass
            for i, container in own:
                if own_uid[i] == PROXY_UID:
                    yield obj, at + ("containers", i, "securityContext", "runAsUser"), _uid_message(
                        f"container {container.get('name')!r} runs as it (its securityContext.runAsUser)")
            inheriting = [c.get("name") for i, c in own if own_uid[i] is None]
            if pod_uid == PROXY_UID and inheriting:
                yield obj, at + ("securityContext", "runAsUser"), _uid_message(
                    "the pod's securityContext.runAsUser makes container" + ("s " if len(inheriting) > 1 else " ")
                    + ", ".join(map(repr, inheriting)) + " run as it")


def _uid_message(who: str) -> str:
    return (f"User ID (UID) 1337 is reserved for the sidecar proxy: {who}, so the proxy's traffic capture "
            "lets its outbound traffic bypass the proxy (no mTLS, routing or telemetry); run it as another user")


# --- IST0116 DeploymentAssociatedToMultipleServices, IST0137 DeploymentConflictingPorts ----------------

def _associated(index: Index) -> Iterator[tuple[SourceObject, list[tuple[SourceObject, list[kube.ServicePort]]]]]:
    """(workload, the Services of its namespace selecting its pods, with their ports) for every workload
    in the mesh (its pods run a sidecar) that at least two Services select; none for Istio's waypoints,
    nor where the repository cannot tell whether the pods are in the mesh."""
    # Each Service under one label of its selector (an empty selector selects no pod: Istio's analyzer,
    # Kubernetes): a workload's candidates are those under one of its labels, not its namespace's all.
    services: dict[tuple[str, str, str], list[tuple[int, SourceObject, dict[str, str]]]] = defaultdict(list)
    for order, service in enumerate(sorted(index.by_kind[SERVICE], key=_name)):
        selector = kube.selector(service)
        if selector:
            key, value = min(selector.items())
            services[(service.namespace, key, value)].append((order, service, selector))
    namespaces = _namespaces(index)
    ports: dict[SourceObject, list[kube.ServicePort]] = {}
    for kind in KINDS:
        for obj in index.by_kind.get(kind, ()):
            if obj.namespace in IGNORED_NAMESPACES or obj.labels.get(MANAGED_LABEL) == WAYPOINT:
                continue
            labels = kube.workload_labels(obj)
            candidates = [found for key, value in labels.items()
                          for found in services.get((obj.namespace, key, value), ())]
            matching = [service for _, service, selector in sorted(candidates, key=lambda c: c[0])
                        if selector.items() <= labels.items()]
            if len({_name(s) for s in matching}) < 2 or not _in_mesh(obj, namespaces):
                continue
            for service in matching:
                if service not in ports:
                    ports[service] = list(kube.service_ports(service))
            yield obj, [(service, ports[service]) for service in matching]


def _listing(names) -> str:
    return "[" + " ".join(sorted(names)) + "]"


@analyzer("deployment-associated-to-multiple-services", "IST0116", Level.WARNING,
          "Services selecting the same pods give one port different protocols")
def deployment_associated_to_multiple_services(index: Index):
    for obj, services in _associated(index):
        by_port: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for service, ports in services:
            for port in ports:
                by_port[port.number][port.kubernetes_protocol].add(_name(service))
        for number in sorted(by_port):
            protocols = by_port[number]
            names = set().union(*protocols.values())
            # one Service serving a port over TCP and UDP (DNS) is Kubernetes' way, not two Services
            if len(protocols) > 1 and len(names) > 1:
                said = ", ".join(f"{p} by {', '.join(sorted(n))}" for p, n in sorted(protocols.items()))
                yield obj, _labels_path(obj), (
                    f"This {obj.kind.lower()} {obj.name} is associated with multiple services using port {number} "
                    f"but different protocols: {_listing(names)} ({said}); the sidecar of its pods can serve "
                    "a port with one protocol only: give the Services' port the same protocol, or another number")


def _target(port: kube.ServicePort, named: Mapping[str, int]) -> str:
    """A Service port's target port, as Istio keys it: its number (the port's own when unset or 0; a
    named one resolved when the pods' containers name it), else its name."""
    target = port.target_port
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if isinstance(target, str):
        return str(named.get(target, target))
    return str(target or port.number)


def _container_ports(spec: Mapping) -> dict[str, int]:
    """The named container ports of a pod spec (the schemas leave ports open: others are passed over)."""
    found: dict[str, int] = {}
    for _, container in _containers(spec):
        ports = container.get("ports")
        for port in ports if isinstance(ports, list) else ():
            if isinstance(port, dict) and isinstance(port.get("name"), str) and type(port.get("containerPort")) is int:
                found.setdefault(port["name"], port["containerPort"])
    return found


@analyzer("deployment-conflicting-ports", "IST0137", Level.WARNING,
          "Services selecting the same pods send different ports to the same target port")
def deployment_conflicting_ports(index: Index):
    for obj, services in _associated(index):
        named = _container_ports(_pod(obj)[1])
        by_target: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        for service, ports in services:
            for port in ports:
                by_target[_target(port, named)][port.number].add(_name(service))
        for target in sorted(by_target, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t)):
            numbers = by_target[target]
            names = set().union(*numbers.values())
            # one Service sending two of its ports to one target port is not two Services disagreeing
            if len(numbers) > 1 and len(names) > 1:
                yield obj, _labels_path(obj), (
                    f"This {obj.kind.lower()} {obj.name} is associated with multiple services {_listing(names)} "
                    f"using targetPort {target!r} but different ports: [{' '.join(map(str, sorted(numbers)))}]; "
                    "Services that select the same pods must send a target port from the same port: "
                    "give them the same port, or target different ports")


# --- IST0146 / IST0147 ImageAutoWithoutInjection -----------------------------------------------------

def _auto_images(index: Index, kinds: tuple[str, ...]) -> Iterator[tuple[SourceObject, Path, str]]:
    """(workload, path of the image, why its pods will not be injected) for each proxy container
    written ``image: auto`` in pods that will not be injected."""
    namespaces = _namespaces(index)
    for kind in kinds:
        for obj in index.by_kind[kind]:
            _, spec, at = _pod(obj)
            auto = [i for i, c in _containers(spec) if c.get("name") == PROXY and c.get("image") == AUTO_IMAGE]
            if not auto:
                continue
            injected, why = injection(obj, _namespace_labels(namespaces, obj))
            if injected is False:
                for i in auto:
                    yield obj, at + ("containers", i, "image"), why


def _auto_message(obj: SourceObject, why: str) -> str:
    pods = "the Pod cannot" if obj.kind == "Pod" else "its pods cannot"
    return (f"{_what(obj)} contains `image: auto` but does not match any Istio injection webhook selectors: {why}. "
            f"The image is a placeholder injection fills in; no registry serves it, so {pods} start. "
            f"Label the namespace {INJECTION_LABEL}=enabled (or {REVISION_LABEL}), or the pods {INJECT_LABEL}=true, "
            "or give the container the proxy's image")


@analyzer("image-auto-without-injection-error", "IST0147", Level.ERROR,
          "a Pod's proxy container has `image: auto` but the Pod will not be injected",
          local=("namespace_injection",), kinds=("Pod",))
def image_auto_without_injection_error(index: Index):
    for obj, path, why in _auto_images(index, ("Pod",)):
        yield obj, path, _auto_message(obj, why)


@analyzer("image-auto-without-injection-warning", "IST0146", Level.WARNING,
          "a workload's pod template has a proxy container with `image: auto` but its pods will not be injected",
          local=("namespace_injection",), kinds=CONTROLLERS)
def image_auto_without_injection_warning(index: Index):
    for obj, path, why in _auto_images(index, CONTROLLERS):
        yield obj, path, _auto_message(obj, why)


# --- IST0140 IngressRouteRulesNotAffected ------------------------------------------------------------

@analyzer("ingress-route-rules-not-affected", "IST0140", Level.WARNING,
          "a VirtualService of gateways routes to a host without a subset, where the host's own "
          "VirtualService routes by subsets")
def ingress_route_rules_not_affected(index: Index):
    # host -> the VirtualServices of that host (as written in their hosts) routing it to a subset
    by_subset: dict[str, set[str]] = defaultdict(set)
    for vs in index.by_kind["VirtualService"]:
        hosts = set(vs.spec.get("hosts") or ())
        for rule in vs.spec.get("http") or ():
            for route in rule.get("route") or ():
                destination = route.get("destination") or {}
                if destination.get("subset") and destination.get("host") in hosts:
                    by_subset[destination["host"]].add(_name(vs))
    if not by_subset:
        return
    for vs in index.by_kind["VirtualService"]:
        if not vs.spec.get("gateways"):
            continue
        for i, rule in enumerate(vs.spec.get("http") or ()):
            for j, route in enumerate(rule.get("route") or ()):
                destination = route.get("destination") or {}
                host = destination.get("host")
                if destination.get("subset") or host not in by_subset:
                    continue
                for other in sorted(by_subset[host]):
                    yield vs, ("spec", "http", i, "route", j, "destination", "host"), (
                        f"Subset in virtual service {other} has no effect on ingress gateway {_name(vs)} requests: "
                        f"this route sends them to {host!r} without a subset, and the subset routes of {other} "
                        f"for {host!r} do not apply to traffic another VirtualService routes (VirtualServices do "
                        "not chain); name the subset here too")
