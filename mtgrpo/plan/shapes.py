"""Model shapes: the numbers the planner needs, from a ``config.json`` or the shipped table.

A shape comes, in this order, from: a local model directory (``model_name_or_path`` when it is
one, or a directory given on the command line) holding ``config.json``; else the table below,
matched by the hub id or by its last path component (so the model channel's S3 prefix
``s3://.../models/Qwen3-1.7B`` finds ``Qwen/Qwen3-1.7B``). Nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer (Llama / Qwen2 / Qwen3 family)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    attention_bias: bool = False  # Qwen2: q, k and v projections carry a bias
    qk_norm: bool = False  # Qwen3: RMSNorm over each head's q and k
    max_position: int = 32768

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear module of one decoder layer, by its module name."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_params(self) -> int:
        linear = sum(a * b for a, b in self.layer_linear_shapes().values())
        bias = (self.q_dim + 2 * self.kv_dim) if self.attention_bias else 0
        norms = 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return linear + bias + norms

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """All parameters, a tied LM head counted once (as ``model.parameters()`` yields them)."""
        head = 0 if self.tied_embeddings else self.embedding_params
        return self.embedding_params + head + self.layers * self.layer_params + self.hidden

    @property
    def largest_layer_params(self) -> int:
        """The largest single module (DeepSpeed's ``largest_layer_params``): the embedding."""
        return max(self.embedding_params, max(a * b for a, b in
                                              self.layer_linear_shapes().values()))

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V of every layer for one token."""
        return 2 * self.layers * self.kv_dim * dtype_bytes


def _shape(name: str, **kw: Any) -> ModelShape:
    return ModelShape(name=name, **kw)


# Values from each model's config.json on the Hugging Face hub.
KNOWN_SHAPES: dict[str, ModelShape] = {s.name: s for s in (
    _shape("Qwen/Qwen2.5-0.5B-Instruct", hidden=896, layers=24, heads=14, kv_heads=2,
           head_dim=64, intermediate=4864, vocab=151936, tied_embeddings=True,
           attention_bias=True, max_position=32768),
    _shape("Qwen/Qwen2.5-1.5B-Instruct", hidden=1536, layers=28, heads=12, kv_heads=2,
           head_dim=128, intermediate=8960, vocab=151936, tied_embeddings=True,
           attention_bias=True, max_position=32768),
    _shape("Qwen/Qwen2.5-7B-Instruct", hidden=3584, layers=28, heads=28, kv_heads=4,
           head_dim=128, intermediate=18944, vocab=152064, tied_embeddings=False,
           attention_bias=True, max_position=32768),
    _shape("Qwen/Qwen3-1.7B", hidden=2048, layers=28, heads=16, kv_heads=8, head_dim=128,
           intermediate=6144, vocab=151936, tied_embeddings=True, qk_norm=True,
           max_position=40960),
    _shape("Qwen/Qwen3-8B", hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128,
           intermediate=12288, vocab=151936, tied_embeddings=False, qk_norm=True,
           max_position=40960),
    _shape("meta-llama/Llama-3.1-8B-Instruct", hidden=4096, layers=32, heads=32, kv_heads=8,
           head_dim=128, intermediate=14336, vocab=128256, tied_embeddings=False,
           max_position=131072),
)}
# The base models share their instruct variant's shape.
for _base in ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-7B"):
    KNOWN_SHAPES[_base] = replace(KNOWN_SHAPES[_base + "-Instruct"], name=_base)
KNOWN_SHAPES["meta-llama/Llama-3.1-8B"] = replace(
    KNOWN_SHAPES["meta-llama/Llama-3.1-8B-Instruct"], name="meta-llama/Llama-3.1-8B")


def from_config(config: Mapping[str, Any], name: str) -> ModelShape:
    """A shape from a transformers ``config.json`` mapping (text config of multimodal ones)."""
    cfg = config.get("text_config") or config
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    model_type = str(cfg.get("model_type", config.get("model_type", "")))
    return ModelShape(
        name=name, hidden=hidden, layers=int(cfg["num_hidden_layers"]), heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
        vocab=int(cfg["vocab_size"]),
        tied_embeddings=bool(config.get("tie_word_embeddings",
                                        cfg.get("tie_word_embeddings", False))),
        attention_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
        qk_norm=model_type.startswith("qwen3"),
        max_position=int(cfg.get("max_position_embeddings") or 32768))


def load_shape(directory: str | Path) -> ModelShape | None:
    """The shape of a local model directory, or None when it has no readable config.json."""
    path = Path(directory) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return from_config(data, str(directory))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_shape(model: str, *, root: Path | None = None, model_dir: Path | None = None,
                  channel_uri: str | None = None) -> ModelShape | None:
    """The shape of ``model`` (a recipe's ``model_name_or_path``), or None when unknown.

    ``model_dir`` (a local copy of the model channel) wins; then ``model`` as a local directory
    (absolute, or relative to ``root``); then the table by hub id, by the id's last component
    or by the model channel's last path component.
    """
    for directory in (model_dir, Path(model) if model else None,
                      (root / model) if root is not None and model else None):
        if directory is not None and (Path(directory) / "config.json").is_file():
            found = load_shape(directory)
            if found is not None:
                return found
    if model in KNOWN_SHAPES:
        return KNOWN_SHAPES[model]
    by_tail = {name.rsplit("/", 1)[-1]: shape for name, shape in KNOWN_SHAPES.items()}
    for candidate in (model, channel_uri or ""):
        tail = candidate.rstrip("/").rsplit("/", 1)[-1]
        if tail in by_tail:
            return by_tail[tail]
    return None
