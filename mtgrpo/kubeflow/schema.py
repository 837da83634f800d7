"""The recipe schema for ``backend: kubeflow``: the ``kubeflow:`` section and the ``job:`` keys
that keep their meaning on Kubeflow Trainer (docs/kubeflow.md).

Shape only, as in :mod:`mtgrpo.recipes.schema`; rules between values live in
:mod:`mtgrpo.kubeflow.validate`. The backend (:mod:`mtgrpo.kubeflow.backend`) hands
:func:`check_job` and :func:`check_section` to the loader.

A SageMaker-only key (spot, KMS, network isolation, instance types, the execution role, ...)
is refused with what to use instead; it is never dropped silently. A base file shared with
SageMaker recipes can be used by setting such a key to ``null`` in the Kubeflow recipe.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from mtgrpo.recipes import schema
from mtgrpo.recipes.schema import Key

# Kubeflow Trainer minor versions the renderer targets. Both get the same output: the v2.3.0
# CRDs validate it, and it stays within 2.4's 20-character ReplicatedJob names.
TRAINER_VERSIONS = ("2.3", "2.4")

KUBEFLOW: dict[str, Key] = {
    "trainer_version": Key("str", "Kubeflow Trainer minor version targeted (its v1alpha1 "
                                  "fields moved between minors).", default="2.3",
                           choices=TRAINER_VERSIONS),
    "namespace": Key("str", "Namespace of the TrainJob, its runtime and ConfigMap (empty: "
                            "recipes/_project.yaml's namespace).", default=None),
    "num_nodes": Key("int", "Pods (nodes) of the TrainJob; vLLM runs on the first.",
                     default=1),
    "gpus_per_node": Key("int", "nvidia.com/gpu per pod (0: CPU only).", default=1),
    "vllm_gpus": Key("int", "GPUs of the first pod given to the vLLM server (empty: the "
                            "count trainer.vllm_gpus names, 1 when it is empty, 0 without "
                            "a managed vLLM server).", default=None),
    "cpu": Key("quantity", "CPU request per pod, e.g. \"32\" (empty: none).", default=None),
    "memory": Key("quantity", "Memory request and limit per pod, e.g. 180Gi (empty: none).",
                  default=None),
    "shm_size": Key("quantity", "Size of the memory-backed /dev/shm (NCCL, vLLM).",
                    default="16Gi"),
    "node_selector": Key("map_str", "Pod nodeSelector.", default={}),
    "tolerations": Key("tolerations", "Pod tolerations, Kubernetes spelling.", default=[]),
    "service_account": Key("str", "Service account of the pods: S3 access through IRSA or "
                                  "EKS Pod Identity (empty: the namespace's default).",
                           default=None),
    "priority_class": Key("str", "Pod priorityClassName.", default=None),
    "queue": Key("str", "Kueue LocalQueue (label kueue.x-k8s.io/queue-name).", default=None),
    "max_restarts": Key("int", "JobSet restarts after a pod failure; each restart resumes "
                               "from the newest complete S3 checkpoint.", default=2),
}

TOLERATION: dict[str, Key] = {
    "key": Key("str", "Taint key.", default=None),
    "operator": Key("str", "Equal or Exists.", default=None, choices=("Equal", "Exists")),
    "value": Key("str", "Taint value.", default=None),
    "effect": Key("str", "Taint effect.", default=None,
                  choices=("NoSchedule", "PreferNoSchedule", "NoExecute")),
    "tolerationSeconds": Key("int", "How long a NoExecute taint is tolerated.", default=None),
}

# job: keys that mean the same thing on both backends.
SHARED_JOB_KEYS = ("image_uri", "inputs", "output_path", "checkpoint_s3_uri", "environment",
                   "max_run", "tags", "region")
JOB: dict[str, Key] = {key: schema.JOB[key] for key in SHARED_JOB_KEYS}
JOB["region"] = Key("str", "AWS region of the S3 buckets (AWS_REGION in the pods; empty: "
                           "the SDK's own lookup).", default=None)
JOB["inputs"] = Key("kubeflow_inputs", schema.JOB["inputs"].help, required=True)
JOB["tags"] = Key("tags", "Labels on every rendered resource: a mapping or [{Key, Value}].",
                  default=[])
JOB["max_run"] = Key("int", "Maximum run time, seconds (TrainJob activeDeadlineSeconds).",
                     default=86400)

# SageMaker-only job keys -> what to use on Kubeflow instead.
SAGEMAKER_ONLY: dict[str, str] = {
    "role": "S3 access comes from kubeflow.service_account (IRSA or Pod Identity)",
    "instance_type": "kubeflow.node_selector, kubeflow.gpus_per_node, kubeflow.cpu, "
                     "kubeflow.memory",
    "instance_count": "kubeflow.num_nodes",
    "volume_size": "the node's disk; no per-job volume is rendered",
    "volume_kms_key": "the cluster's own volume encryption",
    "use_spot_instances": "kubeflow.max_restarts with S3 checkpoints (no managed spot)",
    "max_wait": "kubeflow.max_restarts (no managed spot)",
    "checkpoint_local_path": "the image keeps checkpoints in /opt/ml/checkpoints",
    "output_kms_key": "the bucket's default encryption",
    "subnets": "the cluster's network",
    "security_group_ids": "the cluster's network (security groups for pods)",
    "enable_network_isolation": "a NetworkPolicy of your own",
    "encrypt_inter_container_traffic": "the cluster's network encryption",
    "enable_sagemaker_metrics": "Katib collects metrics from the pod's log",
    "max_retry_attempts": "kubeflow.max_restarts",
    "keep_alive_period_in_seconds": "nothing: there are no warm pools",
    "disable_profiler": "nothing: there is no SageMaker profiler",
    "debugger_hook_config": "nothing: there is no SageMaker debugger",
    "input_mode": "nothing: channels are downloaded from S3 at start",
    "metric_definitions": "nothing: Katib reads the trainer's own name=value metric lines",
}
SAGEMAKER_ONLY_INPUT = ("distribution", "compression", "content_type", "record_wrapping",
                        "s3_data_type", "input_mode", "attribute_names")
INPUT: dict[str, Key] = {"s3_data": schema.INPUT["s3_data"]}

# A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity, without the
# scientific forms nobody writes by hand).
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def _refusal(key: str, instead: str) -> tuple[str, str]:
    return (f"{key} is a SageMaker-only setting, refused with backend kubeflow (set it to "
            f"null to drop a base file's value)"), instead


def check_job(checker: schema.Checker, value: Any, path: str = "job") -> dict:
    """The ``job:`` section of a Kubeflow recipe: SageMaker-only keys refused one by one, the
    shared keys checked and defaulted as for SageMaker."""
    if not isinstance(value, Mapping):
        return checker.section(value, JOB, path, "job keys")
    rest = {}
    for key, item in value.items():
        if key in SAGEMAKER_ONLY and item is not None:
            message, instead = _refusal(str(key), SAGEMAKER_ONLY[key])
            checker.problem(f"{path}.{key}", message, instead)
        elif key not in SAGEMAKER_ONLY:
            rest[key] = item
    return checker.section(rest, JOB, path, "job keys")


def check_section(checker: schema.Checker, value: Any, path: str = "kubeflow") -> dict:
    """The ``kubeflow:`` section (a missing one is all defaults)."""
    return checker.section({} if value is None else value, KUBEFLOW, path, "kubeflow keys")


# -- checkers for the kinds this section adds --------------------------------------------------

def _quantity(c: schema.Checker, v: Any, path: str, spec: Key) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if isinstance(v, str) and QUANTITY.match(v):
        return v
    shown = repr(v) if isinstance(v, str) else schema.type_name(v)
    c.problem(path, f"invalid quantity {shown}",
              "a Kubernetes quantity such as 16Gi, 512Mi, 32 or 500m")
    return schema.BAD


def _tolerations(c: schema.Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, list):
        c.problem(path, f"must be a list, got {schema.type_name(v)}",
                  "a list of {key, operator, value, effect, tolerationSeconds}")
        return schema.BAD
    out = []
    for i, item in enumerate(v):
        checked = c.section(item, TOLERATION, f"{path}[{i}]", "toleration fields")
        out.append({k: val for k, val in checked.items() if val is not None})
    return out


def _kubeflow_inputs(c: schema.Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, Mapping):
        c.problem(path, f"must be a mapping, got {schema.type_name(v)}",
                  "channel -> S3 URI")
        return schema.BAD
    out = {}
    for channel, item in v.items():
        sub = f"{path}.{channel}"
        if isinstance(item, str):
            item = {"s3_data": item}
        if isinstance(item, Mapping):
            item = dict(item)
            for key in SAGEMAKER_ONLY_INPUT:
                if item.pop(key, None) is not None:
                    c.problem(f"{sub}.{key}", f"{key} is a SageMaker-only channel option, "
                              "refused with backend kubeflow",
                              "s3_data only: the image downloads the whole prefix at start")
        out[str(channel)] = c.section(item, INPUT, sub, "channel options")
    return out


# The kinds above become usable in any section.
schema.register_checker("quantity", _quantity)
schema.register_checker("tolerations", _tolerations)
schema.register_checker("kubeflow_inputs", _kubeflow_inputs)
