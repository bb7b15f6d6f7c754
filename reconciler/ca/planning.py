"""What to do with one cluster's ``istio-system/cacerts``: a pure decision, then the Secret to write.

The decision reads the current Secret (as a dict, or None when it is missing) and checks what
istiod relies on: the chain verifies to the current root, the key matches, the bundle and
chain are the ones Istio expects, the certificate is not due, and the policy it was issued under
is the current one. It never generates keys, so ``--dry-run`` is cheap and shows no secret.

During a root rotation (the ``galleon.io/ca-rotation`` annotation, see rotate.py) the bundle is the
old and the new root, and a plain reconcile never writes: with the root that signs at the current
phase a Secret in order is left as it is, anything else is refused with the reason, so that only
``galleon ca rotate-root``, which holds both roots, moves or repairs it.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from .intermediate import CaCerts, not_after
from .policy import Policy
from .root import RootCA
from .x509util import fingerprint, key_algorithm, same_public_key, stamp, utc

NAMESPACE, NAME = "istio-system", "cacerts"
SECRET = f"{NAMESPACE}/{NAME}"
MANAGED_BY, GALLEON = "app.kubernetes.io/managed-by", "galleon"
ROOT_ANNOTATION = "galleon.io/ca-root-fingerprint"
NOT_AFTER_ANNOTATION = "galleon.io/ca-not-after"
POLICY_ANNOTATION = "galleon.io/ca-policy-hash"
# ``<new root fingerprint>:<phase>`` while ``galleon ca rotate-root`` moves the mesh to a new root
# (rotate.py); ``:done`` stays after the last phase so that a reconcile with the old root refuses.
ROTATION_ANNOTATION = "galleon.io/ca-rotation"
TRUST_BOTH, SWITCHED, DONE = "trust-both", "switched", "done"
ISTIO_GENERATED = "istio-generated"
# kubectl keeps a whole copy of the object it applied here, keys included: never carry it over.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

CREATE, REISSUE, NONE, REFUSE = "create", "reissue", "none", "refuse"


@dataclass(frozen=True)
class Intermediate:
    """What a person may see of an intermediate certificate."""

    fingerprint: str
    key_algorithm: str
    not_before: datetime
    not_after: datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> "Intermediate":
        return cls(fingerprint(cert), key_algorithm(cert.public_key()), cert.not_valid_before_utc,
                   cert.not_valid_after_utc)

    def text(self) -> str:
        return (f"sha256:{self.fingerprint} {self.key_algorithm}, valid {stamp(self.not_before)} "
                f"to {stamp(self.not_after)}")


@dataclass(frozen=True)
class Plan:
    cluster: str
    action: str
    reasons: tuple[str, ...]
    root_fingerprint: str
    policy: Policy
    current: Intermediate | None = None  # the intermediate in the Secret, when it could be read
    new_not_after: datetime | None = None  # of the intermediate that create/reissue would issue
    warnings: tuple[str, ...] = ()

    @property
    def writes(self) -> bool:
        return self.action in (CREATE, REISSUE)

    def describe(self) -> str:
        """For ``--dry-run`` and logs: fingerprints and dates, never key material."""
        lines = [f"{self.cluster} {SECRET}: {self.action}"]
        lines += [f"  why: {reason}" for reason in self.reasons]
        if self.current:
            lines.append(f"  current: intermediate {self.current.text()}")
        if self.writes:
            lines.append(f"  new: {self.policy.key_algorithm} intermediate valid until {stamp(self.new_not_after)}, "
                         f"under root sha256:{self.root_fingerprint} ({self.policy.source}, "
                         f"policy hash {self.policy.hash})")
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def plan(current: dict | None, root: RootCA, cluster: str, policy: Policy, now: datetime,
         adopt: bool = False) -> Plan:
    """Decide what to do with ``cluster``'s ``cacerts`` Secret ``current`` (None: missing)."""
    now = utc(now)
    base = dict(cluster=cluster, root_fingerprint=root.fingerprint, policy=policy)
    if root.not_after <= now:
        return Plan(action=REFUSE, reasons=(f"the root CA expired at {stamp(root.not_after)}; rotate the root",),
                    **base)
    new_not_after = not_after(root, policy, now)
    if current is None:
        return Plan(action=CREATE, reasons=(f"{SECRET} does not exist",), new_not_after=new_not_after, **base)
    metadata = current.get("metadata") or {}
    manager = (metadata.get("labels") or {}).get(MANAGED_BY)
    reasons: list[str] = []
    if manager != GALLEON:
        if not adopt:
            owner = f"it is managed by {manager!r}" if manager else f"it has no {MANAGED_BY} label"
            return Plan(action=REFUSE, reasons=(f"{SECRET} exists and Galleon did not write it ({owner}); "
                                                "pass --adopt to replace it",), **base)
        reasons.append(f"adopting {SECRET}, which Galleon did not write")
    rotation = rotation_of(current)
    bundle = [root.fingerprint]
    if rotation:
        bundle, wrong_root = _rotation_bundle(*rotation, root)
        if wrong_root:
            return Plan(action=REFUSE, reasons=(wrong_root,), **base)
    found, problems = _check(current, root, policy, now, new_not_after, bundle)
    if problems and rotation and rotation[1] in (TRUST_BOTH, SWITCHED):
        # A reissue would write a one-root bundle in the middle of a rotation and split the mesh's
        # trust: the Secret is left to rotate-root, which knows both roots.
        return Plan(action=REFUSE, current=found, reasons=(
            f"a root rotation to sha256:{rotation[0]} is at phase {rotation[1]}; Galleon leaves {SECRET} "
            "to `galleon ca rotate-root` until it is done", *problems), **base)
    reasons += problems
    warnings = ()
    if found and not problems and root.not_after - now <= policy.renew_before_delta:
        warnings = (f"the root CA expires at {stamp(root.not_after)}, within renewBefore {policy.renew_before}: "
                    "intermediates cannot outlive it; rotate the root",)
    return Plan(action=REISSUE if reasons else NONE, reasons=tuple(reasons), current=found,
                new_not_after=new_not_after if reasons else None, warnings=warnings, **base)


