"""How long a step and a job take: the recipe's shape against a per-GPU throughput table.

Standard library only. The table (``throughput.json``) says for each GPU its dense bf16 peak,
its memory bandwidth, the transformers sampler's host cost per decode step and the learner's
MFU, each row naming its source (measured, reported or datasheet-scaled). The model
(docs/plan.md "Time"):

- **episode shape**: the prompt (``NOMINAL_PROMPT_TOKENS``, capped by ``max_prompt_length``),
  then up to ``max_turns`` assistant turns of ``max_tokens_per_turn`` tokens with a tool result
  of ``search_max_tokens`` (+ its chat frame) after every turn but the last, everything capped
  by ``max_completion_length``: every turn uses its whole budget, so the step is an upper
  bound for episodes that answer earlier;
- **rollouts** (lock-step turns over every episode of the step): per turn, every decode step
  moves the weights once plus the KV cache of every row at the card's bandwidth
  (x ``bandwidth_efficiency``) and pays the sampler's host cost per step; the new prompt
  tokens (the first turn's prompt, later the tool result: earlier turns stay in the cache) at
  ``prefill_mfu`` of the peak; plus a fixed
  cost per sampler call. vLLM rollouts on their own GPUs pay ``vllm_step_ms`` per step instead
  and overlap the learner when ``max_staleness`` resolves to 1;
- **learner**: model FLOPs (6 x matmul parameters per token, 6 x hidden x vocab per completion
  token, causal attention; LoRA: 4 instead of 6 for the frozen matmuls) at the row's MFU
  (with or without checkpointing), plus ``micro_batch_s`` for every micro-batch after the
  first, plus a data-parallel gradient all-reduce;
- **job**: ``startup_s`` + one compile per decode graph + ``max_steps`` steps + the
  evaluations (``max_eval_samples`` episodes each) + checkpoint writes.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mtgrpo.plan.shapes import ModelShape

THROUGHPUT_FILE = Path(__file__).with_name("throughput.json")
NOMINAL_PROMPT_TOKENS = 256  # system prompt with the tool schema + a question (~180-260)
RESULT_FRAME_TOKENS = 12  # the chat template's close/open tokens around a tool result
INTER_NODE_GBS = 50.0  # datasheet: 400 Gbit/s EFA of ml.p4d (ml.p5: 3200 Gbit/s, more)
INTRA_NODE_GBS = 300.0  # datasheet-level NVLink all-reduce bus bandwidth


@dataclass(frozen=True)
class GPUThroughput:
    gpu: str
    bf16_tflops: float
    bandwidth_gbs: float
    decode_step_ms: float
    learner_mfu: float
    learner_mfu_no_checkpointing: float
    source: str

    @property
    def kind(self) -> str:
        """measured, reported or datasheet: the first word of the source."""
        return self.source.split(":", 1)[0]


@dataclass(frozen=True)
class ThroughputTable:
    date: str
    defaults: Mapping[str, float]
    gpus: Mapping[str, GPUThroughput]

    def row(self, gpu: str) -> GPUThroughput | None:
        """The catalogue's GPU name (``H100-80GB``, ``A10G``...) to its row: the exact name,
        else the longest row name it starts with."""
        if gpu in self.gpus:
            return self.gpus[gpu]
        names = sorted((n for n in self.gpus if gpu.startswith(n)), key=len, reverse=True)
        return self.gpus[names[0]] if names else None


@functools.lru_cache(maxsize=1)
def load_throughput() -> ThroughputTable:
    data = json.loads(THROUGHPUT_FILE.read_text(encoding="utf-8"))
    defaults = {k: float(v) for k, v in data["defaults"].items() if not k.startswith("_")}
    gpus = {name: GPUThroughput(gpu=name, **row) for name, row in data["gpus"].items()}
    return ThroughputTable(str(data["date"]), defaults, gpus)


@dataclass(frozen=True)
class Turn:
    rows: int  # episodes sampling in this turn
    prompt: int  # tokens before the turn (prompt + earlier turns and results)
    sampled: int  # tokens sampled by each row


def episode_turns(config: Any, prompt_tokens: int | None = None) -> list[Turn]:
    """Per episode, the lock-step turns at full budgets (see the module doc); rows = 1."""
    prompt = min(config.max_prompt_length,
                 NOMINAL_PROMPT_TOKENS if prompt_tokens is None else prompt_tokens)
    left = config.max_completion_length
    context = prompt
    turns = []
    for k in range(config.max_turns):
        sampled = min(config.max_tokens_per_turn, left)
        if sampled <= 0:
            break
        turns.append(Turn(1, context, sampled))
        left -= sampled
        context += sampled
        if k == config.max_turns - 1 or k >= config.max_tool_calls:
            break
        result = min(config.search_max_tokens + RESULT_FRAME_TOKENS, left)
        left -= result
        context += result
    return turns


@dataclass(frozen=True)
class StepTime:
    rollout_s: float
    learner_s: float
    sync_s: float
    step_s: float
    overlapped: bool  # rollouts run beside the learner (max_staleness 1)
    episodes: int  # per step, all GPUs
    sampled_tokens: int  # per step, all GPUs
    learner_tokens: int  # per training GPU
    turns: tuple[Turn, ...]
    gpu: GPUThroughput
    decode_graphs: int  # decode graphs the compiled sampler captures (transformers only)


@dataclass(frozen=True)
class JobTime:
    step: StepTime
    steps: int | None  # None: max_steps is derived from num_epochs and the data
    startup_s: float
    compile_s: float
    eval_s: float
    save_s: float

    @property
    def seconds(self) -> float | None:
        if self.steps is None:
            return None
        return self.startup_s + self.compile_s + self.steps * self.step.step_s + self.eval_s \
            + self.save_s

    @property
    def hours(self) -> float | None:
        return None if self.seconds is None else self.seconds / 3600


def _matmul_params(shape: ModelShape) -> int:
    return shape.layers * sum(a * b for a, b in shape.layer_linear_shapes().values())


def learner_flops(shape: ModelShape, config: Any, turns: list[Turn], episodes: int,
                  lora: bool) -> float:
    """Model FLOPs of one optimizer step on one GPU (``episodes`` episodes)."""
    prompt = turns[0].prompt if turns else 0
    completion = (turns[-1].prompt + turns[-1].sampled - prompt) if turns else 0
    length = prompt + completion
    per_param = 4 if lora else 6  # frozen weights: no weight gradients
    decoder = per_param * _matmul_params(shape) * length
    head = per_param * shape.hidden * shape.vocab * completion
    attention = 6 * shape.layers * shape.heads * shape.head_dim * length ** 2 / 2
    return episodes * (decoder + head + attention)


def rollout_seconds(shape: ModelShape, turns: list[Turn], rows: int, gpu: GPUThroughput,
                    defaults: Mapping[str, float], *, vllm: bool = False,
                    tensor_parallel: int = 1) -> float:
    weights = shape.params * 2 / tensor_parallel
    kvb = shape.kv_bytes_per_token(2) / tensor_parallel
    bandwidth = gpu.bandwidth_gbs * 1e9 * defaults["bandwidth_efficiency"]
    host = (defaults["vllm_step_ms"] if vllm else gpu.decode_step_ms) / 1000
    seconds = 0.0
    done = 0  # tokens of the episode already in the cache
    for t in turns:
        steps = t.sampled
        kv = rows * kvb * (t.prompt * steps + steps * (steps - 1) / 2)
        seconds += (steps * weights + kv) / bandwidth + steps * host
        # Later turns prefill only what is new (the tool result, and the last sampled token,
        # never fed back): the sampler continues the rows in its cache, vLLM caches prefixes.
        new = t.prompt - done
        done = t.prompt + t.sampled - 1
        prefill = 2 * shape.params * rows * new / tensor_parallel
        seconds += prefill / (gpu.bf16_tflops * 1e12 * defaults["prefill_mfu"])
        if not vllm:
            seconds += defaults["sampler_call_s"]
    return seconds


def decode_graphs(config: Any, world_size: int) -> int:
    """Decode graphs the compiled sampler captures over a job: one for the training rollouts
    (every turn decodes the generation batch's rows into one cache of max_prompt_length +
    max_completion_length: TransformersSampler's min_rows and cache_length), one more when
    evaluations decode another number of rows."""
    rows = config.per_device_train_batch_size * config.gradient_accumulation_steps
    eval_rows = math.ceil(config.max_eval_samples / max(world_size, 1))
    evaluates = bool(config.eval_steps) and 0 < config.eval_steps <= max(config.max_steps, 0)
    return 1 + (evaluates and _pow2(eval_rows) != _pow2(rows) and eval_rows > rows)


def _pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def step_time(shape: ModelShape, config: Any, gpu: GPUThroughput,
              defaults: Mapping[str, float], *, world_size: int, hosts: int,
              vllm_gpus: int, lora: bool, prompt_tokens: int | None = None) -> StepTime:
    """One optimizer step of ``config`` on ``world_size`` training GPUs of ``gpu``."""
    per_gpu = config.per_device_train_batch_size * config.gradient_accumulation_steps
    episodes = per_gpu * max(world_size, 1)
    turns = episode_turns(config, prompt_tokens)
    backend = config.generation_backend
    vllm = backend in ("vllm", "vllm_shared")
    if vllm and vllm_gpus:  # a server on its own GPUs samples the whole step's batch
        rollout = rollout_seconds(shape, turns, episodes, gpu, defaults, vllm=True,
                                  tensor_parallel=vllm_gpus)
    else:  # each training process samples its own episodes on its GPU
        rollout = rollout_seconds(shape, turns, per_gpu, gpu, defaults, vllm=vllm)
    mfu = gpu.learner_mfu if config.gradient_checkpointing else gpu.learner_mfu_no_checkpointing
    flops = learner_flops(shape, config, turns, per_gpu, lora)
    learner = flops / (gpu.bf16_tflops * 1e12 * mfu)
    learner += (config.gradient_accumulation_steps - 1) * defaults["micro_batch_s"]
    trainable = 0 if lora else shape.params
    if world_size > 1 and trainable:
        link = INTER_NODE_GBS if hosts > 1 else INTRA_NODE_GBS
        learner += 2 * trainable * 2 * (world_size - 1) / world_size / (link * 1e9)
    sync = 0.0
    if vllm:  # the new weights to the server: bf16 over NVLink/PCIe-class links
        sync = shape.params * 2 / (INTRA_NODE_GBS * 1e9)
    overlapped = vllm and bool(vllm_gpus) and _staleness(config) > 0
    step = max(rollout, learner) + sync if overlapped else rollout + learner + sync
    learner_tokens = per_gpu * ((turns[-1].prompt + turns[-1].sampled) if turns else 0)
    return StepTime(rollout_s=rollout, learner_s=learner, sync_s=sync, step_s=step,
                    overlapped=overlapped, episodes=episodes,
                    sampled_tokens=episodes * sum(t.sampled for t in turns),
                    learner_tokens=learner_tokens, turns=tuple(turns), gpu=gpu,
                    decode_graphs=0 if vllm else decode_graphs(config, world_size))


def _staleness(config: Any) -> int:
    value = getattr(config, "max_staleness", 0)
    if value == -1:  # auto: overlap with a vLLM server of its own only
        return 1 if config.generation_backend == "vllm" else 0
    return value


def job_time(shape: ModelShape, config: Any, gpu_name: str, *, world_size: int, hosts: int,
             vllm_gpus: int, lora: bool, table: ThroughputTable | None = None,
             eval_records: int | None = None) -> JobTime | None:
    """The job's duration at the recipe's ``max_steps``; None for a GPU the table lacks."""
    table = table or load_throughput()
    gpu = table.row(gpu_name)
    if gpu is None:
        return None
    d = table.defaults
    step = step_time(shape, config, gpu, d, world_size=world_size, hosts=hosts,
                     vllm_gpus=vllm_gpus, lora=lora)
    steps = int(config.max_steps) if config.max_steps > 0 else None
    known = steps or 0
    evals = known // config.eval_steps if config.eval_steps else 0
    eval_episodes = config.max_eval_samples if eval_records is None else min(
        eval_records, config.max_eval_samples)
    eval_s = 0.0
    if evals:
        rows = max(1, math.ceil(eval_episodes / max(world_size, 1)))
        eval_s = evals * rollout_seconds(shape, list(step.turns), rows, gpu, d,
                                         vllm=step.decode_graphs == 0)
    saves = known // config.save_steps if config.save_steps else 0
    state_bytes = (shape.params * 2 + (0 if lora else shape.params * 16 // max(world_size, 1)))
    save_s = saves * state_bytes / (d["checkpoint_write_gbs"] * 1e9)
    compile_s = step.decode_graphs * d["first_compile_s"]
    return JobTime(step=step, steps=steps, startup_s=d["startup_s"], compile_s=compile_s,
                   eval_s=eval_s, save_s=save_s)
