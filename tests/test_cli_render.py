"""`mtgrpo render | validate | diff` through the CLI's error boundary: exit codes, one-line
errors naming file, key and what is allowed, no traceback, and nothing written on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from mtgrpo.cli import main
from tests.renderkit import copy_project, snapshot

SPOT = "recipes/qwen3-1-7b-p4d-spot.yaml"
G5 = "recipes/qwen2-5-1-5b-g5.yaml"
TUNE = "recipes/qwen2-5-1-5b-tune.yaml"
ACCOUNT = "recipes/base/account.yaml"


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path)


def replace(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1))
    return edit


def create(rel: str, text: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        (root / rel).write_text(text)
    return edit


def test_render_writes_then_is_idempotent(tmp_path, capsys):
    root = copy_project(tmp_path, rendered=False)
    assert main(["render", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "wrote kustomization.yaml" in out and "rendered 8 recipes into 13 resources" in out
    before = snapshot(root)
    assert main(["render", "--root", str(root)]) == 0
    assert "(0 files written, 0 removed)" in capsys.readouterr().out
    assert snapshot(root) == before


def test_validate_and_diff_on_a_clean_checkout(project, capsys):
    assert main(["validate", "--root", str(project)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 8 recipes, 13 resources valid"
    assert main(["validate", "--root", str(project), str(project / SPOT)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 1 recipes, 1 resources valid"
    assert main(["diff", "--root", str(project)]) == 0
    assert capsys.readouterr().out.startswith("no drift: 13 resources")
    assert main(["render", "--check", "--root", str(project)]) == 0


def test_diff_exits_1_with_diff_and_summary(project, capsys):
    replace(SPOT, "max_steps: 300", "max_steps: 250")(project)
    before = snapshot(project)
    assert main(["diff", "--root", str(project)]) == 1
    captured = capsys.readouterr()
    assert "--- a/manifests/sagemaker/qwen3-1-7b-p4d-spot-" in captured.out
    assert "jobs replaced: 1" in captured.out
    assert "run `mtgrpo render`" in captured.err
    assert snapshot(project) == before  # diff writes nothing
    assert main(["diff", "--quiet", "--root", str(project)]) == 1
    assert "--- a/" not in capsys.readouterr().out
    assert main(["render", "--root", str(project)]) == 0
    assert main(["diff", "--root", str(project)]) == 0


# (id, edit, expected error line prefix "file: key: message", a fragment of `allowed`)
BAD_INPUTS = [
    ("unknown-job-key", replace(SPOT, "volume_size: 200", "volume_sise: 200"),
     f"{SPOT}: job.volume_sise: unknown key in job keys; did you mean 'volume_size'?",
     "instance_type"),
    ("unknown-top-key", replace(G5, "trainer:", "trainr:"),
     f"{G5}: trainr: unknown key in recipe keys; did you mean 'trainer'?", "extends"),
    ("wrong-type", replace(SPOT, "instance_count: 1", "instance_count: one"),
     f"{SPOT}: job.instance_count: must be an integer, got a string", "an integer"),
    ("missing-required", replace(ACCOUNT, "  role: arn:aws:iam::111122223333:role/"
                                          "mtgrpo-sagemaker-execution\n", ""),
     f"{G5}: job.role: required value is missing", "IAM role ARN"),
    ("unknown-hyperparameter", replace(G5, "learning_rate: 1.0e-6", "learning_rte: 1.0e-6"),
     f"{G5}: trainer.learning_rte: unknown trainer hyperparameter; did you mean "
     "'learning_rate'?", "docs/hyperparameters.md"),
    ("bad-hyperparameter-value", replace(SPOT, "algorithm: mt_grpo", "algorithm: ppo"),
     f"{SPOT}: trainer.algorithm: invalid value 'ppo'", "mt_grpo, grpo_or, grpo_mr"),
    ("bad-recipe-name", replace(G5, "name: qwen2-5-1-5b-g5", "name: Qwen_G5"),
     f"{G5}: name: invalid recipe name 'Qwen_G5'", "lower-case letters"),
    ("invalid-yaml", replace(SPOT, "trainer:\n", "trainer: [\n"),
     f"{SPOT}: invalid YAML: line ", "a YAML mapping"),
    ("missing-base", replace(G5, "extends: base/qwen2-5-1-5b-g5.yaml", "extends: base/gone.yaml"),
     f"{G5}: extends: file not found: 'base/gone.yaml'", "a path relative to recipes/"),
    ("duplicate-key", replace(SPOT, "  max_run: 86400", "  max_run: 86400\n  max_run: 3600"),
     f"{SPOT}: max_run: duplicate key", "each key once"),
    ("duplicate-recipe-name", create("recipes/zz-copy.yaml",
                                     "name: qwen2-5-1-5b-g5\nextends: base/qwen2-5-1-5b-g5.yaml\n"),
     "recipes/zz-copy.yaml: name: 'qwen2-5-1-5b-g5' is already the name of " + G5,
     "a unique name per recipe"),
    ("spot-without-max-wait", replace(SPOT, "  max_wait: 172800", "  max_wait: 3600"),
     f"{SPOT}: job.max_wait: ", ">="),
    ("bad-role-arn", replace(ACCOUNT, "role: arn:aws:iam::111122223333:role/",
                             "role: arn:aws:iam::1111:role/"),
     f"{ACCOUNT}: job.role: ", "arn:aws"),
    ("bad-instance-type", replace(SPOT, "instance_type: ml.p4d.24xlarge",
                                      "instance_type: ml.p4d.huge"),
     f"{SPOT}: job.instance_type: ", "the closest: ml.p4d.24xlarge"),
    ("bad-instance-type-in-base", replace("recipes/base/qwen2-5-1-5b-g5.yaml",
                                          "instance_type: ml.g5.2xlarge",
                                          "instance_type: ml.g5.huge"),
     "recipes/base/qwen2-5-1-5b-g5.yaml: job.instance_type: ", "ml.g5.2xlarge"),
    ("tuned-name-not-a-hyperparameter", replace(TUNE, "    learning_rate:\n",
                                                "    learning_rat:\n"),
     f"{TUNE}: tuning.hyperparameter_ranges.learning_rat: ", "hyperparameter"),
    ("secret-in-environment", replace(SPOT, "job:\n", "job:\n  environment:\n"
                                      "    WANDB_API_KEY: not-a-real-secret-value\n"),
     f"{SPOT}: job.environment.WANDB_API_KEY: ", ""),
    ("image-not-pinned", replace(ACCOUNT, "mtgrpo-trainer@sha256:" + "0" * 64,
                                 "mtgrpo-trainer:latest"),
     f"{ACCOUNT}: job.image_uri: image '111122223333.dkr.ecr.us-west-2.amazonaws.com/"
     "mtgrpo-trainer:latest' is not pinned by digest", "@sha256:"),
    ("short-digest", replace(ACCOUNT, "@sha256:" + "0" * 64, "@sha256:" + "0" * 63),
     f"{ACCOUNT}: job.image_uri: image '111122223333.dkr.ecr.us-west-2.amazonaws.com/"
     "mtgrpo-trainer@sha256:" + "0" * 63 + "' is not pinned by digest", "64 hex digits"),
    ("bad-settings", replace("recipes/_project.yaml", "deletion_policy: retain",
                             "deletion_policy: keep"),
     "recipes/_project.yaml: deletion_policy: invalid value 'keep'", "retain, delete"),
    ("extends-cycle", create("recipes/base/account.yaml", "extends: qwen2-5-1-5b-g5.yaml\n"),
     "recipes/base/qwen2-5-1-5b-g5.yaml: extends: 'account.yaml' leads back to this file "
     "(a cycle)",
     "without cycles"),
    ("template-syntax-error", replace("templates/trainingjob.yaml.j2", "{{ job.role | json }}",
                                      "{{ job.role | json }"),
     "templates/trainingjob.yaml.j2: line ", "Jinja2"),
]


@pytest.mark.parametrize("case, edit, prefix, allowed", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
@pytest.mark.parametrize("command", ["render", "validate", "diff"])
def test_bad_input_is_refused_with_one_line_errors(project, capsys, case, edit, prefix,
                                                   allowed, command):
    edit(project)
    before = snapshot(project)
    code = main([command, "--root", str(project)])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 1, captured
    assert "Traceback" not in captured.err + captured.out
    assert lines and all(line.startswith("error: ") for line in lines), lines
    assert any(line.startswith("error: " + prefix) and "(allowed: " in line
               and allowed in line.split("(allowed: ", 1)[1] for line in lines), lines
    assert snapshot(project) == before  # nothing written, nothing removed
    if case == "secret-in-environment":
        assert "not-a-real-secret-value" not in captured.err
    if case.startswith("bad-instance-type"):  # with the recipe's values, said once
        assert "'ml.p4d.huge'" in captured.err or "'ml.g5.huge'" in captured.err
        assert captured.err.count("job.instance_type") == 1


def test_missing_crd_dir_is_one_error(project, capsys):
    assert main(["validate", "--root", str(project), "--crd-dir", str(project / "nope")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --crd-dir: CRD directory not found: {project / 'nope'} "
        "(allowed: a directory holding the ACK SageMaker CRDs)",
        "error: 1 problem in 1 file; nothing written"]
    (project / "recipes/_project.yaml").write_text("crd_dir: crds\n")
    assert main(["diff", "--root", str(project)]) == 1
    assert capsys.readouterr().err.startswith(
        "error: recipes/_project.yaml: crd_dir: CRD directory not found: ")
