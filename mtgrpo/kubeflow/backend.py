"""The Kubeflow backend (``backend: kubeflow``): a Kubeflow Trainer v2 TrainJob with its own
TrainingRuntime and ConfigMap, or a Katib Experiment whose trials are TrainJobs.

Where its pieces live, all in this package: the ``kubeflow:`` section and the ``job:`` keys it
takes in :mod:`.schema`; its rules and its kinds' checks (Trainer CRDs and their CEL rules,
Katib's OpenAPI document and webhook rules) in :mod:`.validate`; rendering in :mod:`.render`
(templates ``templates/kubeflow/*.j2``); operate verbs in :mod:`.verbs` over :mod:`.operate`,
:mod:`.experiment` and :mod:`.follow`; the image side in :mod:`.platform`, :mod:`.job` and
:mod:`.s3`. Argo CD health checks: ``deploy/argocd/health/{trainjob,experiment}.lua``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mtgrpo.backends.protocol import Hardware, Target
from mtgrpo.recipes.schema import Key

if TYPE_CHECKING:
    from mtgrpo.contract.placement import Placement
    from mtgrpo.errors import Problem
    from mtgrpo.operate.kube import Kube
    from mtgrpo.recipes import Recipe
    from mtgrpo.recipes.schema import Checker
    from mtgrpo.render.objects import Resource
    from mtgrpo.render.settings import Settings

# Node labels `mtgrpo plan` reads the hardware from (EKS and NVIDIA's GPU feature discovery).
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


class Kubeflow:
    name = "kubeflow"
    title = "Kubeflow Trainer + Katib"
    kinds = ("ConfigMap", "TrainingRuntime", "TrainJob", "Experiment")
    commands: frozenset[str] = frozenset()
    section = "kubeflow"
    section_key = Key("mapping", "Kubeflow-only settings (backend: kubeflow; docs/kubeflow.md).",
                      default=None)
    selector_prefixes = ("trainjob/", "trainjobs/", "trainjob.trainer.kubeflow.org/")
    bare_names = False
    health_checks = {"trainer.kubeflow.org_TrainJob": "health/trainjob.lua",
                     "kubeflow.org_Experiment": "health/experiment.lua"}

    # -- recipe -----------------------------------------------------------------------------
    def check_job(self, checker: "Checker", value: Any) -> dict:
        from mtgrpo.kubeflow.schema import check_job

        return check_job(checker, value)

    def check_section(self, checker: "Checker", value: Any) -> dict | None:
        from mtgrpo.kubeflow.schema import check_section

        return check_section(checker, value)

    def check_recipe(self, recipe: "Recipe") -> list["Problem"]:
        if not recipe.complete:
            return []
        from mtgrpo.kubeflow.validate import check_kubeflow_recipe

        return check_kubeflow_recipe(recipe)

    def placement(self, recipe: "Recipe") -> "tuple[Placement | None, list[Problem]]":
        from mtgrpo.kubeflow.render import placement

        return placement(recipe)

    # -- render -----------------------------------------------------------------------------
    def render(self, recipe: "Recipe", settings: "Settings") -> list["Resource"]:
        from mtgrpo.kubeflow.render import build_kubeflow_resources

        return build_kubeflow_resources(recipe, settings)

    def check_resources(self, resources: Sequence["Resource"], recipe: "Recipe", *,
                        crd_dir: Path, root: Path, found: Sequence["Problem"]) -> list["Problem"]:
        if found:  # its CRD checks would repeat the rules' problems
            return []
        from mtgrpo.kubeflow.validate import check_kubeflow_resources

        return check_kubeflow_resources(list(resources), recipe, crd_dir=crd_dir)

    def hardware(self, recipe: "Recipe") -> Hardware:
        kf = recipe.section or {}
        selector = kf.get("node_selector") or {}
        nodes, gpus = int(kf.get("num_nodes") or 1), int(kf.get("gpus_per_node") or 0)
        for label in INSTANCE_TYPE_LABELS:
            if selector.get(label):
                kind = str(selector[label])
                return Hardware(nodes=nodes, gpus_per_node=gpus, region=recipe.job.get("region")
                                or "", instance_type=kind if kind.startswith("ml.")
                                else f"ml.{kind}")
        if selector.get(GPU_PRODUCT_LABEL):
            return Hardware(nodes=nodes, gpus_per_node=gpus,
                            gpu_model=str(selector[GPU_PRODUCT_LABEL]))
        return Hardware(nodes=nodes, gpus_per_node=gpus, unknown=(
            f"kubeflow.node_selector names neither {INSTANCE_TYPE_LABELS[0]} nor "
            f"{GPU_PRODUCT_LABEL}, so the nodes' GPUs are unknown"))

    # -- operate ----------------------------------------------------------------------------
    def targets(self, recipe: "Recipe") -> list[Target]:
        from mtgrpo.kubeflow.operate import recipe_targets

        return [Target(*t) for t in recipe_targets(str(recipe.path)) or []]

    def status(self, kube: "Kube", selectors: Sequence[str], *, output: str,
               ask_cloud: bool) -> int:
        from mtgrpo.kubeflow import verbs

        return verbs.status(kube, selectors, output=output, ask_cloud=ask_cloud)

    def wait(self, kube: "Kube", selector: str, *, timeout_s: float,
             heartbeat_s: float) -> int:
        from mtgrpo.kubeflow import verbs

        return verbs.wait(kube, selector, timeout_s=timeout_s, heartbeat_s=heartbeat_s)

    def logs(self, kube: "Kube", selector: str, *, follow: bool, trial: str | None,
             node: int, poll_s: float) -> int:
        from mtgrpo.kubeflow import verbs

        return verbs.logs(kube, selector, follow=follow, trial=trial, node=node,
                          poll_s=poll_s)

    # -- the image --------------------------------------------------------------------------
    def detect(self, environ: Mapping[str, str]) -> bool:
        from mtgrpo.kubeflow.platform import KUBEFLOW, detect

        return detect(environ) == KUBEFLOW

    def run_job(self) -> int:
        from mtgrpo.kubeflow.job import run_kubeflow_job

        return run_kubeflow_job()


BACKEND = Kubeflow()
