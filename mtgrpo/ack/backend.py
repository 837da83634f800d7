"""The ACK SageMaker backend (``backend: sagemaker``, the default): TrainingJob and
HyperParameterTuningJob resources for the ACK SageMaker controller.

Where its pieces live: the ``job:`` keys (the SageMaker Python SDK's names) in
:mod:`mtgrpo.recipes.schema` (``JOB``); its own rules in :mod:`mtgrpo.ack.rules` beside the shared
``job:`` rules of :mod:`mtgrpo.validate.recipe_rules`; rendering in :mod:`mtgrpo.ack.render`
(templates ``templates/trainingjob.yaml.j2``, ``templates/hyperparametertuningjob.yaml.j2``);
its kinds' checks (CRDs with unknown fields refused, the Create* request against botocore's
service model) in :mod:`mtgrpo.validate.resources`; operate verbs in :mod:`mtgrpo.ack.verbs`
over :mod:`mtgrpo.operate`; the image side in :mod:`mtgrpo.sagemaker`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mtgrpo.backends.protocol import Hardware, Target

if TYPE_CHECKING:
    from mtgrpo.contract.placement import Placement
    from mtgrpo.errors import Problem
    from mtgrpo.operate.kube import Kube
    from mtgrpo.recipes import Recipe
    from mtgrpo.recipes.schema import Checker
    from mtgrpo.render.objects import Resource
    from mtgrpo.render.settings import Settings

GROUP = "sagemaker.services.k8s.aws"
FIRST_HOST = "algo-1"  # SageMaker's name of a job's first host (mtgrpo.ack.placement)
# Recipe keys the fit planner reads (mtgrpo/plan/): a problem with one of them skips the check.
FIT_READS = ("trainer.", "tuning.", "job.instance_type", "job.instance_count", "job.inputs",
             "job.region", "job.use_spot_instances", "job.skip_fit_check", "job.max_run")


class AckSageMaker:
    name = "sagemaker"
    title = "ACK SageMaker"
    kinds = ("TrainingJob", "HyperParameterTuningJob")
    commands = frozenset({"pipeline", "artifacts", "metrics", "tuned-training-job", "track"})
    section = None
    section_key = None
    selector_prefixes = ("trainingjob/", "trainingjobs/", "hyperparametertuningjob/",
                         "hyperparametertuningjobs/")
    bare_names = True
    health_checks = {f"{GROUP}_TrainingJob": "health/trainingjob.lua",
                     f"{GROUP}_HyperParameterTuningJob": "health/hyperparametertuningjob.lua"}

    # -- recipe -----------------------------------------------------------------------------
    def check_job(self, checker: "Checker", value: Any) -> dict:
        from mtgrpo.recipes import schema

        return checker.section(value, schema.JOB, "job", "job keys")

    def check_section(self, checker: "Checker", value: Any) -> dict | None:
        return None

    def check_recipe(self, recipe: "Recipe") -> list["Problem"]:
        from mtgrpo.ack.rules import check_ack_recipe

        return check_ack_recipe(recipe)

    def placement(self, recipe: "Recipe") -> "tuple[Placement | None, list[Problem]]":
        from mtgrpo.ack.placement import recipe_placement

        return recipe_placement(recipe)

    # -- render -----------------------------------------------------------------------------
    def render(self, recipe: "Recipe", settings: "Settings") -> list["Resource"]:
        from mtgrpo.ack.render import build_resources

        return build_resources(recipe, settings)

    def check_resources(self, resources: Sequence["Resource"], recipe: "Recipe", *,
                        crd_dir: Path, root: Path, found: Sequence["Problem"]) -> list["Problem"]:
        from mtgrpo.render.keymap import to_recipe_keys
        from mtgrpo.validate import check_resources

        checked = to_recipe_keys(check_resources([r.body for r in resources],
                                                 source=recipe.source, crd_dir=crd_dir),
                                 recipe, list(resources))
        named = {(p.file, p.key) for p in found}
        fresh = [p for p in checked if (p.file, p.key) not in named]
        # The fit check (world size, batch shape, memory, cost) runs whenever the values it
        # reads are valid, beside any other problem, each reported once.
        if not any(p.key.startswith(FIT_READS) for p in (*found, *fresh)):
            from mtgrpo.plan import check_plan

            named |= {(p.file, p.key) for p in fresh}
            checked += [p for p in check_plan(recipe, root=root)
                        if (p.file, p.key) not in named]
        return checked

    def hardware(self, recipe: "Recipe") -> Hardware:
        job = recipe.job
        return Hardware(nodes=int(job["instance_count"]), instance_type=job["instance_type"],
                        region=job.get("region") or "", price_type=job["instance_type"],
                        spot=bool(job.get("use_spot_instances")), first_host=FIRST_HOST)

    def training_job_for(self, recipe: "Recipe", settings: "Settings",
                         hyperparameter_overrides: Mapping[str, str]) -> "Resource":
        """(``tuned-training-job``) The TrainingJob with a tuning job's best values."""
        from mtgrpo.ack.render import training_job_for

        return training_job_for(recipe, settings, hyperparameter_overrides)

    # -- operate ----------------------------------------------------------------------------
    def targets(self, recipe: "Recipe") -> list[Target]:
        from mtgrpo.render import build_resources, load_settings
        from mtgrpo.recipes import find_root

        return [Target(r.kind, r.name) for r in
                build_resources(recipe, load_settings(find_root(recipe.path)))]

    def status(self, kube: "Kube", selectors: Sequence[str], *, output: str,
               ask_cloud: bool) -> int:
        from mtgrpo.ack import verbs

        return verbs.status(kube, selectors, output=output, ask_cloud=ask_cloud)

    def wait(self, kube: "Kube", selector: str, *, timeout_s: float,
             heartbeat_s: float) -> int:
        from mtgrpo.ack import verbs

        return verbs.wait(kube, selector, timeout_s=timeout_s, heartbeat_s=heartbeat_s)

    def logs(self, kube: "Kube", selector: str, *, follow: bool, trial: str | None,
             node: int, poll_s: float) -> int:
        from mtgrpo.ack import verbs

        return verbs.logs(kube, selector, follow=follow, trial=trial, node=node,
                          poll_s=poll_s)

    # -- the image --------------------------------------------------------------------------
    def detect(self, environ: Mapping[str, str]) -> bool:
        from mtgrpo.sagemaker.contract import OptML

        layout = OptML.from_env(environ)
        return layout.hyperparameters_file.is_file() or layout.resource_config_file.is_file()

    def run_job(self) -> int:
        from mtgrpo.sagemaker.job import run_job

        return run_job()


BACKEND = AckSageMaker()
