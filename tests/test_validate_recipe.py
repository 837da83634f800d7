"""check_recipe: each rule refuses a bad value with file, key path, message and what is allowed."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from ack_samples import value_paths

from mtgrpo.contract.config import field_specs
from mtgrpo.validate import check_recipe
from mtgrpo.validate.secrets import looks_like_secret_name, looks_like_secret_value

REPO = Path(__file__).resolve().parent.parent
SOURCE = "recipes/sample.yaml"
# AWS's documented example credentials (docs.aws.amazon.com), not real keys.
EXAMPLE_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"

BASE = {
    "name": "sample",
    "trainer": {"model_name_or_path": "Qwen/Qwen3-1.7B", "learning_rate": 1e-6,
                "max_steps": 300},
    "job": {
        "image_uri": "111122223333.dkr.ecr.us-west-2.amazonaws.com/mtgrpo@sha256:" + "0" * 64,
        "role": "arn:aws:iam::111122223333:role/mtgrpo-sagemaker",
        "instance_type": "ml.p4d.24xlarge",
        "max_run": 86400,
        "use_spot_instances": True,
        "max_wait": 172800,
        "checkpoint_s3_uri": "s3://amzn-s3-demo-bucket/checkpoints/sample",
        "output_path": "s3://amzn-s3-demo-bucket/output",
        "region": "us-west-2",
        "environment": {"NCCL_DEBUG": "WARN"},
        "tags": {"project": "mtgrpo"},
        "inputs": {"train": "s3://amzn-s3-demo-bucket/data/train",
                   "corpus": {"s3_data": "s3://amzn-s3-demo-bucket/data/corpus",
                              "distribution": "FullyReplicated"}},
        "metric_definitions": [{"Name": "custom_metric", "Regex": "custom=([0-9.]+)"}],
    },
}

TUNING = {
    "objective_metric_name": "eval_reward", "objective_type": "Maximize",
    "hyperparameter_ranges": {
        "learning_rate": {"type": "continuous", "min_value": 1e-7, "max_value": 1e-5,
                          "scaling_type": "Logarithmic"},
        "per_device_train_batch_size": {"type": "integer", "min_value": 1, "max_value": 4},
        "algorithm": {"type": "categorical", "values": ["mt_grpo", "grpo_or"]},
    },
    "max_jobs": 10, "max_parallel_jobs": 2, "strategy": "Bayesian", "early_stopping_type": "Off",
}


def tuned_recipe() -> dict:
    recipe = copy.deepcopy(BASE)
    recipe["tuning"] = copy.deepcopy(TUNING)
    del recipe["job"]["environment"]  # tuning trials never see it
    return recipe


def edit(recipe: dict, path: str, value) -> dict:
    """A copy of ``recipe`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    recipe = copy.deepcopy(recipe)
    node = recipe
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return recipe


def test_valid_recipes_have_no_problems():
    assert check_recipe(copy.deepcopy(BASE), source=SOURCE) == []
    assert check_recipe(tuned_recipe(), source=SOURCE) == []


def test_shipped_recipes_pass():
    from mtgrpo.recipes import discover_recipes, load_recipe

    paths = discover_recipes(REPO / "recipes")
    if not paths:
        pytest.skip("no shipped recipes yet")
    for path in paths:
        recipe = load_recipe(path, root=REPO)
        assert check_recipe(recipe.data, source=recipe.source) == [], path


# (description, recipe, expected key, words the message or allowed text must contain)
BAD = [
    ("spot without max_wait", edit(BASE, "job.max_wait", ...), "job.max_wait", "max_wait"),
    ("spot max_wait below max_run", edit(BASE, "job.max_wait", 3600), "job.max_wait",
     "less than max_run"),
    ("spot without checkpoints", edit(BASE, "job.checkpoint_s3_uri", ...),
     "job.checkpoint_s3_uri", "checkpoint"),
    ("max_wait without spot", edit(BASE, "job.use_spot_instances", False), "job.max_wait",
     "only allowed with use_spot_instances"),
    ("spot with a warm pool", edit(BASE, "job.keep_alive_period_in_seconds", 600),
     "job.keep_alive_period_in_seconds", "warm pools"),
    ("max_run over 28 days", edit(edit(BASE, "job.max_run", 30 * 86400), "job.max_wait",
                                  31 * 86400), "job.max_run", "2419200"),
    ("role is not an ARN", edit(BASE, "job.role", "mtgrpo-sagemaker"), "job.role", "arn:aws:iam"),
    ("role ARN of a user", edit(BASE, "job.role", "arn:aws:iam::111122223333:user/bob"),
     "job.role", "role/"),
    ("role ARN short account", edit(BASE, "job.role", "arn:aws:iam::1111:role/x"), "job.role",
     "12-digit"),
    ("role ARN with a trailing newline",
     edit(BASE, "job.role", "arn:aws:iam::111122223333:role/x\n"), "job.role", "arn:aws:iam"),
    ("output path not S3", edit(BASE, "job.output_path", "/tmp/output"), "job.output_path",
     "s3://"),
    ("bucket with upper case", edit(BASE, "job.output_path", "s3://My_Bucket/x"),
     "job.output_path", "not a valid S3 URI"),
    ("checkpoint URI http", edit(BASE, "job.checkpoint_s3_uri", "http://example.com/c"),
     "job.checkpoint_s3_uri", "s3://"),
    ("channel URI not S3", edit(BASE, "job.inputs.train", "file:///data"), "job.inputs.train",
     "S3 URI"),
    ("channel option URI not S3", edit(BASE, "job.inputs.corpus", {"s3_data": "gs://b/c"}),
     "job.inputs.corpus.s3_data", "S3 URI"),
    ("bad channel name", edit(BASE, "job.inputs.bad name", "s3://amzn-s3-demo-bucket/x"),
     "job.inputs.bad name", "invalid channel name"),
    ("required channel missing", edit(BASE, "job.inputs.corpus", ...), "job.inputs.corpus",
     "required channel"),
    ("subnet id malformed", edit(edit(BASE, "job.subnets", ["net-1"]), "job.security_group_ids",
                                 ["sg-0123456789abcdef0"]), "job.subnets[0]", "subnet-"),
    ("subnets without security groups", edit(BASE, "job.subnets", ["subnet-0123456789abcdef0"]),
     "job.security_group_ids", "both"),
    ("environment name invalid", edit(BASE, "job.environment", {"1BAD": "x"}),
     "job.environment.1BAD", "invalid environment variable name"),
    ("environment name with a newline", edit(BASE, "job.environment", {"A\n": "x"}),
     "job.environment.A\n", "invalid environment variable name"),
    ("environment value too long", edit(BASE, "job.environment", {"LONG": "x" * 513}),
     "job.environment.LONG", "at most 512"),
    ("too many environment entries",
     edit(BASE, "job.environment", {f"V{i}": "x" for i in range(101)}), "job.environment",
     "at most 100"),
    ("environment on a tuning recipe", edit(tuned_recipe(), "job.environment", {"A": "b"}),
     "job.environment", "tuning trials"),
    ("metric regex without group", edit(BASE, "job.metric_definitions",
                                        [{"Name": "m", "Regex": "m=[0-9]+"}]),
     "job.metric_definitions[0].Regex", "0 capture groups"),
    ("metric regex two groups", edit(BASE, "job.metric_definitions",
                                     [{"Name": "m", "Regex": "(a)=([0-9]+)"}]),
     "job.metric_definitions[0].Regex", "2 capture groups"),
    ("metric regex does not compile", edit(BASE, "job.metric_definitions",
                                           [{"Name": "m", "Regex": "m=([0-9]+"}]),
     "job.metric_definitions[0].Regex", "does not compile"),
    ("metric regex too long", edit(BASE, "job.metric_definitions",
                                   [{"Name": "m", "Regex": "(" + "a" * 500 + ")"}]),
     "job.metric_definitions[0].Regex", "1 to 500"),
    ("metric name too long", edit(BASE, "job.metric_definitions",
                                  [{"Name": "m" * 256, "Regex": "(a)"}]),
     "job.metric_definitions[0].Name", "1 to 255"),
    ("metric redefines a built-in", edit(BASE, "job.metric_definitions",
                                         [{"Name": "eval_reward", "Regex": "x=(1)"}]),
     "job.metric_definitions[0].Name", "defined twice"),
    ("more than 40 metrics", edit(BASE, "job.metric_definitions",
                                  [{"Name": f"m{i}", "Regex": f"m{i}=(1)"} for i in range(30)]),
     "job.metric_definitions", "at most 40"),
    ("hyperparameter value too long", edit(BASE, "trainer.model_name_or_path", "m" * 2501),
     "trainer.model_name_or_path", "at most 2500"),
    ("objective not a metric", edit(tuned_recipe(), "tuning.objective_metric_name", "eval_rewrd"),
     "tuning.objective_metric_name", "did you mean 'eval_reward'"),
    ("objective type", edit(tuned_recipe(), "tuning.objective_type", "Maximise"),
     "tuning.objective_type", "Maximize, Minimize"),
    ("parallel above max_jobs", edit(tuned_recipe(), "tuning.max_parallel_jobs", 20),
     "tuning.max_parallel_jobs", "exceeds max_jobs"),
    ("max_jobs zero", edit(tuned_recipe(), "tuning.max_jobs", 0), "tuning.max_jobs",
     "at least 1"),
    ("hyperband with early stopping", edit(edit(tuned_recipe(), "tuning.strategy", "Hyperband"),
                                           "tuning.early_stopping_type", "Auto"),
     "tuning.early_stopping_type", "Hyperband"),
    ("grid with a continuous range", edit(tuned_recipe(), "tuning.strategy", "Grid"),
     "tuning.hyperparameter_ranges.learning_rate.type", "categorical"),
    ("tuned name not a hyperparameter",
     edit(tuned_recipe(), "tuning.hyperparameter_ranges.learning_rat",
          {"type": "continuous", "min_value": 0.1, "max_value": 0.2}),
     "tuning.hyperparameter_ranges.learning_rat", "did you mean 'learning_rate'"),
    ("integer range on a float field",
     edit(tuned_recipe(), "tuning.hyperparameter_ranges.learning_rate",
          {"type": "integer", "min_value": 1, "max_value": 2}),
     "tuning.hyperparameter_ranges.learning_rate.type", "float hyperparameter"),
    ("continuous range on an int field",
     edit(tuned_recipe(), "tuning.hyperparameter_ranges.per_device_train_batch_size",
          {"type": "continuous", "min_value": 1, "max_value": 4}),
     "tuning.hyperparameter_ranges.per_device_train_batch_size.type", "int hyperparameter"),
    ("continuous range on a bool field",
     edit(tuned_recipe(), "tuning.hyperparameter_ranges.bf16",
          {"type": "continuous", "min_value": 0, "max_value": 1}),
     "tuning.hyperparameter_ranges.bf16.type", "categorical"),
    ("min not below max", edit(tuned_recipe(), "tuning.hyperparameter_ranges.learning_rate",
                               {"type": "continuous", "min_value": 1e-5, "max_value": 1e-7}),
     "tuning.hyperparameter_ranges.learning_rate.min_value", "min_value < max_value"),
    ("logarithmic from zero", edit(tuned_recipe(), "tuning.hyperparameter_ranges.weight_decay",
                                   {"type": "continuous", "min_value": 0.0, "max_value": 0.1,
                                    "scaling_type": "Logarithmic"}),
     "tuning.hyperparameter_ranges.weight_decay.min_value", "min_value > 0"),
    ("reverse logarithmic beyond 1",
     edit(tuned_recipe(), "tuning.hyperparameter_ranges.turn_advantage_coef",
          {"type": "continuous", "min_value": 0.5, "max_value": 2.0,
           "scaling_type": "ReverseLogarithmic"}),
     "tuning.hyperparameter_ranges.turn_advantage_coef.scaling_type", "[0, 1)"),
    ("range end outside the field's bounds",
     edit(tuned_recipe(), "tuning.hyperparameter_ranges.per_device_train_batch_size",
          {"type": "integer", "min_value": 0, "max_value": 4}),
     "tuning.hyperparameter_ranges.per_device_train_batch_size.min_value", "out of range"),
    ("integer range with a fraction",
     edit(tuned_recipe(), "tuning.hyperparameter_ranges.per_device_train_batch_size",
          {"type": "integer", "min_value": 1.5, "max_value": 4}),
     "tuning.hyperparameter_ranges.per_device_train_batch_size.min_value", "invalid value"),
    ("range end breaks a cross-field rule",
     edit(tuned_recipe(), "tuning.hyperparameter_ranges.max_tokens_per_turn",
          {"type": "integer", "min_value": 64, "max_value": 4096}),
     "tuning.hyperparameter_ranges.max_tokens_per_turn.max_value", "max_completion_length"),
    ("categorical value invalid", edit(tuned_recipe(), "tuning.hyperparameter_ranges.algorithm",
                                       {"type": "categorical", "values": ["mt_grpo", "ppo"]}),
     "tuning.hyperparameter_ranges.algorithm.values[1]", "mt_grpo"),
    ("categorical values empty", edit(tuned_recipe(), "tuning.hyperparameter_ranges.algorithm",
                                      {"type": "categorical", "values": []}),
     "tuning.hyperparameter_ranges.algorithm.values", "1 to 30"),
    ("categorical value twice", edit(tuned_recipe(), "tuning.hyperparameter_ranges.algorithm",
                                     {"type": "categorical", "values": ["mt_grpo", "mt_grpo"]}),
     "tuning.hyperparameter_ranges.algorithm.values[1]", "twice"),
    ("categorical with bounds", edit(tuned_recipe(), "tuning.hyperparameter_ranges.algorithm",
                                     {"type": "categorical", "values": ["mt_grpo"],
                                      "min_value": 1}),
     "tuning.hyperparameter_ranges.algorithm.min_value", "not used by categorical"),
    ("more than 30 ranges", edit(tuned_recipe(), "tuning.hyperparameter_ranges",
                                 {name: {"type": "categorical", "values": ["1"]}
                                  for name in sorted(field_specs())[:31]}),
     "tuning.hyperparameter_ranges", "at most 30"),
    ("access key id in the environment", edit(BASE, "job.environment", {"KEY_ID": EXAMPLE_KEY_ID}),
     "job.environment.KEY_ID", "access key id"),
    ("secret key in a trainer value", edit(BASE, "trainer.vllm_gpus", EXAMPLE_SECRET),
     "trainer.vllm_gpus", "secret access key"),
    ("access key id inside a URL", edit(BASE, "trainer.vllm_server_url",
                                        f"http://{EXAMPLE_KEY_ID}@host:8000"),
     "trainer.vllm_server_url", "access key id"),
    ("secret-named environment key", edit(BASE, "job.environment", {"HF_TOKEN": "hf_x"}),
     "job.environment.HF_TOKEN", "password, token or secret"),
    ("password environment key", edit(BASE, "job.environment", {"dbPassword": "x"}),
     "job.environment.dbPassword", "password, token or secret"),
    ("access key in a tag", edit(BASE, "job.tags", {"owner": EXAMPLE_KEY_ID}), "job.tags.owner",
     "access key id"),
]


@pytest.mark.parametrize("recipe,key,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_bad_value_is_refused_with_its_key(recipe, key, words):
    problems = check_recipe(recipe, source=SOURCE)
    matching = [p for p in problems if p.key == key]
    assert matching, f"no problem at {key}: {[str(p) for p in problems]}"
    text = " ".join(str(p) for p in matching)
    assert words in text
    for problem in problems:
        line = str(problem)
        assert line.startswith(f"{SOURCE}: ") and "\n" not in line
        assert EXAMPLE_KEY_ID not in line and EXAMPLE_SECRET not in line  # never echoed


def test_bad_rules_are_distinct():
    assert len({b[0] for b in BAD}) == len(BAD) >= 12


def test_a_static_value_for_a_tuned_name_is_replaced_not_refused():
    """Documented decision: the range replaces the static value (docs/validation.md)."""
    recipe = tuned_recipe()
    assert recipe["trainer"]["learning_rate"] == 1e-6
    assert "learning_rate" in recipe["tuning"]["hyperparameter_ranges"]
    assert check_recipe(recipe, source=SOURCE) == []


def test_hyperparameter_count_excludes_tuned_names(monkeypatch):
    import mtgrpo.validate.recipe_rules as rules

    monkeypatch.setattr(rules, "MAX_HYPERPARAMETERS", len(field_specs()) - 1)
    assert [p.key for p in check_recipe(copy.deepcopy(BASE), source=SOURCE)] == ["trainer"]
    assert check_recipe(tuned_recipe(), source=SOURCE) == []  # 3 tuned names leave the count


def test_a_schema_problem_is_reported_once():
    """A plain mapping is typed first: the schema names the bad value, no rule repeats it."""
    recipe = edit(BASE, "trainer.learning_rate", "fast")
    assert [p.key for p in check_recipe(recipe, source=SOURCE)] == ["trainer.learning_rate"]
    from mtgrpo.recipes import recipe_from_data
    typed = recipe_from_data(recipe, source=SOURCE)
    assert typed.problems and check_recipe(typed) == []  # a Recipe's are the loader's to report
    spot = edit(BASE, "job.max_wait", "two days")  # no "spot needs max_wait" on top
    assert [p.key for p in check_recipe(spot, source=SOURCE)] == ["job.max_wait"]


@pytest.mark.parametrize("key,secret", [
    ("AWS_SECRET_ACCESS_KEY", True), ("GITHUB_TOKEN", True), ("api_key", True),
    ("apiKey", True), ("DB_PASSWORD", True), ("client_secret", True), ("passwd", True),
    ("max_tokens_per_turn", False), ("search_max_tokens", False), ("NCCL_DEBUG", False),
    ("TOKENIZERS_PARALLELISM", False), ("keyword", False), ("monkey", False),
])
def test_secret_names(key, secret):
    assert looks_like_secret_name(key) is secret


@pytest.mark.parametrize("value,kind", [
    (EXAMPLE_KEY_ID, "access key id"), ("ASIA" + "Y34FZKBOKMUTVV7A", "access key id"),
    (EXAMPLE_SECRET, "secret access key"),
    ("s3://amzn-s3-demo-bucket/mtgrpo/checkpoints/qwen3-1-7b-p4d-spot", ""),
    ("0123456789abcdef0123456789abcdef01234567", ""),  # a git sha: no upper case
    ("s3://b/datasets/TriviaQA2024/Wikipedia/devs", ""),  # "//b/.../devs": 40 such characters
    ("Qwen/Qwen2.5-1.5B-Instruct", ""), ("http://127.0.0.1:8000", ""),
])
def test_secret_values(value, kind):
    found = looks_like_secret_value(value)
    assert (kind in found) if kind else found == ""


@pytest.mark.parametrize("make", [lambda: copy.deepcopy(BASE), tuned_recipe],
                         ids=["training", "tuning"])
def test_any_misshapen_value_gives_problems_never_an_exception(make):
    """check_recipe also runs on data the loader has not cleaned (library use): never crash."""
    from mtgrpo.errors import Problem

    base = make()
    paths = list(value_paths(base))
    assert len(paths) > 25
    for path in paths:
        for wrong in (None, 7, 2.5, True, "x", [], {}, [1], {"a": None}):
            recipe = copy.deepcopy(base)
            node = recipe
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = wrong
            problems = check_recipe(recipe, source=SOURCE)
            assert all(isinstance(p, Problem) for p in problems), path


def test_built_in_metric_definitions_meet_the_same_rules():
    from mtgrpo.contract import format_metric_line, metric_definitions
    from mtgrpo.validate.recipe_rules import MAX_METRICS, _metric_regex

    ours = metric_definitions()
    assert len(ours) < MAX_METRICS
    line = format_metric_line({m["Name"]: 0.25 for m in ours})
    for m in ours:
        assert _metric_regex(m["Regex"], SOURCE, m["Name"]) == []
        assert 1 <= len(m["Name"]) <= 255
        assert float(re.search(m["Regex"], line).group(1)) == 0.25
