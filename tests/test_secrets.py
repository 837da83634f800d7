"""Secrets never reach Git: a corpus of real-looking but fake credentials, each refused by
`mtgrpo validate` wherever a recipe puts it (trainer keys, environment, tags, the kubeflow
section), in one line that names the key and never shows the value; and near misses that are
not secrets pass. The tokens are assembled from parts so this file holds none whole."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mtgrpo.cli import main
from mtgrpo.validate.secrets import SHAPES, find_secrets, looks_like_secret_name, \
    looks_like_secret_value
from tests.renderkit import REPO, copy_project

R = "Xk9pQ2mZr7Lw4Tb8Vn3Hc6Jd1Fg5Sy0AeUqW"  # 36 random-looking letters and digits

TOKENS = {
    "an AWS access key id": "AKIA" + "QYLPMN5HFAKEFAKE",
    "an AWS secret access key": "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYFAKEKEY123",
    "a Hugging Face token": "hf_" + R,
    "a GitHub token": "ghp_" + R + "ab",
    "a GitHub fine-grained token": "github_pat_" + "11ABCDEFG0" + "_" + R,
    "an OpenAI or Anthropic API key": "sk-" + "proj-" + R + "-" + R[:10],
    "a Slack token": "xoxb-" + "1234567890-0987654321-" + R[:24],
    "a JSON Web Token": "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0." + R[:22],
    "a private key (PEM block)": "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow" + R,
    "a URL with a password": "https://alice:" + "Tr0ub4dor3@" + "mlflow.example.com/",
    "an HTTP bearer token": "Authorization: Bearer " + R,
}
LEGACY_OPENAI = "sk-" + R + R[:14]
NOT_SECRETS = [
    "Qwen/Qwen3-1.7B", "sk-learn", "sk-learn-compatible-scikit-module-name",
    "s3://amzn-s3-demo-bucket/mtgrpo/checkpoints/Qwen3-1.7B/abcdefgh01234567",
    "https://mlflow.example.com:5000/", "https://alice:${MLFLOW_PASSWORD}@mlflow.example.com",
    "0123456789abcdef0123456789abcdef01234567",  # a hex digest (40 characters)
    "sha256:" + "ab" * 32, "hf_transfer", "ghp_short", "eyJshort.eyJ", "tokenizer",
    "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole-20240101T000000",
]


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_each_shape_is_named(kind):
    assert looks_like_secret_value(TOKENS[kind]) == kind
    assert looks_like_secret_value(f"prefix {TOKENS[kind]} suffix") == kind  # inside a string


def test_a_legacy_openai_key_and_the_shape_list():
    assert looks_like_secret_value(LEGACY_OPENAI) == "an OpenAI or Anthropic API key"
    assert set(TOKENS) <= {s.kind for s in SHAPES}


@pytest.mark.parametrize("value", NOT_SECRETS)
def test_near_misses_pass(value):
    assert looks_like_secret_value(value) == ""


def test_error_lines_redact_what_they_echo():
    from mtgrpo.errors import Problem

    line = str(Problem("f.yaml", "k", f"invalid value {TOKENS['a Hugging Face token']!r}"))
    assert R not in line and "'hf_X...[redacted]'" in line


def test_names():
    for name in ("HF_TOKEN", "GITHUB_PAT", "hubApiKey", "OPENAI_API_KEY", "db_password",
                 "SENTRY_DSN", "client-secret"):
        assert looks_like_secret_name(name), name
    for name in ("max_tokens", "max_completion_tokens", "tokenizer_name", "keep_alive",
                 "pattern", "HF_HOME"):
        assert not looks_like_secret_name(name), name


def test_names_of_tags_and_pod_env_entries():
    found = find_secrets({"tags": [{"Key": "slack_token", "Value": "x"}],
                          "env": [{"name": "HF_TOKEN", "value": "x"}],
                          "labels": {"api_key": "x"}}, "f.yaml")
    assert sorted(p.key for p in found) == ["env[0]", "labels.api_key", "tags[0]"]


# -- through `mtgrpo validate` -------------------------------------------------------------------

PLACES = {
    "trainer": lambda t: {"trainer": {"max_steps": 10, "model_name_or_path": t}},
    "environment": lambda t: {"job": {"max_run": 3600, "environment": {"NOTE": t}}},
    "tags": lambda t: {"job": {"max_run": 3600, "tags": [{"Key": "note", "Value": t}]}},
    "kubeflow": lambda t: {"kubeflow": {"node_selector": {"pool": t}}},
}
KEYS = {"trainer": "trainer.model_name_or_path", "environment": "job.environment.NOTE",
        "tags": "job.tags[0].Value", "kubeflow": "kubeflow.node_selector.pool"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("repo"), rendered=False)


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_validate_refuses_every_shape_everywhere_without_echoing_it(project, capsys, kind,
                                                                    place):
    token = TOKENS[kind]
    body = {"name": "leak", "extends": "qwen3-1-7b-kubeflow.yaml" if place == "kubeflow"
            else "base/qwen2-5-1-5b-g5.yaml", **PLACES[place](token)}
    path = project / "recipes" / "leak.yaml"
    path.write_text(json.dumps(body), encoding="utf-8")
    assert main(["validate", "--root", str(project), str(path)]) == 1
    err = capsys.readouterr().err
    assert f": {KEYS[place]}: the value looks like {kind} (not shown)" in err, err
    # Nothing of the secret beyond a few characters is echoed, anywhere in the output (other
    # checks of the same value, such as a label's syntax, show it redacted).
    for piece in re.findall(r"[A-Za-z0-9]{8,}", token.split("-----")[-1]):
        assert piece not in err or piece in ("PRIVATE", "Authorization", "mlflow"), piece


def test_a_secret_named_environment_variable_is_refused(project, capsys):
    body = {"name": "leak", "extends": "base/qwen2-5-1-5b-g5.yaml",
            "job": {"max_run": 3600, "environment": {"HF_TOKEN": "placeholder"}}}
    path = project / "recipes" / "leak.yaml"
    path.write_text(json.dumps(body), encoding="utf-8")
    assert main(["validate", "--root", str(project), str(path)]) == 1
    err = capsys.readouterr().err
    assert "job.environment.HF_TOKEN: a key named like a password" in err
    assert "placeholder" not in err


def test_shipped_recipes_have_no_secret(capsys):
    recipes = sorted(str(p) for p in (REPO / "recipes").glob("*.yaml")
                     if not p.name.startswith("_"))
    assert main(["validate", "--root", str(REPO), *recipes]) == 0, capsys.readouterr().err
