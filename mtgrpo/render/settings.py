"""Project render settings: one file, ``recipes/_project.yaml``, read by every command.

It is the one place for the namespace, the deletion policy and the CRD directory. A missing
file means the defaults below. Files starting with ``_`` are never recipes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mtgrpo.errors import Problem, UserError
from mtgrpo.recipes import schema
from mtgrpo.recipes.loader import resolve_inside, root_of
from mtgrpo.recipes.yamlfile import read_yaml

SETTINGS_FILE = "recipes/_project.yaml"

PROJECT: dict[str, schema.Key] = {
    "namespace": schema.Key("str", "Namespace of every rendered resource.", default="default"),
    "deletion_policy": schema.Key(
        "str", "services.k8s.aws/deletion-policy: retain keeps the SageMaker job when its "
               "resource is deleted; delete stops a running job.", default="retain",
        choices=("retain", "delete")),
    "crd_dir": schema.Key("str", "CRD directory for validation, relative to the repo root "
                                 "(empty: $MTGRPO_CRD_DIR, ../shared/crds, or the packaged "
                                 "copy).", default=""),
    "require_image_digest": schema.Key(
        "bool", "Refuse job.image_uri values not pinned as <repo>@sha256:<digest>.",
        default=False),
    "placeholders": schema.Key(
        "str", "What the example values left in recipes (account 111122223333, the "
               "amzn-s3-demo-bucket bucket, the all-zero image digest) are: warn prints a line "
               "for each; error refuses them (a project past its first day).", default="warn",
        choices=("warn", "error")),
    "backends": schema.Key(
        "list_str", "The backends the top-level kustomization.yaml deploys (their "
                    "manifests/<backend>/ folders); empty: every backend a recipe uses. Each "
                    "backend's folder is rendered either way (docs/architecture.md).",
        default=[]),
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Settings:
    root: Path
    namespace: str = "default"
    deletion_policy: str = "retain"
    crd_dir: Path | None = None
    require_image_digest: bool = False
    placeholders: str = "warn"
    backends: tuple[str, ...] = ()  # enabled in the top-level kustomization; (): all rendered
    # Template texts held in memory ((file name, text), ...): used before templates/ (the
    # pipeline's train step renders from the bundle without writing a repository to disk).
    templates: tuple = ()

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"


def load_settings(root: Path | str) -> Settings:
    """Read ``recipes/_project.yaml`` under ``root`` (defaults when the file is absent)."""
    root = Path(root)
    path = root / SETTINGS_FILE
    raw: object = {}
    if path.exists() or path.is_symlink():
        real, why = resolve_inside(path, root_of(root))
        if real is None:
            raise UserError(Problem(SETTINGS_FILE, "", why, "a YAML file inside the repository"))
        raw = read_yaml(real, source=SETTINGS_FILE)
    return settings_from_data(raw, root)


def settings_from_data(raw: object, root: Path | str, *, templates: tuple = ()) -> Settings:
    """Settings from a parsed ``_project.yaml`` mapping (in memory); ``UserError`` if bad."""
    root = Path(root)
    checker = schema.Checker(lambda key: SETTINGS_FILE)
    values = checker.section(raw if raw is not None else {}, PROJECT, "", "project settings")
    if "namespace" in values and not _DNS_LABEL.match(values["namespace"]):
        checker.problem("namespace", f"invalid namespace {values['namespace']!r}",
                        "a DNS label: lower-case letters, digits and '-', at most 63")
    from mtgrpo import backends

    for i, name in enumerate(values.get("backends") or []):
        if name not in backends.names():
            checker.problem(f"backends[{i}]", f"unknown backend {name!r}",
                            "one of " + ", ".join(backends.names()))
    if checker.problems:
        raise UserError(checker.problems)
    crd_dir = (root / values["crd_dir"]) if values["crd_dir"] else None
    return Settings(root=root, namespace=values["namespace"],
                    deletion_policy=values["deletion_policy"], crd_dir=crd_dir,
                    require_image_digest=values["require_image_digest"],
                    placeholders=values["placeholders"], backends=tuple(values["backends"]),
                    templates=tuple(templates))

