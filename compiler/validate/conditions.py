"""Istio's conditions.ConditionAnalyzer: a status condition that says something went wrong.

A repository usually holds no status, but an object exported with ``kubectl get -o yaml`` does, and
Istio writes conditions on the objects it reconciles (a Service or ServiceEntry that could not be
bound to its waypoint, ``istio.io/WaypointBound`` False; a Gateway API Gateway not ``Programmed``). Only the conditions Istio itself reports,
at the status it counts as negative: other controllers' conditions (Argo CD's ``Synced``...) are
their business.
"""
from __future__ import annotations

from ..findings import Level
from ..kinds import KUBERNETES_GATEWAY, SERVICE
from .framework import analyzer
from .index import Index

NEGATIVE = {  # kind -> condition type -> the status Istio reports
    SERVICE: {"istio.io/WaypointBound": "False"},
    "ServiceEntry": {"istio.io/WaypointBound": "False"},
    "WorkloadEntry": {"istio.io/WaypointBound": "False"},
    KUBERNETES_GATEWAY: {"Accepted": "False", "Programmed": "False", "ResolvedRefs": "False"},
}


@analyzer("negative-condition-status", "IST0171", Level.WARNING,
          "an object's status carries a condition Istio counts as negative (kubectl exports keep status)",
          local=(), kinds=tuple(NEGATIVE))
def negative_condition_status(index: Index):
    for kind, negative in NEGATIVE.items():
        for obj in index.by_kind.get(kind, ()):
            status = obj.body.get("status")
            conditions = status.get("conditions") if isinstance(status, dict) else None
            for i, condition in enumerate(conditions if isinstance(conditions, list) else ()):
                if not isinstance(condition, dict):
                    continue
                kind_of, state = condition.get("type"), condition.get("status")
                if isinstance(kind_of, str) and negative.get(kind_of) == state:
                    yield obj, ("status", "conditions", i), (
                        f"A condition with a negative status is present: type={kind_of}, "
                        f"reason={condition.get('reason', '')}, message={condition.get('message', '')}; "
                        "the object is not working as configured: see the controller that wrote it")
