"""Root rotation: every cluster's ``cacerts`` moves from one root to another with no moment in which
a cluster distrusts another's workloads (istiod accepts a new bundle only as a superset or a subset
of the one it has, NOTES.md).

Three phases, one per run of ``galleon ca rotate-root``, each recorded in the Secret's
``galleon.io/ca-rotation`` annotation as ``<new root fingerprint>:<phase>``:

1. ``trust-both``: root-cert.pem becomes the old root followed by the new one; the intermediate
   (under the old root) and cert-chain.pem stay as they are.
2. ``switched``: a new intermediate under the new root; root-cert.pem stays the old and the new root.
3. ``done``: root-cert.pem becomes the new root only (the annotation stays, so that a reconcile
   with the old root is refused instead of undoing the rotation).

The least advanced cluster sets the phase: a run moves only the clusters at that stage, so no
cluster starts a phase before all have finished the one before. A cluster moves only from a Secret
that checks out exactly (``plan`` with the root that signs at its stage says ``none``, and the
bundle holds exactly the roots of that stage); when any cluster does not, nothing is written. The
wait between runs (istiod and workloads picking the bundle up) is the operator's: the command says so.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

from cryptography import x509

from .errors import CAError
from .intermediate import CaCerts, issue, not_after, not_before
from .planning import (DONE, NONE, SECRET, SWITCHED, TRUST_BOTH, Intermediate, pem_values, plan, rotation_of,
                   secret_manifest)
from .policy import Policy
from .root import RootCA
from .targets import CONFLICT_ATTEMPTS, CONFLICT_BACKOFF, ConflictError, Target
from .x509util import fingerprint, stamp, utc

# A cluster's stage is an index into PHASES: 0 has not started, 3 is done.
PHASES = ("not started", TRUST_BOTH, SWITCHED, DONE)
DOING = {
    1: "trust both roots: root-cert.pem becomes the old root followed by the new one; intermediates and "
       "cert-chain.pem stay under the old root",
    2: "switch intermediates: a new intermediate under the new root; root-cert.pem stays the old and the new root",
    3: "drop the old root: root-cert.pem becomes the new root only",
}
NEXT = {
    1: "next: wait until istiod in every cluster has reloaded cacerts and every workload has the two-root bundle "
       "(istioctl proxy-config secret shows both), then run this command again for phase 2",
    2: "next: point `galleon serve --root-ca` and `galleon ca reconcile --root-ca` at the new root; wait until "
       "every workload certificate has been reissued under the new intermediates (Istio's default lifetime is "
       "24 hours, or restart the workloads), then run this command again for phase 3",
    3: "done: every cluster signs under and trusts only the new root; use it as --root-ca from now on and retire "
       "the old root's key",
}


@dataclass(frozen=True)
class ClusterState:
    cluster: str
    stage: int | None  # None: not a state this rotation can move from
    reasons: tuple[str, ...] = ()
    current: Intermediate | None = None


@dataclass(frozen=True)
class Issuing:
    """A new intermediate phase 2 makes for a cluster: its key algorithm and validity."""

    cluster: str
    key_algorithm: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class Rotation:
    old: RootCA
    new: RootCA
    states: tuple[ClusterState, ...]
    issuing: tuple[Issuing, ...] = ()  # phase 2's new intermediates, so a dry run shows their dates too

    @property
    def refused(self) -> tuple[ClusterState, ...]:
        return tuple(s for s in self.states if s.stage is None)

    @property
    def stage(self) -> int:
        """The least advanced cluster's stage: the phase the mesh as a whole has finished."""
        return min(s.stage for s in self.states)

    @property
    def moving(self) -> tuple[str, ...]:
        """The clusters this run moves to phase ``stage + 1`` (none when refused or done)."""
        if self.refused or self.stage == 3:
            return ()
        return tuple(s.cluster for s in self.states if s.stage == self.stage)

    def describe(self, dry_run: bool) -> str:
        """Fingerprints, dates and phases; never key material."""
        lines = [f"root rotation from sha256:{self.old.fingerprint} (valid until {stamp(self.old.not_after)})",
                 f"              to sha256:{self.new.fingerprint} (valid until {stamp(self.new.not_after)})"]
        for state in self.states:
            where = "refused" if state.stage is None else PHASES[state.stage]
            lines.append(f"  {state.cluster} {SECRET}: {where}")
            lines += [f"    why: {reason}" for reason in state.reasons]
            if state.current:
                lines.append(f"    intermediate {state.current.text()}")
        if self.refused:
            lines.append(f"refused: {', '.join(s.cluster for s in self.refused)} cannot move; nothing written "
                         "(`galleon ca reconcile --root-ca OLD` repairs a cluster whose rotation has not started)")
        elif self.stage == 3:
            lines.append("the rotation is complete; nothing to do")
        else:
            phase = self.stage + 1
            lines.append(f"phase {phase} of 3 ({PHASES[phase]}) for {', '.join(self.moving)}: {DOING[phase]}")
            lines += [f"  {i.cluster}: {'would issue' if dry_run else 'issued'} a {i.key_algorithm} intermediate "
                      f"under the new root, valid {stamp(i.not_before)} to {stamp(i.not_after)}"
                      for i in self.issuing]
            if dry_run:
                lines.append("nothing written (--dry-run); run without it to apply this phase")
            else:
                lines.append(f"written: {', '.join(self.moving)}")
                lines.append(NEXT[phase])
        return "\n".join(lines)


