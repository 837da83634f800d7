"""The SDK's job features and the secure defaults: what the shipped and golden
recipes render, and at least one bad input per recipe key, each refused with the key named,
through the whole `render_all` path (schema, rules, real CRDs, botocore's service model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mtgrpo.errors import UserError
from mtgrpo.render import render_all
from tests.renderkit import REPO

GOLDEN = Path(__file__).parent / "golden" / "full"


def _bodies(root: Path) -> dict[str, dict]:
    return {r.name: r.body for r in render_all(root, write=False).resources}


def _one(bodies: dict[str, dict], prefix: str, kind: str = "TrainingJob") -> dict:
    return next(b for n, b in bodies.items() if n.startswith(prefix) and b["kind"] == kind)


def test_shipped_recipes_render_isolated_encrypted_with_metric_time_series():
    bodies = {n: b for n, b in _bodies(REPO).items()
              if b["kind"] in ("TrainingJob", "HyperParameterTuningJob")}  # not Kubeflow's
    assert len(bodies) >= 4
    for body in bodies.values():
        spec = body["spec"]
        definition = spec.get("trainingJobDefinition", spec)
        assert definition["enableNetworkIsolation"] is True, body["metadata"]["name"]
        assert definition["enableInterContainerTrafficEncryption"] is True
        assert not any(k.startswith("mtgrpo.io/security-exception")
                       for k in body["metadata"]["annotations"])
        if body["kind"] == "TrainingJob":
            assert spec["algorithmSpecification"]["enableSageMakerMetricsTimeSeries"] is True


def test_golden_job_features():
    bodies = _bodies(GOLDEN)
    spec = _one(bodies, "everything-")["spec"]
    assert spec["infraCheckConfig"] == {"enableInfraCheck": True}
    assert spec["remoteDebugConfig"] == {"enableRemoteDebug": True}
    assert spec["outputDataConfig"]["compressionType"] == "NONE"
    assert spec["tensorBoardOutputConfig"] == {
        "s3OutputPath": "s3://amzn-s3-demo-bucket/golden/tensorboard/everything",
        "localPath": "/opt/ml/output/data/tensorboard"}
    warm = _one(bodies, "warm-pool-")
    assert warm["spec"]["outputDataConfig"]["compressionType"] == "GZIP"
    assert not {"infraCheckConfig", "remoteDebugConfig", "tensorBoardOutputConfig"} & set(
        warm["spec"])
    assert warm["metadata"]["annotations"][
        "mtgrpo.io/security-exception-enable-network-isolation"] == (
        "warm-pool debugging session installs packages from PyPI")
    assert warm["spec"]["enableNetworkIsolation"] is False
    tuning = _one(bodies, "sweep-", "HyperParameterTuningJob")["spec"]
    assert tuning["hyperParameterTuningJobConfig"]["tuningJobCompletionCriteria"] == {
        "targetObjectiveMetricValue": 0.85}
    assert tuning["warmStartConfig"] == {
        "parentHyperParameterTuningJobs": [
            {"hyperParameterTuningJobName": "sweep-previous-0123456789"},
            {"hyperParameterTuningJobName": "sweep-older-abcdef0123"}],
        "warmStartType": "TransferLearning"}
    # the sweep's plain TrainingJob: metrics defined and nothing set, so time series on
    plain = _one(bodies, "sweep-")["spec"]
    assert plain["algorithmSpecification"]["enableSageMakerMetricsTimeSeries"] is True


def _project(tmp_path: Path, job: str = "", tuning: str = "") -> Path:
    (tmp_path / "recipes").mkdir()
    shutil.copy2(GOLDEN / "recipes" / "_project.yaml", tmp_path / "recipes" / "_project.yaml")
    shutil.copytree(GOLDEN / "recipes" / "base", tmp_path / "recipes" / "base")
    text = ("name: case\nextends: base/account.yaml\n"
            # one GPU: rollouts on it (vLLM would need a second)
            "trainer: {model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct, "
            "generation_backend: transformers, num_generations: 4}\n"
            "job:\n  instance_type: ml.g5.xlarge\n" + job)
    if tuning:
        text += ("tuning:\n  max_jobs: 6\n  hyperparameter_ranges:\n"
                 "    learning_rate: {type: continuous, min_value: 1.0e-7, max_value: 1.0e-5}\n"
                 + tuning)
    (tmp_path / "recipes" / "case.yaml").write_text(text)
    return tmp_path


def _problems(root: Path) -> list:
    with pytest.raises(UserError) as err:
        render_all(root, write=False)
    return err.value.problems


BAD = [
    ("infra-check", "  enable_infra_check: 'yes'\n", "", "job.enable_infra_check",
     "true or false"),
    ("remote-debug", "  enable_remote_debug: 1\n", "", "job.enable_remote_debug",
     "true or false"),
    ("compression", "  disable_output_compression: NONE\n", "",
     "job.disable_output_compression", "true or false"),
    ("tensorboard", "  tensorboard_output_path: /tmp/tb\n", "", "job.tensorboard_output_path",
     "not a valid S3 URI"),
    ("tensorboard-type", "  tensorboard_output_path: [s3://a/b]\n", "",
     "job.tensorboard_output_path", "must be a string"),
    ("metrics", "  enable_sagemaker_metrics: 'on'\n", "", "job.enable_sagemaker_metrics",
     "true or false"),
    ("isolation-off", "  enable_network_isolation: false\n", "", "job.enable_network_isolation",
     "without a reason"),
    ("encryption-off", "  encrypt_inter_container_traffic: false\n", "",
     "job.encrypt_inter_container_traffic", "without a reason"),
    ("reason-while-on", "  security_exceptions: {enable_network_isolation: debugging}\n", "",
     "job.security_exceptions.enable_network_isolation", "but it is on"),
    ("reason-typo", "  enable_network_isolation: false\n  security_exceptions: "
                    "{enable_network_isolaton: debugging}\n", "",
     "job.security_exceptions.enable_network_isolaton", "did you mean"),
    ("reason-empty", "  enable_network_isolation: false\n  security_exceptions: "
                     "{enable_network_isolation: ' '}\n", "",
     "job.security_exceptions.enable_network_isolation", "empty"),
    ("reasons-type", "  security_exceptions: [enable_network_isolation]\n", "",
     "job.security_exceptions", "must be a mapping"),
    ("criteria-empty", "", "  completion_criteria: {}\n", "tuning.completion_criteria",
     "no criterion"),
    ("criteria-target", "", "  completion_criteria: {target_objective_metric_value: high}\n",
     "tuning.completion_criteria.target_objective_metric_value", "must be a number"),
    ("criteria-unknown", "", "  completion_criteria: {target_value: 0.9}\n",
     "tuning.completion_criteria.target_value", "unknown key"),
    ("criteria-not-improving", "",
     "  completion_criteria: {max_number_of_training_jobs_not_improving: 2}\n",
     "tuning.completion_criteria.max_number_of_training_jobs_not_improving", ""),
    ("criteria-convergence", "", "  completion_criteria: {complete_on_convergence: Enabled}\n",
     "tuning.completion_criteria.complete_on_convergence", "true or false"),
    ("warm-type", "", "  warm_start: {warm_start_type: Identical, parents: [old-sweep]}\n",
     "tuning.warm_start.warm_start_type", "invalid value"),
    ("warm-no-parents", "", "  warm_start: {warm_start_type: TransferLearning}\n",
     "tuning.warm_start.parents", "required"),
    ("warm-too-many", "", "  warm_start: {warm_start_type: TransferLearning, "
                          "parents: [a1, a2, a3, a4, a5, a6]}\n",
     "tuning.warm_start.parents", "entries"),
    ("warm-bad-name", "", "  warm_start: {warm_start_type: TransferLearning, "
                          "parents: [old_sweep]}\n", "tuning.warm_start.parents", "pattern"),
    ("warm-twice", "", "  warm_start: {warm_start_type: TransferLearning, "
                       "parents: [old-sweep, old-sweep]}\n",
     "tuning.warm_start.parents[1]", "listed twice"),
]


@pytest.mark.parametrize("job,tuning,key,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_refused_naming_the_key(job, tuning, key, words, tmp_path):
    problems = _problems(_project(tmp_path, job, tuning))
    hits = [p for p in problems if p.key == key]
    assert hits, [(p.key, p.message) for p in problems]
    assert all(p.file == "recipes/case.yaml" for p in hits)
    assert any(words.lower() in (p.message + " " + p.allowed).lower() for p in hits), hits


def test_completion_criteria_the_installed_crd_lacks_are_refused(tmp_path):
    """The API has BestObjectiveNotImproving and ConvergenceDetected; the ACK CRD this repo
    validates against has only targetObjectiveMetricValue, and the controller would drop the
    rest. So they are refused (by the CRD check), rendered fine once a CRD has them."""
    problems = _problems(_project(tmp_path, tuning="  completion_criteria: "
                                  "{max_number_of_training_jobs_not_improving: 5, "
                                  "complete_on_convergence: true}\n"))
    keys = {p.key for p in problems}
    assert {"tuning.completion_criteria.max_number_of_training_jobs_not_improving",
            "tuning.completion_criteria.complete_on_convergence"} <= keys, problems


def test_a_reasoned_exception_renders(tmp_path):
    root = _project(tmp_path, job="  encrypt_inter_container_traffic: false\n"
                                  "  security_exceptions:\n"
                                  "    encrypt_inter_container_traffic: one instance\n")
    body = next(iter(_bodies(root).values()))
    assert body["spec"]["enableInterContainerTrafficEncryption"] is False
    assert body["spec"]["enableNetworkIsolation"] is True
    assert body["metadata"]["annotations"][
        "mtgrpo.io/security-exception-encrypt-inter-container-traffic"] == "one instance"
