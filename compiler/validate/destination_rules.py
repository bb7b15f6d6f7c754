"""Checks on DestinationRules and locality load-balancing settings."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

from .. import kube
from ..findings import Level
from ..kinds import SERVICE, WORKLOAD_KINDS
from ..parse import SourceObject
from .assumed import shown
from .framework import analyzer, repeats
from .index import Declared, Index, traffic_policies


@analyzer("duplicate-subset-name", "GAL0102", Level.ERROR, "a DestinationRule defines a subset name twice",
          local=(), kinds=("DestinationRule",))
def duplicate_subset_name(index: Index):
    for dr in index.by_kind["DestinationRule"]:
        names = [subset["name"] for subset in dr.spec.get("subsets", [])]
        for i, first in repeats(names):
            yield dr, ("spec", "subsets", i, "name"), (
                f"subset {names[i]!r} is already defined by subsets[{first}]; rename or remove one")


def _locality_settings(index: Index):
    """(object, path of localityLbSetting, it, its policy, inherited policy) everywhere one can be set."""
    for mesh in index.by_kind["MeshConfig"]:
        if "localityLbSetting" in mesh.spec:
            yield mesh, ("spec", "localityLbSetting"), mesh.spec["localityLbSetting"], None, None
    for dr in index.by_kind["DestinationRule"]:
        for path, policy, parent in traffic_policies(dr):
            setting = (policy.get("loadBalancer") or {}).get("localityLbSetting")
            if setting:
                yield dr, path + ("loadBalancer", "localityLbSetting"), setting, policy, parent


@analyzer("locality-distribute-not-100", "GAL0107", Level.ERROR,
          "the weights of a locality distribute rule do not add up to 100", local=(),
          kinds=("MeshConfig", "DestinationRule"))
def locality_distribute_not_100(index: Index):
    for obj, path, setting, _, _ in _locality_settings(index):
        for i, rule in enumerate(setting.get("distribute", [])):
            total = sum((rule.get("to") or {}).values())
            if total != 100:
                yield obj, path + ("distribute", i, "to"), (
                    f"distribute weights from {rule.get('from', '*')!r} add up to {total}, not 100")


@analyzer("failover-without-outlier-detection", "GAL0108", Level.WARNING,
          "locality failover is set on a DestinationRule without outlierDetection, so it has no effect",
          local=(), kinds=("MeshConfig", "DestinationRule"))
def failover_without_outlier_detection(index: Index):
    for obj, path, setting, policy, parent in _locality_settings(index):
        if policy is None or not (setting.get("failover") or setting.get("failoverPriority")):
            continue
        if "outlierDetection" not in policy and "outlierDetection" not in parent:
            yield obj, path, ("failover has no effect without outlierDetection in this traffic policy: "
                              "Envoy cannot tell a locality is unhealthy; add outlierDetection")


_VERIFYING_MODES = ("SIMPLE", "MUTUAL")


def _unverified(dr, tls: dict | None) -> str | None:
    """The TLS mode of a policy that originates TLS without a CA to check the server with (Istio's rule:
    a credentialName covers it only for a rule with a workloadSelector, a gateway's)."""
    if not tls or tls.get("mode") not in _VERIFYING_MODES or tls.get("caCertificates"):
        return None
    if tls.get("credentialName") and "workloadSelector" in dr.spec:
        return None
    return tls["mode"]


def _no_verification(dr, mode: str, where: str = "") -> str:
    return (f"DestinationRule {dr.namespace}/{dr.name} in namespace {dr.namespace} has TLS mode set to {mode} but no "
            f"caCertificates are set to validate server identity for host: {dr.spec['host']}{where}; set "
            "caCertificates to the CA bundle that signs the server's certificate")


@analyzer("no-server-certificate-verification", "IST0128", Level.WARNING,
          "a DestinationRule originates TLS without caCertificates to verify the server", local=(),
          kinds=("DestinationRule",))
def no_server_certificate_verification(index: Index):
    for dr in index.by_kind["DestinationRule"]:
        mode = _unverified(dr, (dr.spec.get("trafficPolicy") or {}).get("tls"))
        if mode:
            yield dr, ("spec", "trafficPolicy", "tls", "caCertificates"), _no_verification(dr, mode)


@analyzer("no-server-certificate-verification-port", "IST0129", Level.WARNING,
          "a DestinationRule's port-level policy originates TLS without caCertificates to verify the server",
          local=(), kinds=("DestinationRule",))
def no_server_certificate_verification_port(index: Index):
    for dr in index.by_kind["DestinationRule"]:
        for i, setting in enumerate((dr.spec.get("trafficPolicy") or {}).get("portLevelSettings", [])):
            mode = _unverified(dr, setting.get("tls"))
            if mode:
                number = (setting.get("port") or {}).get("number")
                where = f" at port {number}" if number else " at a port level setting without a port"
                yield dr, ("spec", "trafficPolicy", "portLevelSettings", i, "tls", "caCertificates"), \
                    _no_verification(dr, mode, where)


_NONE: Mapping[str, str] = {}


class _LabelIndex:
    """The workloads of one group (a namespace's workloads, or those of it a selector picks) by the label
    pairs they carry, for the label keys the subsets ask about: their distinct combinations of values
    (a handful, where a mesh has 150,000 endpoints), and which combinations carry each pair. A subset
    is answered by intersecting the sets of its pairs, not by reading the workloads again."""

    __slots__ = ("size", "postings")

    def __init__(self, label_sets: Iterable[Mapping[str, str] | None], keys: frozenset[str]):
        asked = tuple(sorted(keys))
        if len(asked) == 1:  # the usual subsets (version: v1): one look-up per workload
            (key,) = asked
            combinations: set[tuple[str | None, ...]] = {((labels or _NONE).get(key),) for labels in label_sets}
        else:
            combinations = {tuple(map((labels or _NONE).get, asked)) for labels in label_sets}
        postings: dict[tuple[str, str], set[int]] = defaultdict(set)
        for i, values in enumerate(combinations):
            for key, value in zip(asked, values):
                if value is not None:
                    postings[(key, value)].add(i)
        self.size, self.postings = len(combinations), dict(postings)

    def selects(self, wanted: Mapping[str, str]) -> bool:
        """Whether one workload carries every label of ``wanted`` (an empty ``wanted``: any workload)."""
        if not self.size:
            return False
        found: set[int] | None = None
        for pair in sorted(wanted.items(), key=lambda p: len(self.postings.get(p, ()))):
            members = self.postings.get(pair)
            if not members:
                return False
            found = members if found is None else found & members
            if not found:
                return False
        return True


class _Endpoints:
    """A ServiceEntry's own endpoints, read in order until one carries the labels a subset asks for:
    the first few usually do, so a subset is answered without reading all of them, and only one that
    selects nothing reads them all."""

    __slots__ = ("endpoints",)

    def __init__(self, endpoints: list[dict]):
        self.endpoints = endpoints

    def selects(self, wanted: Mapping[str, str]) -> bool:
        pairs = wanted.items()
        for endpoint in self.endpoints:
            if pairs <= (endpoint.get("labels") or _NONE).items():
                return True
        return False


def _workload_group(declared: Declared):
    """(group key, the labels the host's own workloads must carry, what they are, for messages), or
    None when the repository cannot hold its workloads: endpoints a ServiceEntry lists; the
    WorkloadEntries of its namespace its workloadSelector picks; the workloads of its namespace a
    Kubernetes Service's selector matches (Galleon's model: compiler/model.py)."""
    obj = declared.obj
    where = shown(obj, f"{obj.kind} {obj.namespace}/{obj.name}")
    if obj.kind == SERVICE:
        selector = kube.selector(obj)
        return (("workloads", obj.namespace), selector, f"the workloads {where} selects") if selector else None
    if "workloadSelector" in obj.spec:
        return ("entries", obj.namespace), declared.selector or {}, f"the WorkloadEntries {where} selects"
    if obj.spec.get("endpoints"):
        return ("endpoints", obj.key), {}, f"the endpoints of {where}"
    return None


# A warning, where Istio's analyzer, which sees the live pods, says error: the workloads a repository
# holds stand for pods that may run from elsewhere too (a version's Deployment in another repository,
# a canary's defined before it runs), and a subset no pod carries is admitted by Istio and harmless
# until a route sends traffic to it.
@analyzer("destination-rule-subset-not-select-pods", "IST0173", Level.WARNING,
          "a DestinationRule subset selects none of its host's workloads the repository holds")
def subset_selects_no_workload(index: Index):
    rules = []
    asked: dict[tuple, set[str]] = defaultdict(set)  # group -> the label keys asked of its workloads
    for dr in index.by_kind["DestinationRule"]:
        subsets = dr.spec.get("subsets", [])
        if not subsets:
            continue
        declared = index.lookup(dr.namespace, dr.spec.get("exportTo", ()), dr.spec["host"])
        group = _workload_group(declared) if declared is not None else None  # an unknown host is IST0174's
        if group is None:
            continue
        rules.append((dr, subsets, declared, group))
        asked[group[0]].update(group[1])
        for subset in subsets:
            asked[group[0]].update(subset.get("labels") or {})
    indexes: dict[tuple, _LabelIndex | _Endpoints] = {}
    by_namespace: list[dict[str, list[tuple[bool, Mapping[str, str]]]]] = []  # read when first needed

    def label_index(key: tuple, declared: Declared) -> _LabelIndex | _Endpoints:
        found = indexes.get(key)
        if found is None:
            kind, owner = key
            keys = frozenset(asked[key])
            if kind == "endpoints":
                found = _Endpoints(declared.obj.spec["endpoints"])
            else:
                if not by_namespace:
                    by_namespace.append(_workloads_by_namespace(index))
                found = _LabelIndex((labels for is_entry, labels in by_namespace[0].get(owner, ())
                                     if is_entry or kind == "workloads"), keys)
            indexes[key] = found
        return found

    for dr, subsets, declared, (key, base, where) in rules:
        assert declared is not None  # rules holds only declared hosts
        workloads = label_index(key, declared)
        if not workloads.selects(base):
            continue  # none of the host's workloads is in the repository: they come from a live registry
        for i, subset in enumerate(subsets):
            labels = subset.get("labels") or {}
            clash = any(k in base and base[k] != v for k, v in labels.items())
            if clash or not workloads.selects({**base, **labels}):
                shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                yield dr, ("spec", "subsets", i, "labels" if "labels" in subset else "name"), (
                    f"The Subset {subset['name']!r} defined in the DestinationRule does not select any pods, which "
                    f"may lead to 503 UH (NoHealthyUpstream): none of {where} carries {shown}; correct the "
                    "subset's labels, or label the workloads")


def _workloads_by_namespace(index: Index) -> dict[str, list[tuple[bool, Mapping[str, str]]]]:
    """namespace -> (is a WorkloadEntry, labels) of every workload there: the pods workload objects run,
    Pods, WorkloadEntries."""
    found: dict[str, list[tuple[bool, Mapping[str, str]]]] = defaultdict(list)
    for kind in sorted(WORKLOAD_KINDS):
        for obj in index.by_kind.get(kind, ()):
            found[obj.namespace].append((False, kube.workload_labels(obj)))
    for we in index.by_kind.get("WorkloadEntry", ()):
        found[we.namespace].append((True, we.spec.get("labels") or {}))
    return found
