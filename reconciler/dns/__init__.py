"""CoreDNS entries for cross-cluster names: Corefile editing, rendering, targets and reconcile."""
from .reconcile import CREATE, NONE, UPDATE, Outcome, read_entries, reconcile, reconcile_clusters
from .render import DEFAULT_NS_ADDRESS, DEFAULT_TTL, FORMATS, render
from .configmap import DNSError
from .targets import DirTarget, Target, target_from

__all__ = ["CREATE", "DEFAULT_NS_ADDRESS", "DEFAULT_TTL", "DNSError", "DirTarget", "FORMATS", "NONE", "Outcome",
           "Target", "UPDATE", "read_entries", "reconcile", "reconcile_clusters", "render", "target_from"]
