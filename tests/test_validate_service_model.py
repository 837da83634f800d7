"""The Create* request ACK would send, checked against botocore's SageMaker service model.

botocore's own client validation skips maximum lengths, patterns, enums and maximums; these
tests prove each of them is caught, with the resource's own field path.
"""

from __future__ import annotations

import botocore.session
import pytest

from ack_samples import training_job, tuning_job
from mtgrpo.ack import to_request
from mtgrpo.validate import check_resources
from mtgrpo.validate.java_regex import compile_java, matches, translate
from mtgrpo.validate.service_model import check_request

SOURCE = "recipes/sample.yaml"


def problems_of(resource, crd_dir):
    """Key path -> the one-line text of every problem at that path."""
    found: dict[str, str] = {}
    for p in check_resources([resource], source=SOURCE, crd_dir=crd_dir):
        found[p.key] = (found.get(p.key, "") + " | " + str(p)).lstrip(" |")
    return found


def set_path(resource, path, value):
    node = resource["spec"]
    *parents, last = path
    for part in parents:
        node = node[part]
    node[last] = value
    return resource


TRAINING_CASES = [
    ("instance type not in the enum", ("resourceConfig", "instanceType"), "ml.p4d.24xlarg",
     "spec.resourceConfig.instanceType", "did you mean 'ml.p4d.24xlarge'"),
    ("job name too long", ("trainingJobName",), "a" * 64, "spec.trainingJobName",
     "above the maximum"),
    ("job name pattern", ("trainingJobName",), "bad_name", "spec.trainingJobName",
     "TrainingJobName pattern"),
    ("role ARN pattern", ("roleARN",), "arn:aws:iam::111122223333:user/someone-else",
     "spec.roleARN", "RoleArn pattern"),
    ("S3 URI pattern", ("outputDataConfig", "s3OutputPath"), "ftp://bucket/x",
     "spec.outputDataConfig.s3OutputPath", "S3Uri pattern"),
    ("channel name pattern", ("inputDataConfig", 0, "channelName"), "bad name",
     "spec.inputDataConfig[0].channelName", "ChannelName pattern"),
    ("channel input mode enum", ("inputDataConfig", 1, "inputMode"), "Streaming",
     "spec.inputDataConfig[1].inputMode", "Pipe, File, FastFile"),
    ("numeric maximum", ("resourceConfig", "keepAlivePeriodInSeconds"), 99999,
     "spec.resourceConfig.keepAlivePeriodInSeconds", "0 to 21600"),
    ("retry maximum", ("retryStrategy", "maximumRetryAttempts"), 31,
     "spec.retryStrategy.maximumRetryAttempts", "1 to 30"),
    ("list length", ("vpcConfig", "securityGroupIDs"), [f"sg-{i:017x}" for i in range(6)],
     "spec.vpcConfig.securityGroupIDs", "1 to 5 entries"),
    ("map size", ("hyperParameters",), {f"k{i}": "v" for i in range(101)},
     "spec.hyperParameters", "0 to 100 entries"),
    ("hyperparameter value length", ("hyperParameters", "model_name_or_path"), "m" * 2501,
     "spec.hyperParameters.model_name_or_path", "0 to 2500 characters"),
    ("environment key pattern", ("environment",), {"1BAD": "x"}, "spec.environment.1BAD",
     "TrainingEnvironmentKey pattern"),
    ("tag key pattern (a Java \\p{L} class)", ("tags", 0, "key"), "bad!key",
     "spec.tags[0].key", "TagKey pattern"),
    ("metric regex too long", ("algorithmSpecification", "metricDefinitions", 0, "regex"),
     "(" + "a" * 500 + ")", "spec.algorithmSpecification.metricDefinitions[0].regex",
     "1 to 500 characters"),
    ("too many metric definitions", ("algorithmSpecification", "metricDefinitions"),
     [{"name": f"m{i}", "regex": f"m{i}=(1)"} for i in range(41)],
     "spec.algorithmSpecification.metricDefinitions", "0 to 40 entries"),
    ("output compression enum", ("outputDataConfig", "compressionType"), "ZIP",
     "spec.outputDataConfig.compressionType", "GZIP, NONE"),
    ("KMS key pattern", ("outputDataConfig", "kmsKeyID"), "not a key!",
     "spec.outputDataConfig.kmsKeyID", "KmsKeyId pattern"),
]


