"""Checks on DestinationRules and locality load-balancing settings."""
from __future__ import annotations

from ..findings import Level
from .framework import analyzer, repeats
from .index import Index, traffic_policies


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
