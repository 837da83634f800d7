"""Hand-written ACK SageMaker resources with every field the renderer writes
(docs/ack-controller.md).

Used by the validate, ACK translation and moto tests so they do not depend on the renderer;
the same tests also run over the real rendered ``manifests/*.yaml`` when those exist.
"""

from __future__ import annotations

import copy

from mtgrpo.contract import metric_definitions

ROLE = "arn:aws:iam::111122223333:role/mtgrpo-sagemaker"
BUCKET = "s3://amzn-s3-demo-bucket"
IMAGE = ("111122223333.dkr.ecr.us-west-2.amazonaws.com/mtgrpo-trainer@sha256:"
         + "0" * 64)
API = "sagemaker.services.k8s.aws/v1alpha1"


def _metrics() -> list[dict[str, str]]:
    return [{"name": m["Name"], "regex": m["Regex"]} for m in metric_definitions()]


def _channels() -> list[dict]:
    return [{"channelName": name, "inputMode": "File", "compressionType": "None",
             "contentType": "application/jsonlines", "recordWrapperType": "None",
             "dataSource": {"s3DataSource": {"s3URI": f"{BUCKET}/data/{name}/",
                                             "s3DataType": "S3Prefix",
                                             "s3DataDistributionType": "FullyReplicated"}}}
            for name in ("corpus", "eval", "train")]


def _metadata(name: str) -> dict:
    return {"name": name.lower(), "namespace": "mtgrpo",
            "labels": {"app.kubernetes.io/managed-by": "mtgrpo", "mtgrpo/recipe": "sample"},
            "annotations": {"services.k8s.aws/region": "us-west-2",
                            "services.k8s.aws/deletion-policy": "retain",
                            "argocd.argoproj.io/sync-options": "Prune=false",
                            "mtgrpo/source": "recipes/sample.yaml"}}


def training_job(name: str = "sample-0123456789") -> dict:
    """A TrainingJob with spot, checkpoints, VPC, environment, retries, debugger and profiler."""
    return copy.deepcopy({
        "apiVersion": API, "kind": "TrainingJob", "metadata": _metadata(name),
        "spec": {
            "trainingJobName": name,
            "roleARN": ROLE,
            "algorithmSpecification": {"trainingImage": IMAGE, "trainingInputMode": "File",
                                       "enableSageMakerMetricsTimeSeries": True,
                                       "metricDefinitions": _metrics()},
            "hyperParameters": {"model_name_or_path": "Qwen/Qwen3-1.7B",
                                "learning_rate": "1e-06", "num_generations": "8",
                                "bf16": "true"},
            "inputDataConfig": _channels(),
            "outputDataConfig": {"s3OutputPath": f"{BUCKET}/output/", "kmsKeyID": "",
                                 "compressionType": "GZIP"},
            "resourceConfig": {"instanceType": "ml.p4d.24xlarge", "instanceCount": 2,
                               "volumeSizeInGB": 200,
                               "volumeKMSKeyID": "arn:aws:kms:us-west-2:111122223333:key/"
                                                 "1234abcd-12ab-34cd-56ef-1234567890ab"},
            "stoppingCondition": {"maxRuntimeInSeconds": 86400, "maxWaitTimeInSeconds": 172800},
            "enableManagedSpotTraining": True,
            "enableNetworkIsolation": False,
            "enableInterContainerTrafficEncryption": True,
            "checkpointConfig": {"s3URI": f"{BUCKET}/checkpoints/sample/",
                                 "localPath": "/opt/ml/checkpoints"},
            "vpcConfig": {"subnets": ["subnet-0123456789abcdef0"],
                          "securityGroupIDs": ["sg-0123456789abcdef0"]},
            "environment": {"NCCL_DEBUG": "WARN", "TOKENIZERS_PARALLELISM": "false"},
            "retryStrategy": {"maximumRetryAttempts": 2},
            "debugHookConfig": {"s3OutputPath": f"{BUCKET}/debug/", "localPath": "/opt/ml/debug",
                                "hookParameters": {"save_interval": "100"}},
            "profilerConfig": {"s3OutputPath": f"{BUCKET}/output/",
                               "profilingIntervalInMilliseconds": 500},
            "tags": [{"key": "project", "value": "mtgrpo"}, {"key": "team", "value": "ml"}],
        },
    })


def tuning_job(name: str = "sample-tune-0123456") -> dict:
    """A HyperParameterTuningJob: log-scaled continuous, integer and categorical ranges."""
    return copy.deepcopy({
        "apiVersion": API, "kind": "HyperParameterTuningJob", "metadata": _metadata(name),
        "spec": {
            "hyperParameterTuningJobName": name,
            "hyperParameterTuningJobConfig": {
                "strategy": "Bayesian",
                "hyperParameterTuningJobObjective": {"metricName": "eval_reward",
                                                     "type_": "Maximize"},
                "resourceLimits": {"maxNumberOfTrainingJobs": 10, "maxParallelTrainingJobs": 2},
                "parameterRanges": {
                    "continuousParameterRanges": [{"name": "learning_rate", "minValue": "1e-07",
                                                   "maxValue": "1e-05",
                                                   "scalingType": "Logarithmic"}],
                    "integerParameterRanges": [{"name": "per_device_train_batch_size",
                                                "minValue": "1", "maxValue": "4",
                                                "scalingType": "Auto"}],
                    "categoricalParameterRanges": [{"name": "algorithm",
                                                    "values": ["mt_grpo", "grpo_or"]}],
                },
                "trainingJobEarlyStoppingType": "Off",
            },
            "trainingJobDefinition": {
                "roleARN": ROLE,
                "algorithmSpecification": {"trainingImage": IMAGE, "trainingInputMode": "File",
                                           "metricDefinitions": _metrics()},
                "staticHyperParameters": {"model_name_or_path": "Qwen/Qwen2.5-1.5B-Instruct",
                                          "num_generations": "8"},
                "inputDataConfig": _channels(),
                "outputDataConfig": {"s3OutputPath": f"{BUCKET}/output/", "kmsKeyID": "",
                                     "compressionType": "GZIP"},
                "resourceConfig": {"instanceType": "ml.g5.2xlarge", "instanceCount": 1,
                                   "volumeSizeInGB": 100},
                "stoppingCondition": {"maxRuntimeInSeconds": 36000},
                "enableManagedSpotTraining": False,
                "enableNetworkIsolation": False,
                "enableInterContainerTrafficEncryption": False,
                "checkpointConfig": {"s3URI": f"{BUCKET}/checkpoints/tune/",
                                     "localPath": "/opt/ml/checkpoints"},
                "retryStrategy": {"maximumRetryAttempts": 1},
            },
            "tags": [{"key": "project", "value": "mtgrpo"}],
        },
    })


def value_paths(node, prefix=()):
    """Every key path in a nested dict/list (for tests that break one value at a time)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from value_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield prefix + (i,)
            yield from value_paths(value, prefix + (i,))
