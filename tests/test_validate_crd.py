"""CRD validation with unknown fields rejected, as kubectl's strict field validation does."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ack_samples import training_job, tuning_job, value_paths
from mtgrpo.validate import check_resources, default_crd_dir
from mtgrpo.validate.crd_schema import check_against_crd, field_spellings, strict

REPO = Path(__file__).resolve().parent.parent
PACKAGED = REPO / "mtgrpo" / "validate" / "crds"
SOURCE = "recipes/sample.yaml"


def manifests() -> list[Path]:
    """The ACK manifests (backend kubeflow's are checked in tests/test_kubeflow_render.py)."""
    return sorted(p for p in (REPO / "manifests").glob("*/*-*.yaml")
                  if p.name.endswith(("-trainingjob.yaml", "-hyperparametertuningjob.yaml")))


def test_hand_written_resources_are_valid(crd_dir):
    assert check_against_crd(training_job(), source=SOURCE, crd_dir=crd_dir) == []
    assert check_against_crd(tuning_job(), source=SOURCE, crd_dir=crd_dir) == []


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_rendered_manifests_are_valid(path, crd_dir):
    resource = yaml.safe_load(path.read_text())
    assert check_resources([resource], source=str(path), crd_dir=crd_dir) == []


def test_unknown_field_is_refused_with_its_path_and_a_suggestion(crd_dir):
    job = training_job()
    job["spec"]["resourceConfig"]["instanceTyp"] = "ml.g5.2xlarge"
    job["spec"]["inputDataConfig"][1]["dataSource"]["s3DataSource"]["s3Uri"] = "s3://b/x"
    job["spec"]["extra"] = {"a": 1}
    problems = check_against_crd(job, source=SOURCE, crd_dir=crd_dir)
    by_key = {p.key: p for p in problems}
    assert set(by_key) == {"spec.resourceConfig.instanceTyp", "spec.extra",
                           "spec.inputDataConfig[1].dataSource.s3DataSource.s3Uri"}
    assert "did you mean 'instanceType'" in by_key["spec.resourceConfig.instanceTyp"].message
    assert "did you mean 's3URI'" in str(by_key[
        "spec.inputDataConfig[1].dataSource.s3DataSource.s3Uri"])
    assert all(p.file == SOURCE for p in problems)


def test_unknown_top_level_field(crd_dir):
    job = training_job()
    job["specs"] = job["spec"]
    problems = check_against_crd(job, source=SOURCE, crd_dir=crd_dir)
    assert [p.key for p in problems] == ["specs"]
    assert "did you mean 'spec'" in problems[0].message


def test_string_maps_refuse_numbers_and_booleans(crd_dir):
    job = tuning_job()
    job["spec"]["trainingJobDefinition"]["staticHyperParameters"]["num_generations"] = 8
    ranges = job["spec"]["hyperParameterTuningJobConfig"]["parameterRanges"]
    ranges["integerParameterRanges"][0]["maxValue"] = 4
    problems = check_against_crd(job, source=SOURCE, crd_dir=crd_dir)
    assert {p.key for p in problems} == {
        "spec.trainingJobDefinition.staticHyperParameters.num_generations",
        "spec.hyperParameterTuningJobConfig.parameterRanges.integerParameterRanges[0].maxValue"}
    assert all("string" in p.allowed for p in problems)


def test_missing_required_spec_field(crd_dir):
    job = training_job()
    del job["spec"]["roleARN"]
    problems = check_against_crd(job, source=SOURCE, crd_dir=crd_dir)
    assert [p.key for p in problems] == ["spec.roleARN"]


def test_metadata_is_free_but_its_name_is_checked(crd_dir):
    job = training_job()
    job["metadata"]["annotations"]["anything"] = "goes"
    job["metadata"]["generateName"] = "x-"
    assert check_resources([job], source=SOURCE, crd_dir=crd_dir) == []
    job["metadata"]["name"] = "Sample_0123"
    keys = [p.key for p in check_resources([job], source=SOURCE, crd_dir=crd_dir)]
    assert keys == ["metadata.name", "metadata.name"]  # not a k8s name; not the job name


def test_status_is_checked_too(crd_dir):
    job = training_job()
    job["status"] = {"trainingJobStatus": "Completed", "bogus": 1}
    assert [p.key for p in check_against_crd(job, source=SOURCE, crd_dir=crd_dir)] == [
        "status.bogus"]


def test_unknown_kind(crd_dir):
    thing = {"apiVersion": "sagemaker.services.k8s.aws/v1alpha1", "kind": "Endpoint",
             "metadata": {"name": "x"}, "spec": {}}
    problems = check_resources([thing], source=SOURCE, crd_dir=crd_dir)
    assert [p.key for p in problems] == ["kind"]
    assert "HyperParameterTuningJob" in problems[0].allowed


def test_strict_injection_respects_preserve_unknown_fields():
    schema = {"type": "object", "properties": {
        "a": {"type": "object", "properties": {"b": {"type": "string"}}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"c": {"type": "string"}}},
        "map": {"type": "object", "additionalProperties": {"type": "string"}},
        "list": {"type": "array", "items": {"type": "object", "properties": {
            "d": {"type": "string"}}}}}}
    out = strict(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in out["properties"]["free"]
    assert out["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert out["properties"]["list"]["items"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the input is not changed


def test_field_spellings_keep_initialisms(crd_dir):
    spell = field_spellings(crd_dir)
    assert spell["rolearn"] == "roleARN" and spell["s3uri"] == "s3URI"
    assert spell["type"] == "type_" and spell["volumekmskeyid"] == "volumeKMSKeyID"


def test_packaged_crds_equal_the_shared_ones(crd_dir):
    names = sorted(p.name for p in PACKAGED.glob("*.yaml"))
    assert names == ["sagemaker.services.k8s.aws_hyperparametertuningjobs.yaml",
                     "sagemaker.services.k8s.aws_trainingjobs.yaml"]
    for name in names:
        assert (PACKAGED / name).read_bytes() == (crd_dir / name).read_bytes()


def test_packaged_kubeflow_crds_equal_the_shared_ones(crd_dir):
    """A fresh clone or a pip install has no ../shared: the Kubeflow backend's CRDs ship too."""
    names = sorted(p.name for p in (PACKAGED / "kubeflow").iterdir() if p.suffix != ".md")
    assert names == ["katib_v1beta1_swagger.json", "kubeflow.org_experiments.yaml",
                     "trainer.kubeflow.org_clustertrainingruntimes.yaml",
                     "trainer.kubeflow.org_trainingruntimes.yaml",
                     "trainer.kubeflow.org_trainjobs.yaml"]
    for name in names:
        assert (PACKAGED / "kubeflow" / name).read_bytes() == (
            crd_dir / "kubeflow" / name).read_bytes()


def test_the_shipped_project_validates_against_the_packaged_crds(monkeypatch):
    from mtgrpo.render import render_all

    monkeypatch.setenv("MTGRPO_CRD_DIR", str(PACKAGED))
    result = render_all(REPO, write=False)
    assert {r.body["kind"] for r in result.resources} >= {"TrainingJob", "TrainJob", "Experiment"}


def test_packaged_crds_validate_the_same(crd_dir):
    bad = training_job()
    bad["spec"]["bogus"] = True
    for directory in (crd_dir, PACKAGED):
        assert check_resources([training_job(), tuning_job()], source=SOURCE,
                               crd_dir=directory) == []
        assert [p.key for p in check_resources([bad], source=SOURCE, crd_dir=directory)] == [
            "spec.bogus"]


def test_default_crd_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MTGRPO_CRD_DIR", str(tmp_path))
    assert default_crd_dir() == tmp_path
    monkeypatch.delenv("MTGRPO_CRD_DIR")
    shared = REPO.parent / "shared" / "crds"
    expected = shared if (shared / "sagemaker.services.k8s.aws_trainingjobs.yaml").is_file() \
        else PACKAGED
    assert default_crd_dir() == expected


def test_input_resources_are_not_modified(crd_dir):
    job = training_job()
    job["spec"]["bogus"] = 1
    before = copy.deepcopy(job)
    check_resources([job], source=SOURCE, crd_dir=crd_dir)
    assert job == before


def test_structural_fast_check_agrees_with_jsonschema(crd_dir):
    """The quick yes/no must say 'valid' exactly when jsonschema does, or errors would hide."""
    from mtgrpo.validate.crd_schema import validators

    table = validators(crd_dir)
    assert all(v.fast != v.full.is_valid for v in table.values())  # the fast path is in use
    checked = 0
    for make in (training_job, tuning_job):
        base = make()
        schema = table[("sagemaker.services.k8s.aws", "v1alpha1", base["kind"])]
        paths = list(value_paths(base))
        for path in paths:
            for wrong in (None, 7, 7.0, 2.5, True, "x", [], {}, [{}], {"unknown": 1}):
                resource = copy.deepcopy(base)
                node = resource
                for part in path[:-1]:
                    node = node[part]
                node[path[-1]] = wrong
                assert schema.fast(resource) == schema.full.is_valid(resource), (path, wrong)
                checked += 1
    assert checked > 1000


def test_unsupported_keywords_fall_back_to_jsonschema():
    from mtgrpo.validate.structural import compile_structural

    assert compile_structural({"type": "object", "properties": {"a": {"type": "string"}}})
    assert compile_structural({"type": "string", "pattern": "^a$"}) is None
    assert compile_structural({"anyOf": [{"type": "string"}]}) is None


