"""What ACK would send: each resource translated into its Create* request, submitted to moto's
SageMaker, described back and compared field by field."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from ack_samples import training_job, tuning_job
from mtgrpo.ack import TranslationError, to_request
from mtgrpo.validate import check_resources

REPO = Path(__file__).resolve().parent.parent
SOURCE = "recipes/sample.yaml"
# moto replaces AlgorithmSpecification.MetricDefinitions with a canned one and does not keep
# Environment, ProfilerConfig or RetryStrategy; everything else it keeps is compared.
MOTO_REWRITES = {("AlgorithmSpecification", "MetricDefinitions")}


def manifests() -> list[Path]:
    """The ACK SageMaker manifests (the Kubeflow backend's objects are not SageMaker requests)."""
    return sorted(p for p in (REPO / "manifests").glob("*/*-*.yaml")
                  if p.name.endswith(("-trainingjob.yaml", "-hyperparametertuningjob.yaml")))


def resources() -> list[tuple[str, dict]]:
    found = [("hand-written TrainingJob", training_job()),
             ("hand-written HyperParameterTuningJob", tuning_job())]
    found += [(p.name, yaml.safe_load(p.read_text())) for p in manifests()]
    return found


@pytest.fixture
def sagemaker():
    with mock_aws():
        yield boto3.client("sagemaker", region_name="us-west-2")


def compare(request: dict, described: dict, prefix: tuple = ()) -> list[str]:
    """Paths of request members that moto keeps; fails on any difference."""
    compared = []
    for key, value in request.items():
        path = prefix + (key,)
        if path in MOTO_REWRITES or key not in described:
            continue
        if isinstance(value, dict) and isinstance(described[key], dict):
            compared += compare(value, described[key], path)
        else:
            assert described[key] == value, f"{'.'.join(path)}: sent {value!r}, " \
                                            f"moto describes {described[key]!r}"
            compared.append(".".join(path))
    return compared


@pytest.mark.parametrize("name,resource", resources(), ids=[n for n, _ in resources()])
def test_round_trip_through_moto(name, resource, sagemaker, crd_dir):
    assert check_resources([resource], source=name, crd_dir=crd_dir) == []
    operation, request = to_request(resource)
    if operation == "CreateTrainingJob":
        arn = sagemaker.create_training_job(**request)["TrainingJobArn"]
        described = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
        must = {"TrainingJobName", "RoleArn", "HyperParameters", "InputDataConfig",
                "OutputDataConfig.S3OutputPath", "ResourceConfig.InstanceType",
                "ResourceConfig.InstanceCount", "ResourceConfig.VolumeSizeInGB",
                "StoppingCondition.MaxRuntimeInSeconds", "AlgorithmSpecification.TrainingImage",
                "EnableManagedSpotTraining", "EnableNetworkIsolation"}
    else:
        arn = sagemaker.create_hyper_parameter_tuning_job(**request)[
            "HyperParameterTuningJobArn"]
        described = sagemaker.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=request["HyperParameterTuningJobName"])
        must = {"HyperParameterTuningJobName", "HyperParameterTuningJobConfig.Strategy",
                "HyperParameterTuningJobConfig.HyperParameterTuningJobObjective.Type",
                "HyperParameterTuningJobConfig.ParameterRanges.ContinuousParameterRanges",
                "HyperParameterTuningJobConfig.ResourceLimits.MaxNumberOfTrainingJobs",
                "TrainingJobDefinition.StaticHyperParameters",
                "TrainingJobDefinition.AlgorithmSpecification.MetricDefinitions",
                "TrainingJobDefinition.InputDataConfig", "TrainingJobDefinition.RoleArn"}
    compared = compare(request, described)
    missed = {m for m in must if not any(c == m or c.startswith(m + ".") for c in compared)}
    assert not missed, f"moto kept none of {missed}"
    if "Tags" in request:
        assert sagemaker.list_tags(ResourceArn=arn)["Tags"] == request["Tags"]


