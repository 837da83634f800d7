"""The recipe schema for ``backend: hyperpod``: the ``hyperpod:`` section and the ``job:`` keys
that keep their meaning on a HyperPod cluster (docs/hyperpod.md).

Shape only, as in :mod:`mtgrpo.recipes.schema`; rules between values (the instance's GPUs and
EFA interfaces, FSx paths, names) live in :mod:`mtgrpo.hyperpod.validate`.

HyperPod nodes are SageMaker instances, so ``job.instance_type`` and ``job.instance_count``
keep their SageMaker meaning (the node type the pods are pinned to, and how many nodes the job
takes); so do the S3 channels, ``output_path``, ``checkpoint_s3_uri``, ``max_run``, tags and
the region. A SageMaker-only key (spot, KMS, VPC, isolation, the execution role, ...) is refused
with what to use instead, never dropped silently; a base file shared with SageMaker recipes is
used by setting such a key to ``null``.
"""

from __future__ import annotations

from typing import Any, Mapping

# Registers the Kubernetes value kinds both cluster backends use (quantity, tolerations).
from mtgrpo.kubeflow import schema as _kubernetes_kinds  # noqa: F401
from mtgrpo.recipes import schema
from mtgrpo.recipes.schema import Key

BACKEND = "hyperpod"

HYPERPOD: dict[str, Key] = {
    "gpus_per_node": Key("int", "nvidia.com/gpu per pod (empty: every GPU of "
                                "job.instance_type).", default=None),
    "efa": Key("int", "vpc.amazonaws.com/efa interfaces per pod (empty: every interface of "
                      "job.instance_type; 0: none).", default=None),
    "cpu": Key("quantity", "CPU request per pod (empty: what the instance leaves allocatable, "
                           "by the HyperPod SDK's reservation rule).", default=None),
    "memory": Key("quantity", "Memory request and limit per pod (empty: what the instance "
                              "leaves allocatable, by the HyperPod SDK's rule).", default=None),
    "shm_size": Key("quantity", "Size of the memory-backed /dev/shm (NCCL, vLLM).",
                    default="64Gi"),
    "scratch_size": Key("quantity", "Size limit of the writable /opt/ml, /tmp and home "
                                    "emptyDirs together (the root filesystem is read-only).",
                        default="200Gi"),
    "node_selector": Key("map_str", "More node labels the pods require (the instance type's "
                                    "label is always set).", default={}),
    "tolerations": Key("tolerations", "Pod tolerations, Kubernetes spelling.", default=[]),
    "deep_health_check_passed_only": Key("bool", "Only nodes whose deep health check passed "
                                                 "(sagemaker.amazonaws.com/deep-health-check-"
                                                 "status=Passed); needs deep health checks "
                                                 "enabled on the instance group.",
                                         default=False),
    "service_account": Key("str", "Service account of the pods: S3 access through EKS Pod "
                                  "Identity or IRSA (empty: the namespace's default).",
                           default=None),
    "queue": Key("str", "Kueue LocalQueue of the project's namespace (label "
                        "kueue.x-k8s.io/queue-name; HyperPod task governance: the namespace is "
                        "hyperpod-ns-<team> and this hyperpod-ns-<team>-localqueue).",
                 default=None),
    "priority": Key("str", "Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class, "
                           "e.g. training-priority).", default=None),
    "max_retries": Key("int", "Auto-resume: the operator restarts the job up to this many "
                              "times (runPolicy.jobMaxRetryCount); each restart resumes from "
                              "the newest complete checkpoint.", default=3),
    "hang_timeout": Key("int", "Hang detection: seconds without a new metric line after which "
                               "the operator restarts the job (empty: off).", default=None),
    "start_timeout": Key("int", "Seconds to the first metric line (model download, vLLM start, "
                                "first step) before the job counts as hanging (with "
                                "hang_timeout).", default=3600),
    "fsx": Key("fsx", "An FSx for Lustre (or any) PersistentVolumeClaim mounted in every pod: "
                      "{claim_name, mount_path (default /fsx), read_only (default false)}.",
               default=None),
    "security_exceptions": Key("map_str", "Pod setting -> reason, for each locked-down pod "
                                          "default loosened (docs/security.md); rendered as "
                                          "an annotation.", default={}),
    "checkpoint_dir": Key("str", "Checkpoints in a directory under the fsx mount instead of "
                                 "job.checkpoint_s3_uri (one subdirectory per job).",
                          default=None),
}

FSX: dict[str, Key] = {
    "claim_name": Key("str", "The PersistentVolumeClaim (e.g. fsx-claim).", required=True),
    "mount_path": Key("str", "Where the pods mount it.", default="/fsx"),
    "read_only": Key("bool", "Mount read-only (then checkpoint_dir cannot be on it).",
                     default=False),
}

# job: keys that mean the same thing as on SageMaker.
SHARED_JOB_KEYS = ("image_uri", "instance_type", "instance_count", "inputs", "output_path",
                   "checkpoint_s3_uri", "environment", "max_run", "tags", "region")