def rotation_of(secret: dict) -> tuple[str, str | None] | None:
    """The Secret's rotation annotation as (new root fingerprint, phase); the phase is None when
    the annotation is not one Galleon writes."""
    value = ((secret.get("metadata") or {}).get("annotations") or {}).get(ROTATION_ANNOTATION)
    if value is None:
        return None
    new, _, phase = str(value).partition(":")
    return new, phase if new and phase in (TRUST_BOTH, SWITCHED, DONE) else None


def _rotation_bundle(new: str, phase: str | None, root: RootCA) -> tuple[list[str | None], str | None]:
    """The bundle a Secret at ``phase`` of a rotation to ``new`` holds when ``root`` signs its
    intermediate (None stands for the rotation's other root, which a plain reconcile does not
    know), or why ``root`` is not the one that signs at this phase."""
    if phase is None:
        return [], f"its {ROTATION_ANNOTATION} annotation is not <fingerprint>:{TRUST_BOTH}|{SWITCHED}|{DONE}"
    is_new = root.fingerprint == new
    if phase == TRUST_BOTH and not is_new:
        return [root.fingerprint, new], None
    if phase == SWITCHED and is_new:
        return [None, root.fingerprint], None
    if phase == DONE and is_new:
        return [root.fingerprint], None
    signer = "the old root" if phase == TRUST_BOTH else f"the new root sha256:{new}"
    return [], (f"a root rotation to sha256:{new} is at phase {phase}, where intermediates are under {signer}, "
                f"not under sha256:{root.fingerprint}; continue it with `galleon ca rotate-root`"
                if phase != DONE else
                f"the root was rotated to sha256:{new}; reconcile with that root, not sha256:{root.fingerprint}")


def _same_bundle(found: list[str], expected: list[str | None]) -> bool:
    return len(found) == len(expected) and all(f == e or (e is None and f not in expected)
                                               for f, e in zip(found, expected))


def _check(secret: dict, root: RootCA, policy: Policy, now: datetime, new_not_after: datetime,
           bundle: list[str | None]) -> tuple[Intermediate | None, list[str]]:
    """The intermediate found in ``secret`` (None when unreadable) and every reason to reissue it;
    ``bundle``: the root fingerprints root-cert.pem must hold, in order."""
    values, problems = _values(secret)
    if secret.get("type", "Opaque") != "Opaque":
        problems.append(f"its type is {secret['type']!r}, not Opaque")
    if ISTIO_GENERATED in values:
        problems.append(f"it holds an {ISTIO_GENERATED!r} key (the marker of istiod's own self-signed CA)")
    try:
        cert = _one_cert(values, "ca-cert.pem")
        key = _key(values)
        roots = _certs(values, "root-cert.pem")
        chain = _certs(values, "cert-chain.pem")
    except _Unreadable as exc:
        return None, problems + [str(exc)]
    found = Intermediate.of(cert)
    try:
        cert.verify_directly_issued_by(root.cert)
    except (ValueError, TypeError, InvalidSignature):
        problems.append(f"the intermediate is not signed by the current root sha256:{root.fingerprint}")
    if not _same_bundle([fingerprint(c) for c in roots], bundle):
        problems.append(f"root-cert.pem is not the current root sha256:{root.fingerprint}" if len(bundle) == 1
                        else "root-cert.pem is not the rotation's bundle of the old and the new root")
    if [fingerprint(c) for c in chain] != [found.fingerprint, root.fingerprint]:
        problems.append("cert-chain.pem is not the intermediate followed by the current root")
    if not same_public_key(key.public_key(), cert.public_key()):
        problems.append("ca-key.pem does not match ca-cert.pem")
    problems += _profile(cert, policy)
    if found.not_before > now:
        problems.append(f"the intermediate is not valid before {stamp(found.not_before)}")
    if found.not_after <= now:
        problems.append(f"the intermediate expired at {stamp(found.not_after)}")
    elif found.not_after - now <= policy.renew_before_delta and found.not_after < new_not_after:
        # Only when a new one would last longer: under a root about to expire, it would not.
        problems.append(f"the intermediate expires at {stamp(found.not_after)}, within renewBefore "
                        f"{policy.renew_before}")
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    recorded = annotations.get(POLICY_ANNOTATION)
    if recorded != policy.hash:
        problems.append(f"the policy changed ({policy.source}: hash {recorded or 'none'}, now {policy.hash})"
                        if recorded else "no policy hash is recorded")
    elif (annotations.get(ROOT_ANNOTATION), annotations.get(NOT_AFTER_ANNOTATION)) != (
            root.fingerprint, stamp(found.not_after)):
        problems.append("its annotations do not describe its certificate")
    return found, problems


