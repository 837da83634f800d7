"""GitOps output: the kustomization writer, atomic file writes, and render-and-diff."""

from mtgrpo.gitops.diff import Drift, compare
from mtgrpo.gitops.kustomization import kustomization_text

__all__ = ["Drift", "compare", "kustomization_text"]
