"""Rendering: golden output, determinism, escaping, what each resource holds, the metric
contract, training_job_for, and `kubectl kustomize` building exactly the rendered resources."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtgrpo.contract import METRICS, format_metric_line
from mtgrpo.errors import UserError
from mtgrpo.gitops import compare
from mtgrpo.recipes import load_recipe
from mtgrpo.recipes.yamlfile import Loader, parse_yaml
from mtgrpo.render import load_settings, render_all, training_job_for
from mtgrpo.render.templating import PACKAGED_TEMPLATES
from tests.renderkit import REPO, copy_project

GOLDEN = Path(__file__).parent / "golden" / "full"


def _golden_write_requested() -> bool:
    return os.environ.get("MTGRPO_GOLDEN_WRITE", "").lower() in ("1", "true", "yes")


@pytest.mark.parametrize("root", [REPO, GOLDEN], ids=["shipped", "golden"])
def test_golden_project(root):
    """The committed manifests are exactly what the recipes render to (no orphans either)."""
    result = render_all(root, write=_golden_write_requested())
    drift = compare(root, result.files)
    assert drift.clean, (drift.diff + "\n" + drift.summary() + "\nfix: `mtgrpo render --root "
                         f"{root}` (golden: MTGRPO_GOLDEN_WRITE=1 pytest tests/test_render.py)")


def test_same_input_same_bytes_across_processes(tmp_path):
    """Two fresh interpreters with different hash seeds render identical bytes."""
    outputs = []
    for seed in ("1", "2"):
        dest = copy_project(tmp_path / seed, rendered=False)
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-m", "mtgrpo.cli", "render", "--root", str(dest)],
                       check=True, env=env, capture_output=True)
        outputs.append({p.relative_to(dest / "manifests").as_posix(): p.read_bytes()
                        for p in sorted((dest / "manifests").rglob("*.yaml"))}
                       | {"kustomization.yaml": (dest / "kustomization.yaml").read_bytes()})
    assert outputs[0] == outputs[1]
    committed = {p.relative_to(REPO / "manifests").as_posix(): p.read_bytes()
                 for p in (REPO / "manifests").rglob("*.yaml")}
    assert {k: v for k, v in outputs[0].items() if k != "kustomization.yaml"} == committed


def test_packaged_templates_match_the_repository_copies():
    for template in (REPO / "templates").glob("*.j2"):
        assert (PACKAGED_TEMPLATES / template.name).read_bytes() == template.read_bytes(), (
            f"copy templates/{template.name} to mtgrpo/render/templates/")


def _golden_bodies() -> dict[str, dict]:
    result = render_all(GOLDEN, write=False)
    return {r.name: r.body for r in result.resources}


def test_values_enter_as_data_not_text():
    everything = next(b for n, b in _golden_bodies().items() if n.startswith("everything-"))
    env = everything["spec"]["environment"]
    assert env["ODD_VALUE"] == 'quotes " and colons: {{ not a template }} # not a comment'
    assert (env["LOOKS_LIKE_BOOL"], env["LOOKS_LIKE_OCTAL"], env["TWO_LINES"]) == (
        "yes", "0o17", "first\nsecond\ttabbed")
    tags = everything["spec"]["tags"]
    assert tags == [{"key": "team", "value": "research: agents"},
                    {"key": "cost-center", "value": "0042"}]


def test_training_job_fields():
    bodies = _golden_bodies()
    spec = next(b for n, b in bodies.items() if n.startswith("everything-"))["spec"]
    assert spec["enableManagedSpotTraining"] is True
    assert spec["stoppingCondition"] == {"maxRuntimeInSeconds": 259200,
                                         "maxWaitTimeInSeconds": 432000}
    assert spec["resourceConfig"]["instanceCount"] == 4
    assert all(isinstance(v, str) for v in spec["hyperParameters"].values())
    assert spec["hyperParameters"]["learning_rate"] == "3e-07"
    assert spec["hyperParameters"]["tool_format"] == "qwen"
    names = [m["name"] for m in spec["algorithmSpecification"]["metricDefinitions"]]
    assert names == sorted(METRICS) + ["gpu_util"]
    channels = {c["channelName"]: c for c in spec["inputDataConfig"]}
    assert list(channels) == ["corpus", "model", "train"]
    assert channels["corpus"]["inputMode"] == "FastFile"
    assert channels["train"]["compressionType"] == "None"  # SageMaker's default, explicit
    # fields the controller would otherwise fill in (FACTS §1) are all rendered
    warm = next(b for n, b in bodies.items() if n.startswith("warm-pool-"))["spec"]
    assert warm["outputDataConfig"]["kmsKeyID"].startswith("arn:aws:kms:")
    assert warm["resourceConfig"]["keepAlivePeriodInSeconds"] == 600
    assert "vpcConfig" not in warm and "profilerConfig" not in warm
    for flag in ("enableManagedSpotTraining", "enableNetworkIsolation",
                 "enableInterContainerTrafficEncryption"):
        assert warm[flag] is False
    assert warm["algorithmSpecification"]["enableSageMakerMetricsTimeSeries"] is False
    assert "maxWaitTimeInSeconds" not in warm["stoppingCondition"]


def test_tuning_job_fields():
    bodies = _golden_bodies()
    tuning = next(b for b in bodies.values() if b["kind"] == "HyperParameterTuningJob")
    config = tuning["spec"]["hyperParameterTuningJobConfig"]
    assert config["hyperParameterTuningJobObjective"] == {"metricName": "eval_exact_match",
                                                          "type_": "Maximize"}
    assert config["resourceLimits"] == {"maxNumberOfTrainingJobs": 6,
                                        "maxParallelTrainingJobs": 3}
    ranges = config["parameterRanges"]
    assert ranges["categoricalParameterRanges"] == [{"name": "tool_format",
                                                     "values": ["xml", "qwen"]}]
    assert [r["name"] for r in ranges["continuousParameterRanges"]] == [
        "learning_rate", "turn_advantage_coef"]
    assert ranges["continuousParameterRanges"][0]["minValue"] == "1e-07"
    definition = tuning["spec"]["trainingJobDefinition"]
    static = definition["staticHyperParameters"]
    assert not {"tool_format", "learning_rate", "turn_advantage_coef"} & set(static)
    assert static["model_name_or_path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "environment" not in definition  # tuning jobs drop Environment (FACTS §1)
    assert len(tuning["metadata"]["name"]) <= 32
    # render_training_job: true renders the plain job with the static values as well
    training = [b for b in bodies.values() if b["metadata"]["labels"]["mtgrpo.io/recipe"]
                == "sweep-tool-format-and-lr" and b["kind"] == "TrainingJob"]
    assert len(training) == 1


def test_labels_and_annotations():
    for body in _golden_bodies().values():
        meta = body["metadata"]
        assert meta["namespace"] == "ml-jobs"
        assert meta["annotations"]["services.k8s.aws/region"] == "eu-west-1"
        assert meta["annotations"]["services.k8s.aws/deletion-policy"] == "delete"
        assert meta["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
        assert meta["annotations"]["mtgrpo.io/source"].startswith("recipes/")
        assert meta["labels"]["mtgrpo.io/recipe"]


def test_every_metric_regex_reads_the_trainer_line():
    """Each rendered metric definition extracts its value from a line the trainer's logger
    writes (mtgrpo.contract.format_metric_line)."""
    values = {name: float(i) + 0.25 for i, name in enumerate(sorted(METRICS))}
    values["step"] = 7
    line = format_metric_line(values)
    for body in render_all(REPO, write=False).resources:
        if body.kind not in ("TrainingJob", "HyperParameterTuningJob"):
            continue  # backend: kubeflow (tests/test_kubeflow_render.py reads its collector)
        spec = body.body["spec"]
        algo = (spec.get("algorithmSpecification")
                or spec["trainingJobDefinition"]["algorithmSpecification"])
        for metric in algo["metricDefinitions"]:
            match = re.search(metric["regex"], line)
            assert match, metric
            assert float(match.group(1)) == pytest.approx(values[metric["name"]])


def test_training_job_for_applies_tuned_hyperparameters():
    recipe = load_recipe(REPO / "recipes" / "qwen2-5-1-5b-tune.yaml", root=REPO)
    settings = load_settings(REPO)
    best = training_job_for(recipe, settings, {"learning_rate": "3.2e-06",
                                               "per_device_train_batch_size": "3",
                                               "_tuning_objective_metric": "eval_reward"})
    again = training_job_for(recipe, settings, {"per_device_train_batch_size": "3",
                                                "learning_rate": "3.2e-06"})
    plain = training_job_for(recipe, settings, {})
    assert best.kind == "TrainingJob" and best.name == again.name != plain.name
    hps = best.body["spec"]["hyperParameters"]
    assert hps["learning_rate"] == "3.2e-06" and hps["per_device_train_batch_size"] == "3"
    assert hps["max_steps"] == "100"  # the recipe's static values stay
    assert best.name.startswith("qwen2-5-1-5b-tune-") and len(best.name) <= 63
    assert parse_yaml(best.text, source="x") == best.body
    with pytest.raises(UserError) as excinfo:
        training_job_for(recipe, settings, {"learning_rat": "1e-6"})
    assert str(excinfo.value).startswith("recipes/qwen2-5-1-5b-tune.yaml: trainer.learning_rat:")
    with pytest.raises(UserError):
        training_job_for(recipe, settings, {"per_device_train_batch_size": "0"})


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("root", [REPO, GOLDEN], ids=["shipped", "golden"])
def test_kubectl_kustomize_builds_exactly_the_rendered_resources(root):
    built = subprocess.run(["kubectl", "kustomize", str(root)], check=True,
                           capture_output=True, text=True).stdout
    # read back with YAML 1.2 number rules (as kubectl does): an unquoted 1e-06 would be a float
    docs = [d for d in yaml.load_all(built, Loader=Loader) if d]
    expected = render_all(root, write=False).resources
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(docs) == len(expected) == len(by_name)
    for resource in expected:
        # same objects, and every string stayed a string through kubectl's YAML parser
        assert by_name[(resource.kind, resource.name)] == resource.body


def test_a_json_value_inside_a_longer_string_is_refused(tmp_path):
    root = copy_project(tmp_path, rendered=False)
    template = root / "templates" / "trainingjob.yaml.j2"
    template.write_text(template.read_text().replace(
        "s3OutputPath: {{ job.output_path | json }}",
        "s3OutputPath: prefix-{{ job.output_path | json }}"))
    with pytest.raises(UserError) as excinfo:
        render_all(root, write=False)
    assert "spec.outputDataConfig.s3OutputPath: a `| json` value is part of a longer string" in \
        str(excinfo.value)


TRICKY = ["yes", "y", "N", "off", "null", "~", "", "0o17", "0x1F", "0b101", "1_000", "12:30",
          "2024-01-01", "1e-06", "1e5", "-.5", "+1", "1.", ".inf", "0042", " lead", "trail ",
          "two\nlines\n", "tab\there", "émoji 🎉", "- dash", "-dash", "#hash", "@at", "`tick",
          "*star", "&amp", "!bang", "%pct", "[x]", "{y}", '"q"', "'s'", ": colon", "a: b",
          "a #b", "...", "---", "a:", "s3://b/k", "arn:aws:iam::1:role/x", "a,b",
          "back\\slash \"q\"", "mtgrpo\\-metrics:.* x=([-+]?[0-9]*)"]


def test_canonical_yaml_keeps_strings_strings_for_pyyaml_and_kubectl(tmp_path):
    from mtgrpo.recipes.yamlfile import dump_yaml
    data = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tricky"},
            "data": {f"k{i:02d}": value for i, value in enumerate(TRICKY)}}
    text = dump_yaml(data)
    assert parse_yaml(text, source="x") == data == yaml.safe_load(text)
    assert dump_yaml(parse_yaml(text, source="x")) == text
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    (tmp_path / "cm.yaml").write_text(text)
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    built = subprocess.run(["kubectl", "kustomize", str(tmp_path)], check=True,
                           capture_output=True, text=True).stdout
    assert yaml.load(built, Loader=Loader)["data"] == data["data"]