def _profile(cert: x509.Certificate, policy: Policy) -> list[str]:
    """Where the certificate differs from what ``policy`` issues (a hand-edited or foreign one)."""
    problems = []
    if key_algorithm(cert.public_key()) != policy.key_algorithm:
        problems.append(f"its key is {key_algorithm(cert.public_key())}; the policy asks for {policy.key_algorithm}")
    if cert.subject != policy.subject():
        problems.append(f"its subject {cert.subject.rfc4514_string()!r} is not the policy's "
                        f"{policy.subject().rfc4514_string()!r}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca or constraints.path_length != 0:
        problems.append("it is not a CA certificate with pathlen 0")
    try:
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        problems.append("it has an extended key usage, which breaks workload certificates in Istio")
    except x509.ExtensionNotFound:
        pass
    return problems


class _Unreadable(Exception):
    pass


def _values(secret: dict) -> tuple[dict[str, bytes], list[str]]:
    """The Secret's values by key, decoded as the API server does (``stringData`` wins over ``data``)."""
    values, problems = {}, []
    for name, encoded in (secret.get("data") or {}).items():
        try:
            values[name] = base64.b64decode(encoded or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            problems.append(f"data[{name!r}] is not base64")
    for name, text in (secret.get("stringData") or {}).items():
        values[name] = str(text).encode()
    return values, problems


def pem_values(secret: dict) -> dict[str, str]:
    """The four values as text, of a Secret ``plan`` found in order (other keys may be binary)."""
    values = _values(secret)[0]
    return {name: values[name].decode() for name in ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")}


def _certs(values: dict[str, bytes], name: str) -> list[x509.Certificate]:
    if name not in values:
        raise _Unreadable(f"{name} is missing")
    try:
        return x509.load_pem_x509_certificates(values[name])
    except ValueError:
        raise _Unreadable(f"{name} is not PEM certificates") from None


def _one_cert(values: dict[str, bytes], name: str) -> x509.Certificate:
    certs = _certs(values, name)
    if len(certs) != 1:
        raise _Unreadable(f"{name} holds {len(certs)} certificates, not one")
    return certs[0]


def _key(values: dict[str, bytes]):
    if "ca-key.pem" not in values:
        raise _Unreadable("ca-key.pem is missing")
    try:
        return serialization.load_pem_private_key(values["ca-key.pem"], password=None)
    except (ValueError, TypeError):
        raise _Unreadable("ca-key.pem is not an unencrypted PEM private key") from None  # never quote it


def secret_manifest(cacerts: CaCerts, root: RootCA, policy: Policy, existing: dict | None = None,
                    rotation: str | None = None) -> dict:
    """The ``cacerts`` Secret to write: the four keys, our label and annotations.

    Labels and annotations other tools put on ``existing`` are kept (Galleon owns only its own);
    its values are not: all four keys are replaced together, and any others (``istio-generated``)
    dropped, so istiod never reloads a half-updated CA. ``rotation``: the rotation annotation to set.
    """
    old = (existing or {}).get("metadata") or {}
    labels = {**(old.get("labels") or {}), MANAGED_BY: GALLEON}
    annotations = {k: v for k, v in (old.get("annotations") or {}).items() if k != LAST_APPLIED}
    annotations.update({
        ROOT_ANNOTATION: root.fingerprint,
        NOT_AFTER_ANNOTATION: stamp(x509.load_pem_x509_certificate(cacerts.ca_cert.encode()).not_valid_after_utc),
        POLICY_ANNOTATION: policy.hash,
    })
    if rotation:
        annotations[ROTATION_ANNOTATION] = rotation
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels, "annotations": annotations},
        "type": "Opaque",
        "data": {name: base64.b64encode(value.encode()).decode() for name, value in cacerts.data().items()},
    }
