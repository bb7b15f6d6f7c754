"""Object and Envoy configuration diffs between two revisions, and traffic shares (PR previews)."""
from .preview import ClusterDiff, PlanChange, PlanSection, Preview, TrafficChange, ViewDiff, build_preview

__all__ = ["ClusterDiff", "PlanChange", "PlanSection", "Preview", "TrafficChange", "ViewDiff", "build_preview"]