def test_translation_names_and_shapes():
    operation, request = to_request(tuning_job())
    assert operation == "CreateHyperParameterTuningJob"
    objective = request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    assert objective == {"MetricName": "eval_reward", "Type": "Maximize"}  # type_ -> Type
    definition = request["TrainingJobDefinition"]
    assert definition["RoleArn"].startswith("arn:aws:iam::")  # roleARN -> RoleArn
    channel = definition["InputDataConfig"][0]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"].startswith("s3://")  # s3URI
    assert definition["StaticHyperParameters"]["num_generations"] == "8"  # map keys verbatim
    _, request = to_request(training_job())
    assert request["ResourceConfig"]["VolumeKmsKeyId"].startswith("arn:aws:kms:")
    assert request["VpcConfig"]["SecurityGroupIds"] == ["sg-0123456789abcdef0"]
    assert request["Tags"][0] == {"Key": "project", "Value": "mtgrpo"}


def test_translation_refuses_what_the_api_lacks():
    job = training_job()
    job["spec"]["resourceConfig"]["gpuCount"] = 8
    with pytest.raises(TranslationError) as err:
        to_request(job)
    assert err.value.path == "spec.resourceConfig.gpuCount"
    job = training_job()
    job["spec"]["hyperParameters"]["seed"] = 42
    with pytest.raises(TranslationError) as err:
        to_request(job)
    assert err.value.path == "spec.hyperParameters.seed"
    with pytest.raises(TranslationError):
        to_request({"apiVersion": "v1", "kind": "ConfigMap", "spec": {}})


@pytest.mark.parametrize("path,value,key", [
    (("resourceConfig", "instanceType"), "ml.p5.96xlarg", "spec.resourceConfig.instanceType"),
    (("trainingJobName",), "n" * 64, "spec.trainingJobName"),
    (("inputDataConfig", 2, "channelName"), "train data", "spec.inputDataConfig[2].channelName"),
])
def test_moto_accepts_what_check_resources_refuses(path, value, key, sagemaker, crd_dir):
    """moto, like the CRD, takes these; SageMaker would not. check_resources names the field."""
    job = training_job()
    node = job["spec"]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    _, request = to_request(job)
    sagemaker.create_training_job(**request)  # accepted: moto checks none of it
    problems = check_resources([job], source=SOURCE, crd_dir=crd_dir)
    assert key in {p.key for p in problems}, [str(p) for p in problems]