@pytest.mark.parametrize("path,value,key,words", [c[1:] for c in TRAINING_CASES],
                         ids=[c[0] for c in TRAINING_CASES])
def test_training_job_constraints(path, value, key, words, crd_dir):
    problems = problems_of(set_path(training_job(), path, value), crd_dir)
    assert key in problems, list(problems.values())
    assert words in problems[key]
    assert problems[key].startswith(f"{SOURCE}: {key}: TrainingJob: ")


def test_unicode_tag_values_pass_as_in_java(crd_dir):
    job = training_job()
    job["spec"]["tags"].append({"key": "Équipe Nord", "value": "données 2026"})
    assert problems_of(job, crd_dir) == {}


def test_missing_required_member_uses_the_ack_spelling(crd_dir):
    job = tuning_job()
    del job["spec"]["trainingJobDefinition"]["roleARN"]
    problems = problems_of(job, crd_dir)
    assert "spec.trainingJobDefinition.roleARN" in problems
    assert "required by the SageMaker API" in problems["spec.trainingJobDefinition.roleARN"]


TUNING_CASES = [
    ("tuning job name over 32", ("hyperParameterTuningJobName",), "t" * 33,
     "spec.hyperParameterTuningJobName", "1 to 32 characters"),
    ("objective type enum", ("hyperParameterTuningJobConfig", "hyperParameterTuningJobObjective",
                             "type_"), "Maximise",
     "spec.hyperParameterTuningJobConfig.hyperParameterTuningJobObjective.type_",
     "did you mean 'Maximize'"),
    ("strategy enum", ("hyperParameterTuningJobConfig", "strategy"), "Genetic",
     "spec.hyperParameterTuningJobConfig.strategy", "Bayesian, Random, Hyperband, Grid"),
    ("scaling type enum", ("hyperParameterTuningJobConfig", "parameterRanges",
                           "continuousParameterRanges", 0, "scalingType"), "Log",
     "spec.hyperParameterTuningJobConfig.parameterRanges.continuousParameterRanges[0]"
     ".scalingType", "Logarithmic"),
    ("parallel jobs minimum", ("hyperParameterTuningJobConfig", "resourceLimits",
                               "maxParallelTrainingJobs"), 0,
     "spec.hyperParameterTuningJobConfig.resourceLimits.maxParallelTrainingJobs", "at least 1"),
    ("categorical values empty", ("hyperParameterTuningJobConfig", "parameterRanges",
                                  "categoricalParameterRanges", 0, "values"), [],
     "spec.hyperParameterTuningJobConfig.parameterRanges.categoricalParameterRanges[0].values",
     "1 to 30 entries"),
    ("trial instance type", ("trainingJobDefinition", "resourceConfig", "instanceType"),
     "ml.g5.2xl", "spec.trainingJobDefinition.resourceConfig.instanceType",
     "TrainingInstanceType"),
]


@pytest.mark.parametrize("path,value,key,words", [c[1:] for c in TUNING_CASES],
                         ids=[c[0] for c in TUNING_CASES])
def test_tuning_job_constraints(path, value, key, words, crd_dir):
    problems = problems_of(set_path(tuning_job(), path, value), crd_dir)
    assert key in problems, list(problems.values())
    assert words in problems[key]


def test_tuning_cross_field_rules(crd_dir):
    job = tuning_job()
    definition = job["spec"]["trainingJobDefinition"]
    definition["staticHyperParameters"]["learning_rate"] = "1e-06"
    config = job["spec"]["hyperParameterTuningJobConfig"]
    config["hyperParameterTuningJobObjective"]["metricName"] = "eval_rewards"
    config["resourceLimits"]["maxParallelTrainingJobs"] = 11
    problems = problems_of(job, crd_dir)
    assert set(problems) == {
        "spec.trainingJobDefinition.staticHyperParameters.learning_rate",
        "spec.hyperParameterTuningJobConfig.hyperParameterTuningJobObjective.metricName",
        "spec.hyperParameterTuningJobConfig.resourceLimits.maxParallelTrainingJobs"}


