"""Recipe -> HyperPod resources (``backend: hyperpod``): the ConfigMap the pods read and one
``HyperPodPyTorchJob`` for the nodes of a HyperPod cluster.

Both objects share one content-hashed name; the hash covers both whole (names left out), so
any change that alters what runs gives a new job. Templates live in ``templates/hyperpod/``;
this module computes the values: the placement (the launcher's own, through
:func:`mtgrpo.plan.placement.placement`), the node's resources from its instance type, the
operator's run policy, the Kueue labels and the locked-down pod (the one rule of every
cluster backend, :mod:`mtgrpo.validate.pod_security`). docs/hyperpod.md describes
the output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from mtgrpo.contract.metrics import PREFIX as METRICS_PREFIX
from mtgrpo.contract.placement import Placement, place
from mtgrpo.errors import Problem, UserError
from mtgrpo.hyperpod import contract as hc
from mtgrpo.hyperpod.instances import NodeType, known_types, node_type
from mtgrpo.recipes import Recipe
from mtgrpo.render import naming
from mtgrpo.render.objects import (MANAGED_BY_LABEL, RECIPE_LABEL, SOURCE_ANNOTATION,
                                   SYNC_OPTIONS, SYNC_OPTIONS_ANNOTATION, Resource, emit,
                                   render_object)
from mtgrpo.render.settings import Settings
from mtgrpo.render.templating import template_path
from mtgrpo.validate import pod_security

BACKEND = "hyperpod"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# HyperPod's node labels (the SDK's own affinity): only nodes the health agent calls
# Schedulable; optionally only nodes whose deep health check passed.
HEALTH_LABEL = "sagemaker.amazonaws.com/node-health-status"
DEEP_HEALTH_LABEL = "sagemaker.amazonaws.com/deep-health-check-status"
GPU_RESOURCE = "nvidia.com/gpu"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
# The pod's grace period after SIGTERM: the launcher's stop (100 s) plus the final uploads.
GRACE_SECONDS = 300

TEMPLATE_FILES = {"ConfigMap": "hyperpod/configmap.yaml.j2",
                  hc.KIND: "hyperpod/hyperpodpytorchjob.yaml.j2"}
_NAME = "mtgrpo-name-placeholder"  # the shared name while the objects are hashed


def job_name_limit(nodes: int) -> int:
    """The name leaves room for the operator's pod names, ``<job>-<replica spec>-<index>``,
    which must stay DNS labels (<= 63: the pod's hostname)."""
    return 63 - len(f"-{hc.REPLICA_SPEC}-") - len(str(max(nodes - 1, 0)))


def section(recipe: Recipe) -> dict:
    """The checked ``hyperpod:`` section of a loaded recipe."""
    return recipe.section or {}


@dataclass(frozen=True)
class Layout:
    """Where a HyperPod recipe's processes go: ``replicas`` pods of ``node``, each with
    ``gpus`` GPUs and ``efa`` EFA interfaces, split by the one placement rule."""

    node: NodeType
    gpus: int
    efa: int
    placement: Placement

    @property
    def replicas(self) -> int:
        return self.placement.num_nodes

    @property
    def procs_per_node(self) -> int:
        """Training ranks per pod (the vLLM GPUs are not ranks)."""
        return self.placement.processes_per_node


def layout(recipe: Recipe) -> tuple[Layout | None, list[Problem]]:
    """The placement of a HyperPod recipe on its node type's GPUs, by the one rule
    (:func:`mtgrpo.contract.placement.place`, which the launcher in each pod runs too), or the
    problems that make it impossible."""
    hp = section(recipe)
    job = recipe.job
    problems: list[Problem] = []

    def problem(key: str, message: str, allowed: str) -> None:
        problems.append(Problem(recipe.where(key), key, message, allowed))

    node = node_type(job["instance_type"])
    if node is None:
        problem("job.instance_type", f"unknown HyperPod instance type {job['instance_type']!r}",
                "one of " + ", ".join(known_types()))
        return None, problems
    gpus = node.gpus if hp.get("gpus_per_node") is None else hp["gpus_per_node"]
    efa = node.efa if hp.get("efa") is None else hp["efa"]
    if not 0 <= gpus <= node.gpus:
        problem("hyperpod.gpus_per_node", f"{gpus} GPUs on {node.name}, which has {node.gpus}",
                f"0 to {node.gpus}, or unset")
    if not 0 <= efa <= node.efa:
        problem("hyperpod.efa", f"{efa} EFA interfaces on {node.name}, which has {node.efa}",
                f"0 to {node.efa}, or unset")
    if job["instance_count"] < 1:
        problem("job.instance_count", f"{job['instance_count']} nodes", "at least 1")
    if problems:
        return None, problems
    try:
        # The first pod's host name is the operator's (MASTER_ADDR): URLs name this pod.
        where = place(recipe.trainer, num_nodes=job["instance_count"], gpus_per_node=gpus,
                      source=recipe.where("trainer"), key_prefix="trainer.")
    except UserError as err:
        return None, [Problem(recipe.where(p.key), p.key,
                              f"{p.message} ({gpus} GPUs per pod on {node.name})", p.allowed)
                      for p in err.problems]
    return Layout(node, gpus, efa, where), []


def build_hyperpod_resources(recipe: Recipe, settings: Settings) -> list[Resource]:
    """The resources of a ``backend: hyperpod`` recipe."""
    if recipe.tuning is not None:
        raise UserError(Problem(recipe.where("tuning"), "tuning", "hyperparameter tuning is "
                                "not rendered for backend hyperpod",
                                "backend sagemaker or kubeflow for tuning, then a hyperpod "
                                "recipe with the chosen values"))
    place, problems = layout(recipe)
    if place is None:
        raise UserError(problems)
    ctx = context(recipe, settings, place)
    bodies = [("ConfigMap", _render("ConfigMap", recipe, settings, ctx)),
              (hc.KIND, _render(hc.KIND, recipe, settings, ctx))]
    return _named(recipe, bodies, job_name_limit(place.replicas), settings)


# -- values -------------------------------------------------------------------------------------

def namespace(settings: Settings) -> str:
    """The project's namespace, as on every backend (with task governance, the team's
    ``hyperpod-ns-<team>``: docs/hyperpod.md)."""
    return settings.namespace


def _labels(recipe: Recipe) -> dict[str, str]:
    labels = {t["Key"]: t["Value"] for t in recipe.job["tags"]}
    labels.update({MANAGED_BY_LABEL: "mtgrpo", RECIPE_LABEL: recipe.name})
    return labels


def _scheduling_labels(hp: Mapping[str, Any]) -> dict[str, str]:
    """HyperPod task governance: the team's LocalQueue and the WorkloadPriorityClass."""
    out = {}
    if hp.get("queue"):
        out[QUEUE_LABEL] = hp["queue"]
    if hp.get("priority"):
        out[PRIORITY_LABEL] = hp["priority"]
    return out


def _platform(recipe: Recipe) -> dict:
    job, hp = recipe.job, section(recipe)
    checkpoints: dict[str, str] = {}
    if hp.get("checkpoint_dir"):
        checkpoints["dir"] = hp["checkpoint_dir"]
    elif job.get("checkpoint_s3_uri"):
        checkpoints["s3_uri"] = job["checkpoint_s3_uri"]
    return {"channels": {name: job["inputs"][name]["s3_data"] for name in sorted(job["inputs"])},
            "output_path": job["output_path"], "checkpoints": checkpoints}


def _config_data(recipe: Recipe) -> dict[str, str]:
    # One line each: the canonical YAML writer would otherwise escape every newline.
    return {hc.HYPERPARAMETERS_KEY: json.dumps(recipe.trainer.to_hyperparameters(),
                                               sort_keys=True),
            hc.PLATFORM_KEY: json.dumps(_platform(recipe), sort_keys=True)}


def _env(recipe: Recipe, place: Layout) -> list[dict]:
    job = recipe.job
    env = [{"name": key, "value": job["environment"][key]} for key in sorted(job["environment"])]
    if job.get("region"):
        env += [{"name": "AWS_REGION", "value": job["region"]},
                {"name": "AWS_DEFAULT_REGION", "value": job["region"]}]
    env += [{"name": hc.NNODES_ENV, "value": str(place.replicas)},
            {"name": "HOME", "value": pod_security.HOME_DIR},
            {"name": hc.JOB_NAME_ENV, "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.labels['{hc.JOB_NAME_LABEL}']"}}}]
    if place.efa:
        env.append({"name": "FI_PROVIDER", "value": "efa"})
    return env


