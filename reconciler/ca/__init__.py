"""Citadel plug-in CAs for every cluster: one shared root, one intermediate per cluster (issue 8).

- ``root``: create and load the root of trust, which lives in a directory and never in Git.
- ``intermediate``: the per-cluster policy from CertificateAuthority objects, and issuing.
- ``plan``: the pure decision (create, reissue, none, refuse) from the current ``cacerts`` Secret.
- ``rotate``: root rotation, one phase per run across every cluster (``galleon ca rotate-root``).
- ``targets``: where the Secret lives (``dir:PATH``) and ``reconcile``, which plans again on a conflict.
- ``kube``: the ``kube`` target, each cluster's Secret through the official Kubernetes client
  (imported by ``target_from("kube", ...)`` only, so the other commands do not load the client).

Every error a person can cause is a ``CAError`` with one line and never any key material.
"""
from .errors import CAError
from .intermediate import CaCerts, Policy, issue, policy_for
from .plan import Plan, plan, secret_manifest
from .root import RootCA, init_root, load_root
from .rotate import Rotation, rotate_root
from .targets import ConflictError, DirTarget, Target, reconcile, target_from

__all__ = ["CAError", "CaCerts", "ConflictError", "DirTarget", "Plan", "Policy", "RootCA", "Rotation", "Target", "init_root",
           "issue", "load_root", "plan", "policy_for", "reconcile", "rotate_root", "secret_manifest", "target_from"]
