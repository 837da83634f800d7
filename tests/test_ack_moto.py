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
    return sorted((REPO / "manifests").glob("*.yaml"))


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