def survey(target: Target, old: RootCA, new: RootCA, policies: Mapping[str, Policy], now: datetime,
           secrets: dict[str, dict | None] | None = None) -> Rotation:
    """Read every cluster's Secret (into ``secrets`` when given) and find its stage."""
    states = []
    for cluster in sorted(policies):
        secret = target.read(cluster)
        if secrets is not None:
            secrets[cluster] = secret
        states.append(classify(secret, old, new, policies[cluster], now))
    return Rotation(old, new, tuple(states))


def rotate_root(target: Target, old: RootCA, new: RootCA, policies: Mapping[str, Policy], now: datetime,
                dry_run: bool = False) -> Rotation:
    """Survey every cluster of ``policies`` and, unless ``dry_run``, move the least advanced ones one phase."""
    if old.fingerprint == new.fingerprint:
        raise CAError(f"the old and the new root are the same root sha256:{old.fingerprint}")
    if new.not_after <= utc(now):
        raise CAError(f"the new root sha256:{new.fingerprint} expired at {stamp(new.not_after)}")
    secrets: dict[str, dict | None] = {}
    rotation = survey(target, old, new, policies, now, secrets)
    if rotation.moving and rotation.stage == 1:
        rotation = dataclasses.replace(rotation, issuing=tuple(
            Issuing(cluster, policy.key_algorithm, not_before(new, now), not_after(new, policy, now))
            for cluster, policy in ((c, policies[c]) for c in rotation.moving)))
    if not dry_run:
        for cluster in rotation.moving:
            _advance(target, rotation, cluster, secrets[cluster], policies[cluster], now)
    return rotation


def classify(secret: dict | None, old: RootCA, new: RootCA, policy: Policy, now: datetime) -> ClusterState:
    cluster = policy.cluster
    if secret is None:
        return ClusterState(cluster, None, (f"{SECRET} does not exist (create it with `galleon ca reconcile`)",))
    rotation = rotation_of(secret)
    if rotation is None or rotation == (old.fingerprint, DONE):  # a rotation that ended at the old root
        stage = 0
    elif rotation[0] != new.fingerprint or rotation[1] is None:
        return ClusterState(cluster, None, (f"its rotation annotation is not one of a rotation to "
                                            f"sha256:{new.fingerprint}",))
    else:
        stage = PHASES.index(rotation[1])
    decided = plan(secret, old if stage <= 1 else new, cluster, policy, now)
    if decided.action != NONE:
        return ClusterState(cluster, None, decided.reasons, decided.current)
    # ``plan`` does not know the other root of a switched Secret: check the whole bundle here.
    bundle = [fingerprint(c) for c in x509.load_pem_x509_certificates(pem_values(secret)["root-cert.pem"].encode())]
    if bundle != _bundle(stage, old, new):
        return ClusterState(cluster, None, (f"root-cert.pem is not the bundle of phase {PHASES[stage]}",),
                            decided.current)
    return ClusterState(cluster, stage, (), decided.current)


def _bundle(stage: int, old: RootCA, new: RootCA) -> list[str]:
    return [[old.fingerprint], [old.fingerprint, new.fingerprint], [old.fingerprint, new.fingerprint],
            [new.fingerprint]][stage]


def _advance(target: Target, rotation: Rotation, cluster: str, secret: dict, policy: Policy,
             now: datetime) -> None:
    """Write ``cluster``'s Secret at the next phase; on a conflict, read again and carry on only
    from the same stage (another run may already have moved it)."""
    old, new, stage = rotation.old, rotation.new, rotation.stage
    # Issued once, before any retry: a conflict does not change what the new intermediate should be.
    issued = issue(new, cluster, policy, now) if stage == 1 else None
    for attempt in range(CONFLICT_ATTEMPTS):
        if attempt:
            time.sleep(CONFLICT_BACKOFF * 2 ** (attempt - 1))
            secret = target.read(cluster)
            state = classify(secret, old, new, policy, now)
            if state.stage == stage + 1:
                return
            if state.stage != stage:
                raise CAError(f"{cluster}: {SECRET} changed while it was written and is no longer at "
                              f"{PHASES[stage]}; run again")
        values = pem_values(secret)
        both = old.pem + new.pem
        if stage == 0:
            cacerts, signer = CaCerts(values["ca-cert.pem"], values["ca-key.pem"], both, values["cert-chain.pem"]), old
        elif stage == 1:
            cacerts, signer = dataclasses.replace(issued, root_cert=both), new
        else:
            cacerts, signer = CaCerts(values["ca-cert.pem"], values["ca-key.pem"], new.pem,
                                      values["cert-chain.pem"]), new
        try:
            target.write(cluster, secret_manifest(cacerts, signer, policy, secret,
                                                  rotation=f"{new.fingerprint}:{PHASES[stage + 1]}"))
            return
        except ConflictError as exc:
            last = exc
    raise CAError(f"{cluster}: {SECRET} kept changing while it was written ({CONFLICT_ATTEMPTS} attempts), "
                  f"last: {last}")
