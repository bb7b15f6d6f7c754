"""Citadel plug-in CAs for every cluster: one shared root, one intermediate per cluster (issue 8).

- ``root``: create and load the root of trust, which lives in a directory and never in Git.
- ``policy``: the per-cluster policy from CertificateAuthority objects.
- ``intermediate``: issuing an intermediate under a policy.
- ``planning``: the pure decision (create, reissue, none, refuse) from the current ``cacerts`` Secret.
- ``rotate``: root rotation, one phase per run across every cluster (``galleon ca rotate-root``).
- ``targets``: where the Secret lives (``dir:PATH``) and ``reconcile``, which plans again on a conflict.
- ``kube``: the ``kube`` target, each cluster's Secret through the official Kubernetes client
  (imported by ``target_from("kube", ...)`` only, so the other commands do not load the client).

Every error a person can cause is a ``CAError`` with one line and never any key material.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import CAError

if TYPE_CHECKING:
    from .intermediate import CaCerts, issue
    from .planning import Plan, plan, secret_manifest
    from .policy import Policy, policy_for
    from .root import RootCA, init_root, load_root
    from .rotate import Rotation, rotate_root
    from .targets import ConflictError, DirTarget, Target, reconcile, target_from

__all__ = ["CAError", "CaCerts", "ConflictError", "DirTarget", "Plan", "Policy", "RootCA", "Rotation", "Target",
           "init_root", "issue", "load_root", "plan", "policy_for", "reconcile", "rotate_root", "secret_manifest",
           "target_from"]

# Each name is loaded from its module when first used, so that what only reads policies (a
# preview's CA section) does not load cryptography (0.1 s) with the rest. No module is named like
# a name it exports here: importing it would put the module in that name's place.
_MODULES = {"CaCerts": "intermediate", "issue": "intermediate", "Plan": "planning", "plan": "planning",
            "secret_manifest": "planning", "Policy": "policy", "policy_for": "policy", "RootCA": "root",
            "init_root": "root", "load_root": "root", "Rotation": "rotate", "rotate_root": "rotate",
            "ConflictError": "targets", "DirTarget": "targets", "Target": "targets", "reconcile": "targets",
            "target_from": "targets"}


def __getattr__(name: str):
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
