"""Render-and-diff: compare what the recipes render to with what is committed.

``compare(result)`` takes :func:`mtgrpo.render.render_all`'s in-memory result and the files on
disk; the drift is a unified diff plus a summary of jobs added, removed and replaced
(old name -> new name, paired by recipe and kind).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtgrpo.errors import UserError
from mtgrpo.gitops.files import managed_files, read_text
from mtgrpo.recipes.yamlfile import parse_yaml

RECIPE_LABEL = "mtgrpo.io/recipe"  # = mtgrpo.render.RECIPE_LABEL (no import: render imports gitops)


@dataclass(frozen=True)
class Job:
    name: str
    kind: str
    recipe: str
    path: str


@dataclass
class Drift:
    diff: str = ""
    added: list[Job] = field(default_factory=list)
    removed: list[Job] = field(default_factory=list)
    replaced: list[tuple[Job, Job]] = field(default_factory=list)
    updated: list[Job] = field(default_factory=list)  # same name, metadata changed
    other: list[str] = field(default_factory=list)    # e.g. kustomization.yaml

    @property
    def clean(self) -> bool:
        return not self.diff

    def summary(self) -> str:
        lines = []
        if self.added:
            lines.append(f"jobs added: {len(self.added)}")
            lines += [f"  + {j.name} ({j.kind}, recipe {j.recipe})" for j in self.added]
        if self.removed:
            lines.append(f"jobs removed: {len(self.removed)}")
            lines += [f"  - {j.name} ({j.kind}, recipe {j.recipe})" for j in self.removed]
        if self.replaced:
            lines.append(f"jobs replaced: {len(self.replaced)}")
            lines += [f"  ~ {old.name} -> {new.name} ({new.kind}, recipe {new.recipe})"
                      for old, new in self.replaced]
        if self.updated:
            lines.append(f"changed, same job name (metadata or layout, no new job): "
                         f"{len(self.updated)}")
            lines += [f"  ~ {j.name} ({j.kind})" for j in self.updated]
        if self.other:
            lines.append("other files changed: " + ", ".join(self.other))
        return "\n".join(lines)


def compare(root: Path, expected: dict[str, str]) -> Drift:
    """Drift between ``expected`` (relative path -> text) and the files under ``root``."""
    root = Path(root)
    paths = sorted(set(expected) | set(managed_files(root)))
    chunks = []
    drift = Drift()
    old_jobs: list[Job] = []
    new_jobs: list[Job] = []
    for rel in paths:
        old = read_text(root / rel)
        new = expected.get(rel)
        if old == new:
            continue
        chunks.append("".join(difflib.unified_diff(
            (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
            fromfile=f"a/{rel}" if old is not None else "/dev/null",
            tofile=f"b/{rel}" if new is not None else "/dev/null")))
        old_job = _job(rel, old) if old is not None else None
        new_job = _job(rel, new) if new is not None else None
        if old_job is None and new_job is None:
            drift.other.append(rel)
        elif old_job and new_job and old_job.name == new_job.name:
            drift.updated.append(new_job)
        else:
            if old_job:
                old_jobs.append(old_job)
            if new_job:
                new_jobs.append(new_job)
    drift.diff = "".join(c if c.endswith("\n") else c + "\n" for c in chunks)
    _pair(drift, old_jobs, new_jobs)
    return drift


def _pair(drift: Drift, old_jobs: list[Job], new_jobs: list[Job]) -> None:
    """A removed and an added job of the same recipe and kind are one job replaced."""
    remaining = list(new_jobs)
    for old in old_jobs:
        match = next((n for n in remaining if (n.recipe, n.kind) == (old.recipe, old.kind)),
                     None)
        if match is None:
            drift.removed.append(old)
        else:
            remaining.remove(match)
            drift.replaced.append((old, match))
    drift.added.extend(remaining)


def _job(rel: str, text: str) -> Job | None:
    if not rel.startswith("manifests/") or Path(rel).name == "kustomization.yaml":
        return None
    try:
        body: Any = parse_yaml(text, source=rel)
    except UserError:
        return Job(name=Path(rel).stem, kind="?", recipe="?", path=rel)
    if not isinstance(body, dict):
        return Job(name=Path(rel).stem, kind="?", recipe="?", path=rel)
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    return Job(name=str(meta.get("name", Path(rel).stem)), kind=str(body.get("kind", "?")),
               recipe=str(labels.get(RECIPE_LABEL, "?")), path=rel)
