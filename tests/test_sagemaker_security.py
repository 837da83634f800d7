"""SageMaker's loosened settings need a stated reason, carried into an annotation (remote
debug, a container on the network outside a VPC), and a project can require customer-managed
KMS keys: through `mtgrpo validate` and `mtgrpo render` on a copy of the project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtgrpo.cli import main
from mtgrpo.recipes.yamlfile import parse_yaml_all
from tests.renderkit import copy_project


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path / "repo", rendered=False)


def write(project: Path, job: dict) -> Path:
    path = project / "recipes" / "sec.yaml"
    path.write_text(json.dumps({"name": "sec", "extends": "base/qwen2-5-1-5b-g5.yaml",
                                "trainer": {"max_steps": 10}, "job": {"max_run": 3600, **job}}))
    return path


def validate(project: Path, path: Path, capsys) -> tuple[int, str]:
    code = main(["validate", "--root", str(project), str(path)])
    return code, capsys.readouterr().err


def annotations(project: Path, capsys) -> dict:
    assert main(["render", "--root", str(project)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    (path,) = (project / "manifests").glob("sagemaker/sec-*-trainingjob.yaml")
    (body,) = parse_yaml_all(path.read_text(), source=str(path))
    return body["metadata"]["annotations"]


def test_remote_debug_needs_a_reason(project, capsys):
    path = write(project, {"enable_remote_debug": True})
    code, err = validate(project, path, capsys)
    assert code == 1
    assert "job.enable_remote_debug: enable_remote_debug: is on, without a reason" in err
    write(project, {"enable_remote_debug": True, "security_exceptions": {
        "enable_remote_debug": "debugging a NCCL hang on the 2-node recipe"}})
    assert annotations(project, capsys)["mtgrpo.io/security-exception-enable-remote-debug"] \
        == "debugging a NCCL hang on the 2-node recipe"


def test_isolation_off_outside_a_vpc_needs_its_own_reason(project, capsys):
    reason = {"enable_network_isolation": "the task calls a public search API"}
    path = write(project, {"enable_network_isolation": False, "security_exceptions": reason})
    code, err = validate(project, path, capsys)
    assert code == 1
    assert "job.subnets: network_without_vpc: enable_network_isolation is off and no subnets " \
           "are given, without a reason" in err
    write(project, {"enable_network_isolation": False, "security_exceptions": {
        **reason, "network_without_vpc": "no VPC in this sandbox account"}})
    notes = annotations(project, capsys)
    assert notes["mtgrpo.io/security-exception-network-without-vpc"] == \
        "no VPC in this sandbox account"
    # in a VPC, the second reason does not apply
    path = write(project, {"enable_network_isolation": False, "subnets": ["subnet-0abc1234"],
                           "security_group_ids": ["sg-0abc1234"], "security_exceptions": {
                               **reason, "network_without_vpc": "stale"}})
    code, err = validate(project, path, capsys)
    assert code == 1 and "network_without_vpc: a reason for network_without_vpc, but it " \
                         "does not apply" in err


def test_a_project_can_require_kms_keys(project, capsys):
    settings = project / "recipes" / "_project.yaml"
    settings.write_text(settings.read_text() + "require_kms_key: true\n")
    path = write(project, {})
    code, err = validate(project, path, capsys)
    assert code == 1
    assert "job.output_kms_key: no KMS key (require_kms_key" in err
    assert "job.volume_kms_key: no KMS key (require_kms_key" in err
    key = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    path = write(project, {"output_kms_key": key, "volume_kms_key": key})
    code, err = validate(project, path, capsys)
    assert code == 0, err
