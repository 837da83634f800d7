"""The HyperPod backend (``backend: hyperpod``): one HyperPodPyTorchJob and its ConfigMap for
the nodes of a SageMaker HyperPod (EKS) cluster, run by the HyperPod training operator.

Where its pieces live, all in this package: the ``hyperpod:`` section and the ``job:`` keys it
takes in :mod:`.schema`; rendering in :mod:`.render` (templates ``templates/hyperpod/*.j2``);
its rules and the checks of what it renders (the HyperPod SDK's own models; the project's
namespace and the locked-down pod by the rule of every cluster backend,
:mod:`mtgrpo.validate.pod_security`) in :mod:`.validate`; operate verbs in :mod:`.verbs` over
:mod:`.operate`; the image side in :mod:`.platform` and :mod:`.job`. Argo CD health check:
``deploy/argocd/health/hyperpodpytorchjob.lua``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mtgrpo.hyperpod import contract as hc
from mtgrpo.recipes.schema import Key

if TYPE_CHECKING:
    from mtgrpo.contract.placement import Placement
    from mtgrpo.errors import Problem
    from mtgrpo.recipes import Recipe
    from mtgrpo.recipes.schema import Checker
    from mtgrpo.render.settings import Settings


class HyperPod:
    name = "hyperpod"
    title = "SageMaker HyperPod (EKS)"
    kinds = ("ConfigMap", hc.KIND)
    commands: frozenset[str] = frozenset()
    section = "hyperpod"
    section_key = Key("mapping", "HyperPod-only settings (backend: hyperpod; docs/hyperpod.md).",
                      default=None)
    selector_prefixes = ("hyperpodpytorchjob/", "hyperpodpytorchjobs/", "hpjob/",
                         f"hyperpodpytorchjob.{hc.API_GROUP}/")
    bare_names = False
    health_checks = {f"{hc.API_GROUP}_{hc.KIND}": "health/hyperpodpytorchjob.lua"}

    # -- recipe -----------------------------------------------------------------------------
    def check_job(self, checker: "Checker", value: Any) -> dict:
        from mtgrpo.hyperpod.schema import check_job

        return check_job(checker, value)

    def check_section(self, checker: "Checker", value: Any) -> dict | None:
        from mtgrpo.hyperpod.schema import check_section

        return check_section(checker, value)

    def check_recipe(self, recipe: "Recipe") -> list["Problem"]:
        if not recipe.complete:
            return []
        from mtgrpo.hyperpod.validate import check_recipe

        return check_recipe(recipe)

    def placement(self, recipe: "Recipe") -> "tuple[Placement | None, list[Problem]]":
        from mtgrpo.hyperpod.render import layout

        where, problems = layout(recipe)
        return (where.placement if where else None), problems

    # -- render -----------------------------------------------------------------------------
    def render(self, recipe: "Recipe", settings: "Settings") -> list:
        from mtgrpo.hyperpod.render import build_hyperpod_resources

        return build_hyperpod_resources(recipe, settings)

    def check_resources(self, resources: Sequence, recipe: "Recipe", *, crd_dir: Path,
                        root: Path, found: Sequence["Problem"]) -> list["Problem"]:
        if found:  # the placement and labels checks would repeat the rules' problems
            return []
        from mtgrpo.hyperpod.validate import check_resources
        from mtgrpo.render.settings import load_settings

        return check_resources(list(resources), recipe,
                               namespace=load_settings(root).namespace)

    def hardware(self, recipe: "Recipe"):
        """HyperPod nodes are SageMaker instance types: the planner's catalogue rows."""
        from mtgrpo.backends.protocol import Hardware
        from mtgrpo.hyperpod.render import section

        # Not priced: a HyperPod cluster's nodes are paid for by the hour whether a job runs.
        return Hardware(nodes=int(recipe.job["instance_count"]),
                        gpus_per_node=section(recipe).get("gpus_per_node"),
                        instance_type=recipe.job["instance_type"],
                        region=recipe.job.get("region") or "")

    # -- operate ----------------------------------------------------------------------------
    def targets(self, recipe: "Recipe") -> list:
        from mtgrpo.backends.protocol import Target
        from mtgrpo.hyperpod.verbs import recipe_target

        found = recipe_target(str(recipe.path))
        return [Target(hc.KIND, *found)] if found else []

    def status(self, kube: Any, selectors: Sequence[str], *, output: str,
               ask_cloud: bool) -> int:
        from mtgrpo.hyperpod import verbs

        return verbs.status(kube, selectors, output=output, ask_cloud=ask_cloud)

    def wait(self, kube: Any, selector: str, *, timeout_s: float, heartbeat_s: float) -> int:
        from mtgrpo.hyperpod import verbs

        return verbs.wait(kube, selector, timeout_s=timeout_s, heartbeat_s=heartbeat_s)

    def logs(self, kube: Any, selector: str, *, follow: bool, trial: str | None,
             node: int, poll_s: float) -> int:
        from mtgrpo.hyperpod import verbs

        return verbs.logs(kube, selector, follow=follow, trial=trial, node=node,
                          poll_s=poll_s)

    # -- the image --------------------------------------------------------------------------
    def detect(self, environ: Mapping[str, str]) -> bool:
        from mtgrpo.hyperpod.platform import detect

        return detect(environ)

    def run_job(self) -> int:
        from mtgrpo.hyperpod.job import run_hyperpod_job

        return run_hyperpod_job()


BACKEND = HyperPod()
