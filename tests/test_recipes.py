"""Recipe loading: extends and deep merge, the schema (unknown keys, types, required values),
provenance of errors, discovery, and the generated hyperparameter page."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import UserError
from mtgrpo.recipes import discover_recipes, load_recipe
from mtgrpo.recipes.hyperparameters_doc import DOC_PATH, hyperparameters_markdown
from tests.renderkit import REPO

ACCOUNT = """
job:
  region: us-west-2
  role: arn:aws:iam::111122223333:role/r
  image_uri: 111122223333.dkr.ecr.us-west-2.amazonaws.com/t:1
  output_path: s3://amzn-s3-demo-bucket/out
  instance_type: ml.g5.2xlarge
  subnets: [subnet-0123456789abcdef0]
  inputs:
    train: s3://amzn-s3-demo-bucket/train
    corpus: s3://amzn-s3-demo-bucket/corpus
"""


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def errors(excinfo) -> list[str]:
    return [str(p) for p in excinfo.value.problems]


def test_shipped_recipe_merges_its_base_files():
    recipe = load_recipe(REPO / "recipes" / "qwen2-5-1-5b-tune.yaml", root=REPO)
    assert recipe.name == "qwen2-5-1-5b-tune"
    assert recipe.source == "recipes/qwen2-5-1-5b-tune.yaml"
    # two levels of extends: account.yaml <- qwen2-5-1-5b-g5.yaml <- the recipe
    assert recipe.job["role"].startswith("arn:aws:iam::111122223333:role/")
    assert recipe.job["instance_type"] == "ml.g5.2xlarge"
    assert set(recipe.job["inputs"]) == {"train", "eval", "corpus", "model"}
    assert isinstance(recipe.trainer, TrainerConfig)
    assert recipe.trainer.generation_backend == "transformers"
    assert recipe.trainer.max_steps == 100  # the recipe wins over its base
    assert recipe.tuning["max_jobs"] == 10 and recipe.tuning["early_stopping_type"] == "Off"
    assert recipe.where("job.role") == "recipes/base/account.yaml"
    assert recipe.where("job.instance_type") == "recipes/base/qwen2-5-1-5b-g5.yaml"
    assert recipe.where("trainer.max_steps") == "recipes/qwen2-5-1-5b-tune.yaml"
    assert "extends" not in recipe.data


def test_deep_merge_later_wins_lists_replace_null_unsets(tmp_path):
    write(tmp_path, "recipes/base/a.yaml", ACCOUNT + "  tags: {team: a, cost: x}\n")
    write(tmp_path, "recipes/base/b.yaml", """
        job:
          subnets: [subnet-0123456789abcdef1, subnet-0123456789abcdef2]
          tags: {team: b}
        trainer: {learning_rate: 2.0e-6}
    """)
    path = write(tmp_path, "recipes/r.yaml", """
        name: r
        extends: [base/a.yaml, base/b.yaml]
        trainer: {model_name_or_path: m, learning_rate: 1e-6}
        job:
          subnets: [subnet-0123456789abcdef3]
          volume_size: null
    """)
    recipe = load_recipe(path)
    assert recipe.source == "recipes/r.yaml"
    assert recipe.job["subnets"] == ["subnet-0123456789abcdef3"]  # lists are replaced
    assert {t["Key"]: t["Value"] for t in recipe.job["tags"]} == {"team": "b", "cost": "x"}
    assert recipe.trainer.learning_rate == 1e-6  # `1e-6` is a float, not YAML 1.1's string
    assert recipe.job["volume_size"] == 30  # null unset it: the schema default
    assert "volume_size" not in recipe.data["job"]
    assert recipe.where("job.tags.team") == "recipes/base/b.yaml"


def test_defaults_are_filled(tmp_path):
    write(tmp_path, "recipes/base/a.yaml", ACCOUNT)
    recipe = load_recipe(write(tmp_path, "recipes/r.yaml", """
        name: r
        extends: base/a.yaml
        trainer: {model_name_or_path: m}
    """))
    job = recipe.job
    assert (job["instance_count"], job["max_run"], job["input_mode"]) == (1, 86400, "File")
    assert job["use_spot_instances"] is False and job["disable_profiler"] is True
    assert job["inputs"]["train"] == {
        "s3_data": "s3://amzn-s3-demo-bucket/train", "distribution": "FullyReplicated",
        "compression": "None", "content_type": None, "record_wrapping": "None",
        "s3_data_type": "S3Prefix", "input_mode": None, "attribute_names": []}
    assert recipe.tuning is None


@pytest.mark.parametrize("body, expected", [
    ("job: {instance_typ: ml.g5.xlarge}",
     "recipes/r.yaml: job.instance_typ: unknown key in job keys; did you mean "
     "'instance_type'? (allowed: "),
    ("trainr: {}", "recipes/r.yaml: trainr: unknown key in recipe keys; did you mean "
                   "'trainer'?"),
    ("job: {instance_count: '2'}",
     "recipes/r.yaml: job.instance_count: must be an integer, got a string (allowed: an "
     "integer)"),
    ("job: {use_spot_instances: 'yes please'}",
     "recipes/r.yaml: job.use_spot_instances: must be true or false, got a string"),
    ("job: {input_mode: Streaming}",
     "recipes/r.yaml: job.input_mode: invalid value 'Streaming' (allowed: one of File, "
     "FastFile, Pipe)"),
    ("job: {inputs: {train: {s3_data: s3://b/t, distribution: Sharded}}}",
     "recipes/r.yaml: job.inputs.train.distribution: invalid value 'Sharded' (allowed: one of "
     "FullyReplicated, ShardedByS3Key)"),
    ("job: {environment: {DEBUG: 1}}",
     "recipes/r.yaml: job.environment.DEBUG: must be a string, got an integer"),
    ("trainer: {learning_rat: 0.1}",
     "recipes/r.yaml: trainer.learning_rat: unknown trainer hyperparameter; did you mean "
     "'learning_rate'?"),
    ("trainer: {algorithm: ppo}",
     "recipes/r.yaml: trainer.algorithm: invalid value 'ppo' (allowed: one of mt_grpo, "
     "grpo_or, grpo_mr)"),
    ("tuning: {hyperparameter_ranges: {learning_rate: {type: uniform}}}",
     "recipes/r.yaml: tuning.hyperparameter_ranges.learning_rate.type: invalid value "
     "'uniform' (allowed: one of continuous, integer, categorical)"),
    ("tuning: {max_jobs: 2, hyperparameter_ranges: []}",
     "recipes/r.yaml: tuning.hyperparameter_ranges: must be a non-empty mapping"),
])
def test_schema_problems_name_file_key_and_allowed(tmp_path, body, expected):
    # the case's values come from a base file: problems must name the file that set them
    write(tmp_path, "recipes/base/a.yaml", ACCOUNT)
    write(tmp_path, "recipes/base/case.yaml", body + "\n")
    path = write(tmp_path, "recipes/r.yaml", "name: r\nextends: [base/a.yaml, base/case.yaml]\n"
                 "trainer: {model_name_or_path: m}\n")
    with pytest.raises(UserError) as excinfo:
        load_recipe(path)
    lines = errors(excinfo)
    expected = expected.replace("recipes/r.yaml", "recipes/base/case.yaml")
    assert any(line.startswith(expected) for line in lines), lines
    assert all("\n" not in line for line in lines)


def test_missing_required_values_name_the_recipe(tmp_path):
    path = write(tmp_path, "recipes/r.yaml", """
        name: r
        trainer: {learning_rate: 1.0e-6}
        job: {region: us-west-2}
    """)
    with pytest.raises(UserError) as excinfo:
        load_recipe(path)
    lines = errors(excinfo)
    for key in ("job.role", "job.image_uri", "job.instance_type", "job.output_path",
                "job.inputs", "trainer.model_name_or_path"):
        assert any(line.startswith(f"recipes/r.yaml: {key}: required value is missing")
                   for line in lines), (key, lines)


def test_bad_name_and_bad_yaml_and_duplicate_keys(tmp_path):
    bad_name = write(tmp_path, "recipes/a.yaml", "name: My_Recipe\ntrainer: {}\njob: {}\n")
    with pytest.raises(UserError) as excinfo:
        load_recipe(bad_name)
    assert any(line.startswith("recipes/a.yaml: name: invalid recipe name 'My_Recipe' "
                               "(allowed: lower-case") for line in errors(excinfo))
    broken = write(tmp_path, "recipes/b.yaml", "name: b\ntrainer: [1\n")
    with pytest.raises(UserError) as excinfo:
        load_recipe(broken)
    assert errors(excinfo)[0].startswith("recipes/b.yaml: invalid YAML: line ")
    dup = write(tmp_path, "recipes/c.yaml", "name: c\nname: d\n")
    with pytest.raises(UserError) as excinfo:
        load_recipe(dup)
    assert errors(excinfo) == ["recipes/c.yaml: name: duplicate key (line 2) (allowed: each "
                               "key once per mapping)"]


def test_extends_errors(tmp_path):
    missing = write(tmp_path, "recipes/a.yaml", "name: a\nextends: base/nope.yaml\n")
    with pytest.raises(UserError) as excinfo:
        load_recipe(missing)
    assert errors(excinfo) == ["recipes/a.yaml: extends: file not found: 'base/nope.yaml' "
                               "(allowed: a path relative to recipes/)"]
    write(tmp_path, "recipes/base/x.yaml", "extends: y.yaml\n")
    write(tmp_path, "recipes/base/y.yaml", "extends: x.yaml\n")
    cycle = write(tmp_path, "recipes/b.yaml", "name: b\nextends: base/x.yaml\n")
    with pytest.raises(UserError) as excinfo:
        load_recipe(cycle)
    assert "leads back to this file (a cycle)" in errors(excinfo)[0]


def test_unquoted_off_is_read_as_off(tmp_path):
    write(tmp_path, "recipes/base/a.yaml", ACCOUNT)
    recipe = load_recipe(write(tmp_path, "recipes/r.yaml", """
        name: r
        extends: base/a.yaml
        trainer: {model_name_or_path: m}
        tuning:
          max_jobs: 2
          early_stopping_type: Off
          hyperparameter_ranges: {seed: {type: categorical, values: [1, 2]}}
    """))
    assert recipe.tuning["early_stopping_type"] == "Off"


def test_discover_skips_settings_and_subdirectories(tmp_path):
    for rel in ("recipes/b.yaml", "recipes/a.yml", "recipes/_project.yaml",
                "recipes/base/x.yaml", "recipes/local/y.yaml", "recipes/notes.txt"):
        write(tmp_path, rel, "{}\n")
    assert [p.name for p in discover_recipes(tmp_path / "recipes")] == ["a.yml", "b.yaml"]
    shipped = [p.name for p in discover_recipes(REPO / "recipes")]
    assert shipped == sorted(shipped) and "_project.yaml" not in shipped and shipped


def test_hyperparameters_doc_is_current():
    committed = (REPO / DOC_PATH).read_text(encoding="utf-8")
    assert committed == hyperparameters_markdown(), (
        "docs/hyperparameters.md is stale: run "
        "`python -m mtgrpo.recipes.hyperparameters_doc --write`")


def test_hyperparameters_doc_lists_every_field():
    from dataclasses import fields
    text = hyperparameters_markdown()
    for f in fields(TrainerConfig):
        assert f"| `{f.name}` |" in text


def test_docs_list_every_recipe_key():
    from mtgrpo.recipes import schema
    from mtgrpo.render.settings import PROJECT
    text = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    sections = (schema.TOP, schema.JOB, schema.INPUT, schema.TUNING, schema.RANGE, PROJECT)
    # named as `key`, as `key:` in an example, or inside a `{key, ...}` listing
    missing = sorted({key for section in sections for key in section if not re.search(
        rf"`{key}`|^\s*{key}:|[{{,] ?{key}[,}}:]", text, re.MULTILINE)})
    assert not missing, f"docs/recipes.md does not mention: {missing}"