def test_spot_rules_on_the_resource(crd_dir):
    job = training_job()
    job["spec"]["stoppingCondition"]["maxWaitTimeInSeconds"] = 60
    del job["spec"]["checkpointConfig"]
    problems = problems_of(job, crd_dir)
    assert set(problems) == {"spec.stoppingCondition.maxWaitTimeInSeconds",
                             "spec.checkpointConfig.s3URI"}
    job = training_job()
    job["spec"]["enableManagedSpotTraining"] = False
    assert set(problems_of(job, crd_dir)) == {"spec.stoppingCondition.maxWaitTimeInSeconds"}


def test_a_wrong_type_is_reported_once(crd_dir):
    job = training_job()
    job["spec"]["resourceConfig"]["instanceCount"] = "2"
    problems = check_resources([job], source=SOURCE, crd_dir=crd_dir)
    assert [p.key for p in problems] == ["spec.resourceConfig.instanceCount"]


def test_botocore_alone_misses_what_we_catch():
    """The reason this module exists: botocore's client validation passes these requests."""
    from botocore.validate import ParamValidator

    job = set_path(training_job(), ("resourceConfig", "instanceType"), "ml.nope")
    set_path(job, ("trainingJobName",), "x" * 80)
    operation, request = to_request(job)
    model = botocore.session.get_session().get_service_model("sagemaker")
    report = ParamValidator().validate(request, model.operation_model(operation).input_shape)
    assert not report.has_errors()
    steps = {v.steps for v in check_request(operation, request)}
    assert (("member", "TrainingJobName"),) in steps
    assert (("member", "ResourceConfig"), ("member", "InstanceType")) in steps