JOB: dict[str, Key] = {key: schema.JOB[key] for key in SHARED_JOB_KEYS}
JOB["instance_type"] = Key("str", "The HyperPod instance group's type, e.g. ml.p5.48xlarge "
                                  "(the pods' node selector).", required=True)
JOB["instance_count"] = Key("int", "Nodes (pods) of the job; vLLM runs on the first.",
                            default=1)
JOB["region"] = Key("str", "AWS region of the S3 buckets (AWS_REGION in the pods; empty: the "
                           "SDK's own lookup).", default=None)
JOB["inputs"] = Key("hyperpod_inputs", "Input channels: channel -> an S3 URI, or a directory "
                                       "under the fsx mount.", required=True)
JOB["tags"] = Key("tags", "Labels on every rendered resource: a mapping or [{Key, Value}].",
                  default=[])
JOB["max_run"] = Key("int", "Maximum run time, seconds (runPolicy.activeDeadlineSeconds).",
                     default=86400)

# SageMaker-only job keys -> what to use on HyperPod instead.
SAGEMAKER_ONLY: dict[str, str] = {
    "role": "S3 access comes from hyperpod.service_account (Pod Identity or IRSA)",
    "volume_size": "the node's disk and hyperpod.scratch_size",
    "volume_kms_key": "the cluster's own volume encryption",
    "use_spot_instances": "hyperpod.max_retries with checkpoints (no managed spot)",
    "max_wait": "hyperpod.max_retries (no managed spot)",
    "checkpoint_local_path": "the image keeps checkpoints in /opt/ml/checkpoints, or "
                             "hyperpod.checkpoint_dir on FSx",
    "output_kms_key": "the bucket's default encryption",
    "subnets": "the cluster's network",
    "security_group_ids": "the cluster's network (security groups for pods)",
    "enable_network_isolation": "a NetworkPolicy of your own",
    "encrypt_inter_container_traffic": "the cluster's network encryption",
    "enable_sagemaker_metrics": "the trainer's metric lines in the pod log",
    "max_retry_attempts": "hyperpod.max_retries",
    "keep_alive_period_in_seconds": "nothing: the cluster's nodes stay up",
    "disable_profiler": "nothing: there is no SageMaker profiler",
    "debugger_hook_config": "nothing: there is no SageMaker debugger",
    "input_mode": "nothing: S3 channels are downloaded at start",
    "metric_definitions": "hyperpod.hang_timeout reads the trainer's own metric lines",
}
SAGEMAKER_ONLY_INPUT = ("distribution", "compression", "content_type", "record_wrapping",
                        "s3_data_type", "input_mode", "attribute_names")
INPUT: dict[str, Key] = {"s3_data": Key("str", "S3 URI, or an absolute path under the fsx "
                                               "mount.", required=True)}


def check_job(checker: schema.Checker, value: Any, path: str = "job") -> dict:
    """The ``job:`` section of a HyperPod recipe: SageMaker-only keys refused one by one, the
    shared keys checked and defaulted as for SageMaker."""
    if not isinstance(value, Mapping):
        return checker.section(value, JOB, path, "job keys")
    rest = {}
    for key, item in value.items():
        if key in SAGEMAKER_ONLY and item is not None:
            checker.problem(f"{path}.{key}", f"{key} is a SageMaker-only setting, refused with "
                            "backend hyperpod (set it to null to drop a base file's value)",
                            SAGEMAKER_ONLY[key])
        elif key not in SAGEMAKER_ONLY:
            rest[key] = item
    return checker.section(rest, JOB, path, "job keys")


def check_section(checker: schema.Checker, value: Any, path: str = "hyperpod") -> dict:
    """The ``hyperpod:`` section (a missing one is all defaults)."""
    if isinstance(value, Mapping) and "namespace" in value:
        # Every backend renders into the project's namespace (docs/security.md).
        checker.problem(f"{path}.namespace", "the namespace is the project's, not a recipe's",
                        "recipes/_project.yaml namespace (with task governance, the team's "
                        "hyperpod-ns-<team>: docs/hyperpod.md)")
        value = {k: v for k, v in value.items() if k != "namespace"}
    return checker.section({} if value is None else value, HYPERPOD, path, "hyperpod keys")


# -- checkers for the kinds this section adds --------------------------------------------------

def _fsx(c: schema.Checker, v: Any, path: str, spec: Key) -> Any:
    return c.section(v, FSX, path, "fsx keys")


def _hyperpod_inputs(c: schema.Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, Mapping):
        c.problem(path, f"must be a mapping, got {schema.type_name(v)}",
                  "channel -> S3 URI or fsx path")
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
                              "refused with backend hyperpod",
                              "s3_data only: the image downloads the whole prefix at start")
        out[str(channel)] = c.section(item, INPUT, sub, "channel options")
    return out


schema.register_checker("fsx", _fsx)
schema.register_checker("hyperpod_inputs", _hyperpod_inputs)
