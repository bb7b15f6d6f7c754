"""The CA section of `galleon diff`: which intermediates the change would have issued or reissued.

A pull request's preview has the repository, not the clusters' secrets, so it tells what the
policies ask for: an intermediate for a cluster newly covered, a reissue when a cluster's effective
policy changes (and which fields), nothing when only the spelling changed (the policy hash is the
same). Expiry and tampering are the reconciler's business at run time (`galleon ca reconcile`).
"""
from __future__ import annotations

from dataclasses import fields

from compiler.diff import PlanChange, PlanSection
from compiler.revision import Revision
from compiler.parse import SourceObject

from .errors import CAError
from .policy import KIND, Policy, policy_for

TITLE = "CA: istio-system/cacerts intermediates"
_COMPARED = [f.name for f in fields(Policy) if f.name not in ("cluster", "source")]


def ca_plan(base: Revision, head: Revision, clusters: list[str]) -> PlanSection:
    changes = []
    # policy_for looks through what it is given for every cluster: give it the policies only
    base_authorities, head_authorities = _authorities(base), _authorities(head)
    for cluster in clusters:
        try:
            before, after = _policy(base, base_authorities, cluster), _policy(head, head_authorities, cluster)
        except CAError as exc:
            changes.append(PlanChange(cluster, "cannot tell", "cacerts", str(exc)))
            continue
        if after is None:
            if before is not None:
                changes.append(PlanChange(cluster, "leave", "cacerts",
                                          "no CertificateAuthority covers it any more: its cacerts is left as it is"))
        elif before is None:
            changes.append(PlanChange(cluster, "issue", f"{after.key_algorithm} intermediate",
                                      f"{after.source} now covers it (lifetime {after.lifetime})"))
        elif before.hash != after.hash:
            moved = [f"{name} {getattr(before, name)} → {getattr(after, name)}" for name in _COMPARED
                     if getattr(before, name) != getattr(after, name)]
            changes.append(PlanChange(cluster, "reissue", f"{after.key_algorithm} intermediate",
                                      "policy changed: " + ", ".join(moved)))
    return PlanSection(TITLE, tuple(changes))


def _authorities(revision: Revision) -> list[SourceObject]:
    return [o for o in revision.objects if o.kind == KIND]


def _policy(revision: Revision, authorities: list[SourceObject], cluster: str) -> Policy | None:
    if revision.mesh is None or cluster not in revision.mesh.clusters:
        return None
    return policy_for(authorities, cluster)