@pytest.mark.parametrize("java,text,ok", [
    (r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)", "Équipe 2026_x", True),
    (r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)", "bad!", False),
    (r"arn:[\p{Alnum}\-]+:lambda:[\p{Alnum}\-]+:[0-9]{12}:function:.*",
     "arn:aws:lambda:us-west-2:111122223333:function:f", True),
    (r"arn:[\p{Alnum}\-]+:lambda:[\p{Alnum}\-]+:[0-9]{12}:function:.*",
     "arn:aws:lambda:us-wést-2:111122223333:function:f", False),  # Alnum is ASCII in Java
    (r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\t]*", "text \U0001F600", True),
    (r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", "abc-", False),  # whole-string match, as Java
    (r"arn:aws:sagemaker:\w+(?:-\w+)+:x", "arn:aws:sagemaker:us-west-2:x", True),
    (r"arn:aws:sagemaker:\w+(?:-\w+)+:x", "arn:aws:sagemaker:us-wést-2:x", False),  # ASCII \w
    (r"\d{12}", "١١١١٢٢٢٢٣٣٣٣", False),  # Arabic-Indic digits are not Java's \d
    (r"[\S\s]*", "line one\nline\u00a0two\u2028", True),  # any character at all
    (r"[\S]{1,5}", "a\u00a0b", True),  # U+00A0 is not an ASCII space: Java's \S takes it
    (r"[\S]{1,5}", "a b", False),
    (r"\[\w\]", "[é]", False),  # escaped brackets open no class; \w stays ASCII
    (r"\\w", "\\w", True),  # an escaped backslash, then a plain w
    (r"\[\w\]", "[a]", True),
])
def test_java_patterns(java, text, ok):
    assert matches(java, text) is ok


def test_every_pattern_of_both_operations_compiles():
    model = botocore.session.get_session().get_service_model("sagemaker")
    seen, patterns = set(), []

    def walk(shape):
        if shape.name in seen:
            return
        seen.add(shape.name)
        if "pattern" in shape.metadata:
            patterns.append(shape.metadata["pattern"])
        for child in (list(getattr(shape, "members", {}).values())
                      + [getattr(shape, a) for a in ("member", "key", "value")
                         if hasattr(shape, a)]):
            walk(child)

    for op in ("CreateTrainingJob", "CreateHyperParameterTuningJob"):
        walk(model.operation_model(op).input_shape)
    assert len(patterns) > 20
    for pattern in patterns:
        compile_java(pattern)
    assert r"\p{Alnum}" not in translate(r"[\p{Alnum}\-]+")


RESOURCE_RULES = [
    ("duplicate channel", ("inputDataConfig", 1, "channelName"), "corpus",
     "spec.inputDataConfig[1].channelName", "listed twice"),
    ("duplicate metric", ("algorithmSpecification", "metricDefinitions", 1, "name"),
     "eval_exact_match", "spec.algorithmSpecification.metricDefinitions[1].name",
     "defined twice"),
    ("reserved tag prefix", ("tags", 1, "key"), "aws:team", "spec.tags[1].key", "reserved"),
    ("zero instances", ("resourceConfig", "instanceCount"), 0,
     "spec.resourceConfig.instanceCount", "at least 1"),
    ("zero volume", ("resourceConfig", "volumeSizeInGB"), 0,
     "spec.resourceConfig.volumeSizeInGB", "at least 1"),
]


@pytest.mark.parametrize("path,value,key,words", [c[1:] for c in RESOURCE_RULES],
                         ids=[c[0] for c in RESOURCE_RULES])
def test_create_time_rules(path, value, key, words, crd_dir):
    problems = problems_of(set_path(training_job(), path, value), crd_dir)
    assert key in problems, list(problems.values())
    assert words in problems[key]


def test_secrets_in_a_resource_are_refused_and_not_echoed(crd_dir):
    key_id = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example
    job = training_job()
    job["spec"]["environment"]["AWS_SECRET_ACCESS_KEY"] = "x"
    job["spec"]["hyperParameters"]["vllm_server_url"] = f"http://{key_id}@host"
    problems = problems_of(job, crd_dir)
    assert set(problems) == {"spec.environment.AWS_SECRET_ACCESS_KEY",
                             "spec.hyperParameters.vllm_server_url"}
    assert key_id not in " ".join(problems.values())


def test_a_range_tuned_twice(crd_dir):
    job = tuning_job()
    ranges = job["spec"]["hyperParameterTuningJobConfig"]["parameterRanges"]
    ranges["categoricalParameterRanges"][0]["name"] = "learning_rate"
    ranges["categoricalParameterRanges"][0]["values"] = ["1e-06"]
    problems = problems_of(job, crd_dir)
    assert "tuned twice" in problems[
        "spec.hyperParameterTuningJobConfig.parameterRanges.continuousParameterRanges[0].name"]


def test_ranges_are_limited_in_total(crd_dir):
    job = tuning_job()
    ranges = job["spec"]["hyperParameterTuningJobConfig"]["parameterRanges"]
    ranges["categoricalParameterRanges"] = [{"name": f"p{i}", "values": ["1"]} for i in range(29)]
    assert "30 across" in problems_of(job, crd_dir)[
        "spec.hyperParameterTuningJobConfig.parameterRanges"]  # 29 + 1 + 1 = 31


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@pytest.mark.parametrize("make", [training_job, tuning_job], ids=["training", "tuning"])
def test_any_misshapen_value_gives_problems_never_an_exception(make, crd_dir):
    """Each value of the resource replaced by each wrong shape: problems, never a crash."""
    import copy

    from mtgrpo.errors import Problem

    base = make()
    paths = [p for p in _paths(base["spec"]) if p]
    assert len(paths) > 60
    for path in paths:
        for wrong in (None, 7, "x", [], {}):
            resource = copy.deepcopy(base)
            set_path(resource, path, wrong)
            problems = check_resources([resource], source=SOURCE, crd_dir=crd_dir)
            assert all(isinstance(p, Problem) for p in problems)
