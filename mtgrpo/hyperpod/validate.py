"""Checks of ``backend: hyperpod`` recipes and of what they render.

:func:`check_recipe`: rules between values the schema cannot see (FSx paths and checkpoints,
Kubernetes names, the placement). :func:`check_resources`: every rendered
``HyperPodPyTorchJob`` against the HyperPod SDK's own models (as the JSON schema generated from
them, vendor/SOURCE.md), the project's namespace and the locked-down pod (the rule of every
cluster backend, :func:`mtgrpo.validate.pod_security.check_cluster_resources`), and what the
recipe asked for (replicas, GPUs, EFA, the node selector, the Kueue labels) read back from the
rendered object. One line per problem, naming the file and the key.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from mtgrpo.errors import Problem
from mtgrpo.hyperpod import contract as hc
from mtgrpo.hyperpod import render
from mtgrpo.recipes import Recipe
from mtgrpo.validate import pod_security

SCHEMA_FILE = Path(__file__).parent / "vendor" / "hyperpodpytorchjob.schema.json"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A label value: <= 63 of alphanumerics, '-', '_', '.', starting and ending alphanumeric.
# HyperPod task governance's LocalQueue of a team's namespace: hyperpod-ns-<team>-localqueue.
TEAM_QUEUE = re.compile(r"^(hyperpod-ns-[a-z0-9-]+)-localqueue$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


@functools.lru_cache(maxsize=1)
def job_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def schema_problems(body: dict, where: str) -> list[Problem]:
    """The rendered object against the SDK's models (every error, by its path)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(job_schema())
    out = set()
    for err in validator.iter_errors(body):
        for leaf in _leaves(err):
            path = ".".join(str(p) for p in leaf.absolute_path) or "(object)"
            out.add(Problem(where, path, f"refused by the HyperPod SDK's {hc.KIND} model: "
                            f"{_short(leaf)}", "what the HyperPod training operator accepts "
                            "(mtgrpo/hyperpod/vendor/SOURCE.md)"))
    return sorted(out, key=lambda p: (p.key, p.message))


def _leaves(err) -> list:
    """The errors that say what is wrong: an ``Optional[...]`` field is ``anyOf [X, null]``,
    whose own message ("not valid under any of the given schemas") names nothing, so descend
    into the branch that is not ``null``."""
    if not err.context:
        return [err]
    branches = [e for e in err.context
                if not (e.validator == "type" and e.validator_value == "null")]
    out = []
    for sub in branches or [err]:
        out += _leaves(sub) if sub is not err else [err]
    return out


def _short(err) -> str:
    text = err.message
    return text if len(text) <= 160 else text[:157] + "..."


def check_recipe(recipe: Recipe) -> list[Problem]:
    """Rules of a complete ``backend: hyperpod`` recipe."""
    hp = render.section(recipe)
    job = recipe.job
    problems: list[Problem] = []

    def problem(key: str, message: str, allowed: str) -> None:
        problems.append(Problem(recipe.where(key), key, message, allowed))

    if recipe.tuning is not None:
        problem("tuning", "hyperparameter tuning is not rendered for backend hyperpod",
                "backend sagemaker or kubeflow for tuning, then a hyperpod recipe with the "
                "chosen values")
    for key in ("queue", "priority"):
        if hp.get(key) and not DNS_LABEL.match(hp[key]):
            problem(f"hyperpod.{key}", f"invalid name {hp[key]!r}",
                    "a Kubernetes object name: lower-case letters, digits and '-'")
    if hp.get("service_account") and not DNS_LABEL.match(hp["service_account"]):
        problem("hyperpod.service_account", f"invalid name {hp['service_account']!r}",
                "a Kubernetes object name")
    for key, value in sorted(hp["node_selector"].items()):
        if not LABEL_VALUE.match(value):
            problem(f"hyperpod.node_selector.{key}", f"invalid label value {value!r}",
                    "at most 63 letters, digits, '-', '_' or '.'")
    if render.INSTANCE_TYPE_LABEL in hp["node_selector"]:
        problem(f"hyperpod.node_selector.{render.INSTANCE_TYPE_LABEL}",
                "the instance type label comes from job.instance_type",
                "job.instance_type, and no such key here")
    for key in ("max_retries", "start_timeout"):
        if hp[key] < 0:
            problem(f"hyperpod.{key}", f"{hp[key]} is negative", "0 or more")
    if hp.get("hang_timeout") is not None and hp["hang_timeout"] < 1:
        problem("hyperpod.hang_timeout", f"{hp['hang_timeout']} seconds", "at least 1, or unset")
    if job["max_run"] < 1:
        problem("job.max_run", f"{job['max_run']} seconds", "at least 1")
    fsx = hp.get("fsx")
    mount = PurePosixPath(fsx["mount_path"]) if fsx else None
    if fsx is not None and mount is not None:
        if not mount.is_absolute() or ".." in mount.parts or mount == PurePosixPath("/") or \
                any(_under(mount, PurePosixPath(p)) or _under(PurePosixPath(p), mount)
                    for p in (hc.CONFIG_DIR, hc.SHM_DIR, *pod_security.SCRATCH.values())):
            problem("hyperpod.fsx.mount_path", f"{fsx['mount_path']!r} is not a free absolute "
                    "path", "an absolute path such as /fsx, apart from /opt/ml, /etc/mtgrpo, "
                    "/tmp, /dev/shm and the home directory")
        if not DNS_LABEL.match(fsx["claim_name"]):
            problem("hyperpod.fsx.claim_name", f"invalid name {fsx['claim_name']!r}",
                    "a PersistentVolumeClaim name")
    checkpoint_dir = hp.get("checkpoint_dir")
    if checkpoint_dir:
        path = PurePosixPath(checkpoint_dir)
        if fsx is None or mount is None or not _under(path, mount) or path == mount or \
                ".." in path.parts:
            problem("hyperpod.checkpoint_dir", f"{checkpoint_dir!r} is not a directory under "
                    "the fsx mount", "a path under hyperpod.fsx.mount_path (with hyperpod.fsx)")
        elif fsx["read_only"]:
            problem("hyperpod.checkpoint_dir", "checkpoints on a read-only mount",
                    "hyperpod.fsx.read_only false")
        if job.get("checkpoint_s3_uri"):
            problem("hyperpod.checkpoint_dir", "both checkpoint_dir and job.checkpoint_s3_uri",
                    "one checkpoint location (set the other to null)")
    elif not job.get("checkpoint_s3_uri") and hp["max_retries"] > 0:
        problem("hyperpod.max_retries", f"{hp['max_retries']} restarts with nowhere to resume "
                "from", "job.checkpoint_s3_uri or hyperpod.checkpoint_dir, or max_retries 0")
    for channel, spec in sorted(job["inputs"].items()):
        uri = spec["s3_data"]
        if uri.startswith("s3://"):
            continue
        path = PurePosixPath(uri)
        if mount is None or not path.is_absolute() or not _under(path, mount) or \
                ".." in path.parts:
            problem(f"job.inputs.{channel}", f"{uri!r} is neither an S3 URI nor a path under "
                    "the fsx mount", "s3://bucket/prefix, or a directory under "
                    "hyperpod.fsx.mount_path")
    if not problems:
        _, found = render.layout(recipe)
        problems += found
    return problems