def _pod_security(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The locked-down pod (mtgrpo.validate.pod_security), loosened where the recipe says why.
    The operator's schema types the pod's securityContext as a container's (the SDK's generated
    models do too), so a pod-level field a container's lacks (fsGroup, sysctls, ...) would be
    refused: only the fields both have are kept."""
    from mtgrpo.hyperpod.validate import job_schema

    allowed = job_schema()["$defs"]["SecurityContext"]["properties"]
    pod_sc, container_sc, token = pod_security.loosened_pod(hp.get("security_exceptions") or {})
    return {"pod_security_context": {k: v for k, v in pod_sc.items() if k in allowed},
            "security_context": container_sc, "automount_token": token}


def _resources(hp: Mapping[str, Any], place: Layout) -> dict:
    cpu = hp.get("cpu") or str(place.node.allocatable_cpu)
    memory = hp.get("memory") or f"{place.node.allocatable_memory_gib}Gi"
    requests = {"cpu": cpu, "memory": memory}
    limits = {"memory": memory}
    if place.gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(place.gpus)
    if place.efa:
        requests[EFA_RESOURCE] = limits[EFA_RESOURCE] = str(place.efa)
    return {"requests": requests, "limits": limits}


def _affinity(hp: Mapping[str, Any]) -> dict:
    terms = [{"key": HEALTH_LABEL, "operator": "In", "values": ["Schedulable"]}]
    if hp.get("deep_health_check_passed_only"):
        terms.append({"key": DEEP_HEALTH_LABEL, "operator": "In", "values": ["Passed"]})
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": terms}]}}}


def _run_policy(recipe: Recipe) -> dict:
    """The operator's auto-resume: up to ``max_retries`` restarts of the whole job within
    ``max_run`` (each resumes from the newest complete checkpoint), and optional hang detection
    from the trainer's metric lines."""
    hp, job = section(recipe), recipe.job
    policy: dict[str, Any] = {
        "activeDeadlineSeconds": job["max_run"],
        # Pods stay after the end so `mtgrpo logs` still reads them.
        "cleanPodPolicy": "None",
        "jobMaxRetryCount": hp["max_retries"],
        "restartPolicy": {"evalPeriodSeconds": job["max_run"],
                          "maxFullJobRestarts": hp["max_retries"]},
    }
    if hp.get("hang_timeout"):
        policy["logMonitoringConfiguration"] = [{
            "name": "mtgrpo-steps",
            "logPattern": f".*{METRICS_PREFIX}.*",
            "expectedStartCutOffInSeconds": hp["start_timeout"],
            "expectedRecurringFrequencyInSeconds": hp["hang_timeout"],
        }]
    return policy


