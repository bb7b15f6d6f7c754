"""Object and Envoy configuration diffs between two revisions, and traffic shares (PR previews)."""
from .preview import (ClusterDiff, PlanChange, PlanSection, Preview, Revision, TrafficChange, ViewDiff,
                      build_preview, load_revision)

__all__ = ["ClusterDiff", "PlanChange", "PlanSection", "Preview", "Revision", "TrafficChange", "ViewDiff",
           "build_preview", "load_revision"]