@pytest.mark.parametrize("kind", ["TrainingJob", "HyperParameterTuningJob"])
def test_every_crd_field_maps_to_an_api_member(kind, crd_dir):
    """Names equal ignoring case (type_ ~ Type) hold for every field of the CRD's spec."""
    from mtgrpo.ack import OPERATIONS, input_node, member_for, node

    crd = yaml.safe_load((crd_dir / f"sagemaker.services.k8s.aws_{kind.lower()}s.yaml")
                         .read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    mapped = []

    def walk(schema, shape, path):
        if "properties" in schema:
            assert shape.kind == "structure", path
            for name, sub in schema["properties"].items():
                member = member_for(shape, name)
                assert member is not None, f"{path}.{name} has no API member in {shape.name}"
                mapped.append(f"{path}.{name}")
                walk(sub, node(shape.members[member]), f"{path}.{name}")
        elif schema.get("type") == "array":
            assert shape.kind == "list", path
            walk(schema["items"], node(shape.member), f"{path}[]")
        elif isinstance(schema.get("additionalProperties"), dict):
            assert shape.kind == "map", path
            walk(schema["additionalProperties"], node(shape.value), f"{path}.*")

    walk(spec_schema, input_node(OPERATIONS[kind]), "spec")
    assert len(mapped) > 80


KITCHEN_SINK = """\
name: kitchen-sink
trainer:
  model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct
  learning_rate: 2.0e-6
job:
  region: us-west-2
  role: arn:aws:iam::111122223333:role/mtgrpo-sagemaker-execution
  image_uri: 111122223333.dkr.ecr.us-west-2.amazonaws.com/mtgrpo@sha256:%(digest)s
  output_path: s3://amzn-s3-demo-bucket/mtgrpo/output
  output_kms_key: arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
  volume_kms_key: arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
  instance_type: ml.g5.12xlarge
  instance_count: 2
  volume_size: 100
  max_run: 7200
  max_retry_attempts: 3
  subnets: [subnet-0123456789abcdef0, subnet-0123456789abcdef1]
  security_group_ids: [sg-0123456789abcdef0]
  enable_network_isolation: true
  encrypt_inter_container_traffic: true
  enable_sagemaker_metrics: true
  enable_infra_check: true
  enable_remote_debug: true
  security_exceptions:
    enable_remote_debug: "shell access to inspect a stuck collective, removed after the run"
  disable_output_compression: true
  tensorboard_output_path: s3://amzn-s3-demo-bucket/mtgrpo/tensorboard
  disable_profiler: false
  debugger_hook_config:
    s3_output_path: s3://amzn-s3-demo-bucket/mtgrpo/debug
    hook_parameters: {save_interval: "100"}
  tags: {project: mtgrpo, team: ml}
  metric_definitions:
    - {Name: custom_metric, Regex: "custom=([0-9.]+)"}
  input_mode: FastFile
  inputs:
    train: {s3_data: s3://amzn-s3-demo-bucket/data/train, distribution: ShardedByS3Key,
            compression: Gzip, content_type: application/jsonlines, input_mode: File}
    corpus: s3://amzn-s3-demo-bucket/data/corpus
    eval: {s3_data: s3://amzn-s3-demo-bucket/data/eval.manifest, s3_data_type: ManifestFile}
""" % {"digest": "0" * 64}

EXTRA = {
    "training": "  keep_alive_period_in_seconds: 600\n  environment: {NCCL_DEBUG: WARN}\n",
    "spot": ("  use_spot_instances: true\n  max_wait: 14400\n"
             "  checkpoint_s3_uri: s3://amzn-s3-demo-bucket/mtgrpo/checkpoints/ks\n"),
    "tuning": """\
tuning:
  objective_metric_name: custom_metric
  objective_type: Minimize
  strategy: Random
  max_jobs: 4
  max_parallel_jobs: 2
  render_training_job: true
  completion_criteria: {target_objective_metric_value: 0.9}
  warm_start: {warm_start_type: IdenticalDataAndAlgorithm, parents: [kitchen-sink-earlier]}
  hyperparameter_ranges:
    temperature: {type: continuous, min_value: 0.5, max_value: 1.0, scaling_type: Linear}
    num_generations: {type: integer, min_value: 4, max_value: 16}
    algorithm: {type: categorical, values: [mt_grpo, grpo_mr]}
""",
}


@pytest.mark.parametrize("variant", sorted(EXTRA))
def test_every_job_key_renders_validates_and_round_trips(variant, tmp_path, sagemaker, crd_dir):
    """A recipe setting every job key, rendered by the real templates (not hand-written)."""
    from mtgrpo.recipes import load_recipe
    from mtgrpo.render import build_resources, load_settings
    from mtgrpo.validate import check_recipe

    (tmp_path / "recipes").mkdir()
    path = tmp_path / "recipes" / "kitchen-sink.yaml"
    path.write_text(KITCHEN_SINK + EXTRA[variant])
    recipe = load_recipe(path, root=tmp_path)
    assert check_recipe(recipe.data, source=recipe.source) == []
    built = build_resources(recipe, load_settings(REPO))
    assert len(built) == (2 if variant == "tuning" else 1)
    for resource in built:
        assert check_resources([resource.body], source=recipe.source, crd_dir=crd_dir) == []
        operation, request = to_request(resource.body)
        if operation == "CreateTrainingJob":
            sagemaker.create_training_job(**request)
            described = sagemaker.describe_training_job(
                TrainingJobName=request["TrainingJobName"])
            assert described["VpcConfig"] == request["VpcConfig"]
            assert described["DebugHookConfig"] == request["DebugHookConfig"]
        else:
            sagemaker.create_hyper_parameter_tuning_job(**request)
            described = sagemaker.describe_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=request["HyperParameterTuningJobName"])
            assert described["TrainingJobDefinition"]["StaticHyperParameters"] == \
                request["TrainingJobDefinition"]["StaticHyperParameters"]
        assert compare(request, described)
