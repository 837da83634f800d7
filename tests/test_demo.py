"""The shipped warm model of the local demo (``mtgrpo/testing/warm_model``, SOURCE.md): it loads
offline, its tokenizer is the tiny model's that the task, tests and recipes use, it is the tiny
model's shape, small, and the wheel ships every file of it (no vLLM: the demo itself is
``python -m mtgrpo.testing.demo``, docs/trainer.md)."""

from __future__ import annotations

import json

import pytest

from mtgrpo.testing.demo import REBUILD_COMMAND, WARM_MODEL, main
from tests.renderkit import REPO

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mtgrpo.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def test_the_warm_model_is_small_and_documented():
    files = {p.name: p.stat().st_size for p in WARM_MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "SOURCE.md"} <= set(files)
    assert sum(files.values()) < 5 * 2**20, files
    assert REBUILD_COMMAND in (WARM_MODEL / "SOURCE.md").read_text(encoding="utf-8")


def test_the_warm_model_has_the_tiny_tokenizer_and_shape(tiny):
    """The warm start saves the tokenizer back as transformers loads it (a ``Qwen2Tokenizer``
    that spells the pre-tokenizer out), so the files differ from ``build_tiny_model``'s but
    load to the same tokenizer: the same ids on the whole task, prompts and tool calls."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from mtgrpo.testing.synthetic import write_task

    assert (WARM_MODEL / "chat_template.jinja").read_bytes() == (
        tiny / "chat_template.jinja").read_bytes()
    shipped, built = (AutoTokenizer.from_pretrained(d, local_files_only=True)
                      for d in (WARM_MODEL, tiny))
    assert shipped.backend_tokenizer.to_str() == built.backend_tokenizer.to_str()
    assert (shipped.eos_token, shipped.pad_token, len(shipped)) == (
        built.eos_token, built.pad_token, len(built))
    task = write_task(tiny.parent / "task")
    text = shipped.apply_chat_template(
        [{"role": "user", "content": "What is the code of bravo?"}], tokenize=False,
        add_generation_prompt=True) + '<tool> {"name": "wiki_search"} </tool>\n' + "".join(
        p.read_text(encoding="utf-8") for p in sorted(task.rglob("*.jsonl")))
    raw = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    assert shipped(text).input_ids == built(text).input_ids == raw.encode(text).ids
    ours, theirs = (json.loads((d / "config.json").read_text()) for d in (WARM_MODEL, tiny))
    keys = ("architectures", "vocab_size", "hidden_size", "intermediate_size",
            "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "tie_word_embeddings", "eos_token_id", "pad_token_id")
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}


def test_the_warm_model_loads_offline_and_is_not_the_random_one(tiny, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    warm, random = (AutoModelForCausalLM.from_pretrained(d, local_files_only=True,
                                                         dtype=torch.float32)
                    for d in (WARM_MODEL, tiny))
    assert next(warm.parameters()).dtype == torch.float32
    weights = dict(random.named_parameters())
    for name, tensor in warm.named_parameters():
        assert tensor.shape == weights[name].shape and torch.isfinite(tensor).all(), name
    assert any(not torch.equal(t, weights[n]) for n, t in warm.named_parameters())


def test_the_package_data_holds_every_warm_model_file():
    """setuptools' ``package-data`` globs (relative to each package directory, ``*`` within one
    directory) cover every file of the warm model, so an installed wheel runs the demo too."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"].get("*", []) + data["package-data"].get("mtgrpo.testing", [])
    package = REPO / "mtgrpo" / "testing"
    packaged = {path for pattern in patterns for path in package.glob(pattern)}
    missing = sorted(p.name for p in WARM_MODEL.iterdir() if p not in packaged)
    assert not missing


def test_the_demo_asks_for_an_output_or_a_rebuild(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "--output is required" in capsys.readouterr().err