def _under(path: PurePosixPath, root: PurePosixPath) -> bool:
    return path == root or root in path.parents


def check_resources(resources: list, recipe: Recipe, *, namespace: str) -> list[Problem]:
    """The rendered objects of one recipe: every object in the project's ``namespace`` with its
    pod locked down (the shared rule), the job against the SDK's models, and the placement and
    labels against what the recipe asked."""
    problems = pod_security.check_cluster_resources(
        [r.body for r in resources], source=recipe.source, section=render.BACKEND,
        namespace=namespace, reasons=render.section(recipe).get("security_exceptions"))
    for resource in resources:
        if resource.kind != hc.KIND:
            continue
        where = f"manifests/{resource.filename}"
        problems += schema_problems(resource.body, where)
        problems += _asked(resource.body, recipe, where)
    return problems + _team_queue(recipe, namespace)


def _team_queue(recipe: Recipe, namespace: str) -> list[Problem]:
    """A LocalQueue is namespaced: task governance's ``hyperpod-ns-<team>-localqueue`` admits
    only jobs of ``hyperpod-ns-<team>``, so naming it from another namespace leaves the job
    pending for ever."""
    queue = render.section(recipe).get("queue") or ""
    team = TEAM_QUEUE.match(queue)
    if team is None or team.group(1) == namespace:
        return []
    return [Problem(recipe.where("hyperpod.queue"), "hyperpod.queue", f"{queue} is the "
                    f"LocalQueue of namespace {team.group(1)}, but the job renders into "
                    f"{namespace}", f"a LocalQueue of {namespace}, or recipes/_project.yaml "
                    f"namespace {team.group(1)} (docs/hyperpod.md, task governance)")]


def _asked(body: dict, recipe: Recipe, where: str) -> list[Problem]:
    """What the recipe asked for, read back from the rendered job (a template edit that drops
    one is caught here, not on the cluster)."""
    place, found = render.layout(recipe)
    if place is None:
        return found
    hp = render.section(recipe)
    spec = body.get("spec") or {}
    replica = (spec.get("replicaSpecs") or [{}])[0]
    pod = (replica.get("template") or {}).get("spec") or {}
    container = (pod.get("containers") or [{}])[0]
    requests = (container.get("resources") or {}).get("requests") or {}
    labels = (body.get("metadata") or {}).get("labels") or {}
    want: list[tuple[str, Any, Any]] = [
        ("spec.replicaSpecs[0].replicas", replica.get("replicas"), place.replicas),
        ("spec.nprocPerNode", spec.get("nprocPerNode"), str(place.procs_per_node)),
        (f"spec.replicaSpecs[0].template.spec.nodeSelector.{render.INSTANCE_TYPE_LABEL}",
         (pod.get("nodeSelector") or {}).get(render.INSTANCE_TYPE_LABEL), place.node.name),
        (f"...containers[0].resources.requests.{render.GPU_RESOURCE}",
         requests.get(render.GPU_RESOURCE), str(place.gpus) if place.gpus else None),
        (f"...containers[0].resources.requests.{render.EFA_RESOURCE}",
         requests.get(render.EFA_RESOURCE), str(place.efa) if place.efa else None),
        (f"metadata.labels.{render.QUEUE_LABEL}", labels.get(render.QUEUE_LABEL),
         hp.get("queue")),
        (f"metadata.labels.{render.PRIORITY_LABEL}", labels.get(render.PRIORITY_LABEL),
         hp.get("priority")),
        ("spec.runPolicy.jobMaxRetryCount",
         (spec.get("runPolicy") or {}).get("jobMaxRetryCount"), hp["max_retries"]),
    ]
    return [Problem(where, key, f"rendered {got!r} but the recipe asks for {expected!r}",
                    "templates/hyperpod/ as shipped (docs/hyperpod.md)")
            for key, got, expected in want if got != expected]