def _volumes(hp: Mapping[str, Any], ctx_name: str) -> tuple[list[dict], list[dict]]:
    """(volumes, volumeMounts): /dev/shm in memory, the ConfigMap, writable scratch for the
    read-only root filesystem, the FSx claim if any."""
    # Where the trainer writes under the read-only root: the shared rule's emptyDirs.
    sizes = {"opt-ml": hp["scratch_size"], "tmp": "16Gi", "home": "64Gi"}
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": hp["shm_size"]}},
        {"name": "mtgrpo-config", "configMap": {"name": ctx_name}}]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": hc.SHM_DIR},
        {"name": "mtgrpo-config", "mountPath": hc.CONFIG_DIR, "readOnly": True}]
    for name, path in pod_security.SCRATCH.items():
        volumes.append({"name": name, "emptyDir": {"sizeLimit": sizes[name]}})
        mounts.append({"name": name, "mountPath": path})
    fsx = hp.get("fsx")
    if fsx:
        volumes.append({"name": "fsx", "persistentVolumeClaim": {
            "claimName": fsx["claim_name"], "readOnly": fsx["read_only"]}})
        mounts.append({"name": "fsx", "mountPath": fsx["mount_path"],
                       "readOnly": fsx["read_only"]})
    return volumes, mounts


