"""Content-hash job names: format, limits, and which changes rename a job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mtgrpo.recipes import load_recipe
from mtgrpo.render import build_resources, job_name, load_settings
from mtgrpo.render.naming import (HASH_CHARS, NAME_PATTERN, TRAINING_JOB_NAME_LIMIT,
                                  TUNING_JOB_NAME_LIMIT)
from tests.renderkit import copy_project

SPEC = {"roleARN": "arn:aws:iam::111122223333:role/r", "resourceConfig": {"instanceCount": 1}}


def test_name_is_slug_dash_hash_and_deterministic():
    name = job_name("qwen3-run", SPEC, TRAINING_JOB_NAME_LIMIT)
    assert re.fullmatch(rf"qwen3-run-[0-9a-f]{{{HASH_CHARS}}}", name)
    assert job_name("qwen3-run", dict(reversed(list(SPEC.items()))), 63) == name  # key order
    changed = {**SPEC, "resourceConfig": {"instanceCount": 2}}
    assert job_name("qwen3-run", changed, 63) != name


@pytest.mark.parametrize("limit", [TRAINING_JOB_NAME_LIMIT, TUNING_JOB_NAME_LIMIT])
@pytest.mark.parametrize("slug", ["a", "x" * 50, "a-" * 30 + "b", "long-name-" * 6])
def test_long_slugs_fit_the_limit_and_pattern(slug, limit):
    name = job_name(slug, SPEC, limit)
    assert len(name) <= limit
    assert NAME_PATTERN.match(name) and name == name.lower()
    assert not name.startswith("-") and "--" not in name[len(name) - HASH_CHARS - 2:]
    assert name.startswith(slug[: limit - HASH_CHARS - 1].rstrip("-"))


def _names(root: Path, recipe: str) -> list[str]:
    settings = load_settings(root)
    return [r.name for r in build_resources(load_recipe(root / "recipes" / recipe, root=root),
                                            settings)]


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path, rendered=False)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_unchanged_recipe_keeps_its_name(project):
    first = _names(project, "qwen3-1-7b-p4d-spot.yaml")
    assert _names(project, "qwen3-1-7b-p4d-spot.yaml") == first
    _edit(project / "recipes/qwen3-1-7b-p4d-spot.yaml", "# Qwen3-1.7B", "# A comment: Qwen3")
    assert _names(project, "qwen3-1-7b-p4d-spot.yaml") == first


@pytest.mark.parametrize("file, old, new", [
    ("recipes/qwen3-1-7b-p4d-spot.yaml", "max_steps: 300", "max_steps: 301"),  # a trainer value
    ("recipes/qwen3-1-7b-p4d-spot.yaml", "volume_size: 200", "volume_size: 201"),  # a job value
    ("recipes/base/account.yaml", "project: mtgrpo", "project: other"),  # a tag, via a base
    ("recipes/base/account.yaml", "region: us-west-2", "region: us-east-1"),  # the region
    ("recipes/_project.yaml", "namespace: mtgrpo ", "namespace: other "),  # the namespace
    ("templates/trainingjob.yaml.j2", "profilingIntervalInMilliseconds: 500",
     "profilingIntervalInMilliseconds: 500\n  remoteDebugConfig: {enableRemoteDebug: false}"),
])
def test_a_changed_value_changes_the_name(project, file, old, new):
    if file.startswith("templates/"):  # profiler on, so the template's edited branch renders
        _edit(project / "recipes/qwen3-1-7b-p4d-spot.yaml", "job:\n",
              "job:\n  disable_profiler: false\n")
    before = _names(project, "qwen3-1-7b-p4d-spot.yaml")
    _edit(project / file, old, new)
    after = _names(project, "qwen3-1-7b-p4d-spot.yaml")
    assert before != after
    assert after[0].startswith("qwen3-1-7b-p4d-spot-")


@pytest.mark.parametrize("file, old, new", [
    ("recipes/_project.yaml", "deletion_policy: retain", "deletion_policy: delete"),
    ("recipes/qwen3-1-7b-p4d-spot.yaml", "description: Qwen3", "description: Changed Qwen3"),
])
def test_metadata_only_changes_keep_the_name(project, file, old, new):
    before = _names(project, "qwen3-1-7b-p4d-spot.yaml")
    _edit(project / file, old, new)
    assert _names(project, "qwen3-1-7b-p4d-spot.yaml") == before


def test_tuning_job_name_fits_32_with_a_long_slug(project):
    _edit(project / "recipes/qwen2-5-1-5b-tune.yaml", "name: qwen2-5-1-5b-tune",
          "name: qwen2-5-1-5b-tune-learning-rate-and-batch-size")
    _edit(project / "recipes/qwen2-5-1-5b-tune.yaml", "strategy: Bayesian",
          "strategy: Bayesian\n  render_training_job: true")
    resources = build_resources(load_recipe(project / "recipes/qwen2-5-1-5b-tune.yaml",
                                            root=project), load_settings(project))
    tuning, training = resources
    assert tuning.kind == "HyperParameterTuningJob" and len(tuning.name) <= 32
    assert tuning.name.startswith("qwen2-5-1-5b-tune-lea")
    assert training.kind == "TrainingJob" and len(training.name) <= 63
    assert training.name.startswith("qwen2-5-1-5b-tune-learning-rate-and-batch-size-")
    assert tuning.body["metadata"]["name"] == tuning.body["spec"]["hyperParameterTuningJobName"]
    assert training.body["metadata"]["name"] == training.body["spec"]["trainingJobName"]


def test_recipes_cut_to_the_same_prefix_never_share_a_name(project):
    tune = project / "recipes/qwen2-5-1-5b-tune.yaml"
    names = []
    for suffix in ("a", "b"):
        copy = project / f"recipes/tune-{suffix}.yaml"
        copy.write_text(tune.read_text().replace(
            "name: qwen2-5-1-5b-tune", f"name: qwen2-5-1-5b-tune-same-long-prefix-{suffix}"))
        names += _names(project, copy.name)
    assert names[0][:21] == names[1][:21] and names[0] != names[1]
    assert all(len(n) <= TUNING_JOB_NAME_LIMIT for n in names)