def context(recipe: Recipe, settings: Settings, place: Layout) -> dict:
    """The templates' variables (docs/hyperpod.md lists them)."""
    hp = section(recipe)
    scheduling = _scheduling_labels(hp)
    volumes, mounts = _volumes(hp, _NAME)
    node_selector = {INSTANCE_TYPE_LABEL: place.node.name, **hp["node_selector"]}
    return {
        "name": _NAME, "namespace": namespace(settings),
        "labels": _labels(recipe), "job_labels": {**_labels(recipe), **scheduling},
        "annotations": {SOURCE_ANNOTATION: recipe.source,
                        SYNC_OPTIONS_ANNOTATION: SYNC_OPTIONS,
                        **pod_security.exception_annotations(
                            hp.get("security_exceptions") or {})},
        "config_data": _config_data(recipe),
        # The SDK's own job template puts the Kueue labels on the pods as well.
        "pod_labels": {RECIPE_LABEL: recipe.name, **scheduling},
        "replicas": place.replicas, "nproc_per_node": str(place.procs_per_node),
        "replica_spec": hc.REPLICA_SPEC, "container": hc.CONTAINER,
        "run_policy": _run_policy(recipe),
        "image": recipe.job["image_uri"], "command": hc.command(place.replicas),
        "agent_port": hc.AGENT_PORT, "env": _env(recipe, place),
        "resources": _resources(hp, place), "node_selector": node_selector,
        "affinity": _affinity(hp), "tolerations": hp["tolerations"],
        "service_account": hp.get("service_account") or "",
        **_pod_security(hp),
        "volumes": volumes, "volume_mounts": mounts,
        "termination_log": hc.TERMINATION_LOG, "grace_seconds": GRACE_SECONDS,
    }


# -- templates and names ------------------------------------------------------------------------

def _render(kind: str, recipe: Recipe, settings: Settings, ctx: dict) -> dict:
    return render_object(TEMPLATE_FILES[kind], kind, settings, ctx, source=recipe.source,
                         allowed=f"kind {kind} with metadata.name {{{{ name | json }}}}")[0]


def hash_input(bodies: list[dict]) -> list[dict]:
    """What the shared name's hash covers: every object whole (the name is a placeholder),
    except the annotations (source file, sync options), which change nothing that runs."""
    out = []
    for body in bodies:
        meta = {k: v for k, v in body.get("metadata", {}).items() if k != "annotations"}
        out.append({**body, "metadata": meta})
    return out


def _named(recipe: Recipe, kinds_bodies: list[tuple[str, dict]], limit: int,
           settings: Settings) -> list[Resource]:
    name = naming.job_name(recipe.name, {"backend": BACKEND, "objects": hash_input(
        [b for _, b in kinds_bodies])}, limit)
    out = []
    for kind, body in kinds_bodies:
        template = TEMPLATE_FILES[kind]
        shown = template_path(template, settings.templates_dir, settings.templates)[1]
        out.append(emit(kind, name, _replace(body, _NAME, name), source=recipe.source,
                        recipe=recipe.name, template=template, shown=shown, backend=BACKEND))
    return out


def _replace(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _replace(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, old, new) for v in node]
    return new if node == old else node
