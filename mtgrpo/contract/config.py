"""The trainer configuration schema: every hyperparameter, its type, default and help.

This is the one contract between the renderer and the container. The renderer validates a
recipe's ``trainer:`` section with :meth:`TrainerConfig.from_mapping` and renders it with
:meth:`TrainerConfig.to_hyperparameters`; the container parses SageMaker's string map back with
:meth:`TrainerConfig.from_hyperparameters`. A key one side knows and the other does not cannot
exist. Importing this module must stay cheap: standard library only, never torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from mtgrpo.errors import Problem, UserError, did_you_mean

ALGORITHMS = ("mt_grpo", "grpo_or", "grpo_mr")
TOOL_FORMATS = ("xml", "qwen")
GENERATION_BACKENDS = ("vllm", "transformers", "vllm_shared")
WEIGHT_SYNC_BACKENDS = ("auto", "nccl", "reload")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")
SCALE_REWARDS = ("group", "batch", "none")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
DEEPSPEED_STAGES = (0, 2, 3)
MASTER_WEIGHTS = ("auto", "fp32", "bf16_kahan")
LIGER_KERNELS = ("auto", "on", "off")
SAMPLER_COMPILE = ("auto", "on", "off")
INT32 = (-2 ** 31, 2 ** 31 - 1)  # the bounds of an int field that states none


def _f(default: Any, help: str, *, choices: tuple = (), min: float | None = None,
       max: float | None = None, min_exclusive: bool = False, required: bool = False) -> Any:
    """A dataclass field with its help text and bounds kept in ``metadata``."""
    meta = {"help": help, "choices": choices, "min": min, "max": max,
            "min_exclusive": min_exclusive, "required": required}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainerConfig:
    """Hyperparameters of the MT-GRPO trainer.

    Parameters that control the model and data:
        model_name_or_path, train_file, eval_file, corpus_dir, eval_fraction, max_train_samples,
        max_eval_samples, seed.
    Parameters that control optimisation:
        num_epochs, max_steps, learning_rate, per_device_train_batch_size,
        gradient_accumulation_steps, max_grad_norm, weight_decay, warmup_ratio,
        lr_scheduler_type, bf16, gradient_checkpointing, deepspeed_stage.
    Parameters that control GRPO:
        num_generations, beta, epsilon, loss_type, scale_rewards, temperature, top_p,
        max_prompt_length, max_completion_length.
    Parameters that control multi-turn rollouts and credit assignment:
        algorithm, turn_advantage_coef, tool_format, max_turns, max_tool_calls,
        max_tokens_per_turn, search_top_k, search_max_tokens, tool_timeout_s,
        tool_result_max_chars.
    Parameters that control rewards (weight 0 = logged, not optimised):
        reward_tool_execution, reward_answer_in_result, reward_answer_contains,
        reward_exact_match, reward_format, reward_xml_count, reward_f1.
    Parameters that control generation and weight sync:
        generation_backend, vllm_server_url, vllm_request_timeout_s, vllm_startup_timeout_s,
        weight_sync, vllm_gpus, vllm_gpu_memory_utilization, sampler_compile.
    Parameters that control evaluation, logging and checkpoints:
        eval_steps, logging_steps, save_steps, save_total_limit.
    Parameters that control the learner's numerics and kernels:
        master_weights, liger_kernels.
    Parameters that control LoRA (peft adapters instead of full fine-tuning):
        lora_r, lora_alpha, lora_dropout, lora_target_modules.
    Parameters that control the task's plug-ins (docs/tasks.md):
        task_tools, task_rewards, task_parser, task_records.
    Parameters that control the overlap of rollouts and learning (docs/rollouts.md):
        max_staleness, tis_cap.
    Parameters that control a bring-your-own agent (docs/agents.md):
        agent, agent_command, agent_concurrency, agent_timeout_s, agent_port.
    """

    # -- model and data -------------------------------------------------------------------------
    model_name_or_path: str = _f(
        "", "Model to train: a local directory (in a job, the `model` channel wins when present) "
            "or a hub id when the job has network access.", required=True)
    train_file: str = _f(
        "", "Training records (JSONL or parquet with `question` and `answer.aliases` or "
            "`aliases`). Empty: the first .jsonl/.parquet file of the `train` channel.")
    eval_file: str = _f(
        "", "Held-out records scored as `eval_reward`. Empty: the `eval` channel if present, "
            "else `eval_fraction` of the training records.")
    corpus_dir: str = _f(
        "", "Passage corpus directory for `wiki_search`. Empty: the `corpus` channel.")
    eval_fraction: float = _f(
        0.05, "Share of training records held out for evaluation when no eval file is given.",
        min=0.0, max=0.5)
    max_train_samples: int = _f(0, "Use at most this many training records (0 = all).", min=0)
    max_eval_samples: int = _f(64, "Score at most this many eval records per evaluation.", min=1)
    seed: int = _f(42, "Random seed for data order, sampling and initialisation.", min=0)

    # -- optimisation ---------------------------------------------------------------------------
    num_epochs: float = _f(1.0, "Passes over the training records.", min=0.0,
                           min_exclusive=True)
    max_steps: int = _f(-1, "Optimizer steps to run; -1 = derived from num_epochs.", min=-1)
    learning_rate: float = _f(1e-6, "Peak learning rate of AdamW.", min=0.0, max=1.0,
                              min_exclusive=True)
    per_device_train_batch_size: int = _f(
        1, "Completions per device per micro-batch.", min=1)
    gradient_accumulation_steps: int = _f(4, "Micro-batches per optimizer step.", min=1)
    max_grad_norm: float = _f(0.1, "Gradient clipping norm (paper: 0.1).", min=0.0)
    weight_decay: float = _f(0.0, "AdamW weight decay.", min=0.0)
    warmup_ratio: float = _f(0.0, "Share of steps spent warming up the learning rate.",
                             min=0.0, max=1.0)
    lr_scheduler_type: str = _f("constant", "Learning-rate schedule.", choices=LR_SCHEDULERS)
    bf16: bool = _f(True, "Train in bfloat16 mixed precision (ignored on CPU).")
    gradient_checkpointing: bool = _f(True, "Recompute activations in backward to save memory.")
    deepspeed_stage: int = _f(2, "DeepSpeed ZeRO stage for multi-GPU training (0 = off).",
                              choices=DEEPSPEED_STAGES)

    # -- GRPO -----------------------------------------------------------------------------------
    num_generations: int = _f(8, "Completions sampled per prompt (one group; paper: 21).", min=2)
    beta: float = _f(0.0, "KL coefficient against the reference model (paper: 0).", min=0.0)
    epsilon: float = _f(0.2, "PPO-style clipping range of the importance ratio.", min=0.0,
                        min_exclusive=True)
    loss_type: str = _f("grpo", "Loss aggregation, as in TRL's GRPOConfig.", choices=LOSS_TYPES)
    scale_rewards: str = _f("group", "Reward std scaling, as in TRL's GRPOConfig.",
                            choices=SCALE_REWARDS)
    temperature: float = _f(0.9, "Sampling temperature of rollouts (paper: 0.9).", min=0.0,
                            min_exclusive=True)
    top_p: float = _f(1.0, "Nucleus sampling of rollouts.", min=0.0, max=1.0, min_exclusive=True)
    max_prompt_length: int = _f(
        1024, "Prompt tokens at most; a record whose prompt is longer is refused at load.",
        min=1)
    max_completion_length: int = _f(
        1024, "Tokens of the whole multi-turn completion, tool results included.", min=1)

    # -- multi-turn rollouts and credit assignment ----------------------------------------------
    algorithm: str = _f(
        "mt_grpo", "Credit assignment: mt_grpo (turn-level), grpo_or (outcome reward only), "
                   "grpo_mr (merged turn + outcome reward).", choices=ALGORITHMS)
    turn_advantage_coef: float = _f(
        1.0, "lambda: weight of the turn advantage on the first turn's tokens (mt_grpo).",
        min=0.0)
    tool_format: str = _f(
        "xml", "Tool-call format: xml (<reasoning>/<tool>/<result>/<answer>, the paper's) or "
               "qwen (<tool_call> JSON).", choices=TOOL_FORMATS)
    max_turns: int = _f(3, "Assistant turns per episode, the answer turn included.", min=1)
    max_tool_calls: int = _f(2, "Tool calls per episode (paper: 2).", min=0)
    max_tokens_per_turn: int = _f(256, "Sampled tokens per assistant turn.", min=1)
    search_top_k: int = _f(1, "Passages returned by wiki_search.", min=1, max=20)
    search_max_tokens: int = _f(
        256, "Token budget of one tool result, so the answer turn still fits.", min=16)
    tool_timeout_s: float = _f(
        30.0, "A tool call still running after this many seconds becomes a failed call "
              "('Error: ... timed out'; metric tool_timeouts).", min=0.1)
    tool_result_max_chars: int = _f(
        8000, "Characters of a tool result kept, cut before tokenizing with a marker inside "
              "the result's closing tag (metric tool_truncations).", min=64)

    # -- rewards --------------------------------------------------------------------------------
    reward_tool_execution: float = _f(0.2, "Turn reward: share of tool calls that succeeded.")
    reward_answer_in_result: float = _f(0.5, "Turn reward: a gold alias is in a tool result.")
    reward_answer_contains: float = _f(0.5, "Outcome reward: the answer contains a gold alias.")
    reward_exact_match: float = _f(1.0, "Outcome reward: normalised exact match with an alias.")
    reward_format: float = _f(0.2, "Outcome reward: the episode follows the tool format.")
    reward_xml_count: float = _f(0.2, "Outcome reward: well-formed tag counts.")
    reward_f1: float = _f(0.0, "Outcome reward: token F1 against the best alias.")

    # -- generation and weight sync -------------------------------------------------------------
    generation_backend: str = _f(
        "vllm", "Rollout sampler: vllm (server mode on its own GPU), transformers (no vLLM), "
                "or vllm_shared (EXPERIMENTAL, not yet run on a GPU: the vLLM server on the "
                "training GPU, weights through /dev/shm).",
        choices=GENERATION_BACKENDS)
    vllm_server_url: str = _f(
        "http://127.0.0.1:8000", "Base URL of the vLLM OpenAI-compatible server.")
    vllm_request_timeout_s: float = _f(
        300.0, "A vLLM request unanswered this long ends training with an error.", min=1.0)
    vllm_startup_timeout_s: float = _f(
        900.0, "Seconds to wait for the vLLM server's health endpoint.", min=1.0)
    weight_sync: str = _f(
        "auto", "How new weights reach vLLM after each optimizer step: nccl (GPUs), reload "
                "(save + reload_weights; CPU), auto (nccl when CUDA is available).",
        choices=WEIGHT_SYNC_BACKENDS)
    vllm_gpus: str = _f(
        "", "GPUs of the first host given to vLLM, comma-separated (empty: the last GPU).")
    vllm_gpu_memory_utilization: float = _f(
        0.9, "Share of the vLLM GPU's memory it may use.", min=0.0, max=1.0, min_exclusive=True)

    # -- evaluation, logging, checkpoints -------------------------------------------------------
    eval_steps: int = _f(25, "Score the eval split every this many optimizer steps (0 = never).",
                         min=0)
    logging_steps: int = _f(1, "Log metrics every this many optimizer steps.", min=1)
    save_steps: int = _f(50, "Checkpoint every this many optimizer steps.", min=1)
    save_total_limit: int = _f(2, "Checkpoints kept on disk (oldest removed first).", min=1)

    # -- learner numerics and kernels (docs/trainer.md "Precision", docs/performance.md) ----------
    master_weights: str = _f(
        "auto", "Precision the optimizer keeps the weights in, so small updates are not lost in "
                "bf16: fp32 (an fp32 master copy beside the bf16 model, 16 bytes per trainable "
                "parameter with AdamW), bf16_kahan (bf16 weights with Kahan-compensated updates, "
                "10 bytes), auto (fp32 under DeepSpeed, which keeps its own; without it fp32 "
                "when 16 bytes per parameter take at most half the GPU, else bf16_kahan).",
        choices=MASTER_WEIGHTS)
    liger_kernels: str = _f(
        "auto", "Liger's Triton kernels (RoPE, RMSNorm, SwiGLU) in the policy: on, off, auto "
                "(on where CUDA and liger-kernel are available, off on CPU). Its fused linear "
                "cross-entropy is never used: the log-probs come from TRL's fused LM head.",
        choices=LIGER_KERNELS)
    # -- LoRA (peft) ----------------------------------------------------------------------------
    lora_r: int = _f(
        0, "LoRA rank: train peft low-rank adapters instead of every weight (0 = off: full "
           "fine-tuning). Rollouts sample the merged policy; the final model is saved merged.",
        min=0, max=1024)
    lora_alpha: int = _f(32, "LoRA scale numerator: the adapters' update is scaled by "
                             "lora_alpha / lora_r.", min=1)
    lora_dropout: float = _f(
        0.0, "Dropout on the adapters' input in training steps (0: the learner's forward is "
             "the sampler's deterministic policy).", min=0.0, max=0.9)
    lora_target_modules: str = _f(
        "all-linear", "Modules that get adapters: comma-separated module names (e.g. "
                      "q_proj,k_proj,v_proj,o_proj) or all-linear (every linear layer but the "
                      "LM head).")
    # -- task plug-ins (docs/tasks.md; shapes checked by mtgrpo.contract.task_spec) -------------
    task_tools: str = _f(
        "wiki_search", "Tools the agent may call, comma-separated: built-in names (wiki_search) "
                       "or package.module:object paths. Empty: no tools.")
    task_rewards: str = _f(
        "", "Reward functions, comma-separated NAME or NAME=WEIGHT: built-in names "
            "(tool_execution, answer_in_result, answer_contains, exact_match, format, xml_count, "
            "f1; weight default: its reward_* key), triviaqa (all seven), or "
            "package.module:object paths (weight default: the object's). Empty: triviaqa.")
    task_parser: str = _f(
        "", "Tool-call parser: empty (tool_format's), xml, qwen, or a package.module:object path.")
    task_records: str = _f(
        "triviaqa", "Record loader of train/eval files: triviaqa (question + aliases, JSONL or "
                    "parquet) or a package.module:object path.")
    # -- the transformers sampler's decoding (docs/rollouts.md, benchmarks/sampler_gpu.py) -------
    sampler_compile: str = _f(
        "auto", "generation_backend transformers: decode into a static KV cache with a compiled "
                "forward (on), or a dynamic cache uncompiled (off); auto = on where CUDA is "
                "available. On an H200 at the g5 recipe's turn it samples 7.7x faster (4,558 "
                "vs 591 tokens/s) after a first call of about 30 s per new shape.",
        choices=SAMPLER_COMPILE)

    # -- overlap of rollouts and learning (docs/rollouts.md "Overlap") ----------------------------
    max_staleness: int = _f(
        -1, "Policy versions a rollout may lag the learner: 0 = synchronous (sample, then "
            "learn); 1 = the next step's batch is sampled in the background while the learner "
            "trains, with the weights of the step before (generation_backend vllm only); -1 = "
            "auto: 1 with generation_backend vllm, 0 with transformers and vllm_shared (they "
            "sample on the learner's GPU and cannot overlap).",
        min=-1, max=1)
    tis_cap: float = _f(
        2.0, "Cap of the truncated importance weight min(pi_learner / pi_sampler, tis_cap) on "
             "each token of a stale episode (max_staleness 1; current episodes get weight 1).",
        min=1.0)

    # -- bring your own agent (docs/agents.md) --------------------------------------------------
    agent: str = _f(
        "", "An agent to train instead of the built-in tool loop: a package.module:object path "
            "to an async callable agent(base_url, record, make_client) that talks to the "
            "OpenAI-compatible endpoint at base_url and returns the reward, the answer or None. "
            "Empty: the built-in loop.")
    agent_command: str = _f(
        "", "An agent in any language: a command line run once per episode, with the endpoint "
            "in OPENAI_BASE_URL and the record in MTGRPO_RECORD; its last line of output is the "
            "reward or the answer. Empty: none.")
    agent_concurrency: int = _f(32, "Agent episodes run at once.", min=1, max=4096)
    agent_timeout_s: float = _f(
        300.0, "An agent episode running longer is stopped and scored as failed.", min=1.0)
    agent_port: int = _f(
        0, "Port of the agent endpoint on 127.0.0.1 (0 = any free port; with several "
              "training processes, process k of a host uses agent_port + k).", min=0, max=65535)

    def __post_init__(self) -> None:
        problems = [p for f in fields(self) for p in _check_value(f, getattr(self, f.name), "", "")]
        problems += _task_problems(self)
        problems += _cross_field_problems(self, "", "")
        if problems:
            raise UserError(problems)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "",
                     key_prefix: str = "trainer") -> "TrainerConfig":
        """Build from typed values (a recipe's ``trainer:`` section). Reports every problem."""
        problems: list[Problem] = []
        if not isinstance(values, Mapping):
            raise UserError(Problem(source, key_prefix, f"must be a mapping, got "
                                    f"{type(values).__name__}", "a mapping of hyperparameters"))
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            path = f"{key_prefix}.{key}" if key_prefix else str(key)
            if key not in known:
                problems.append(Problem(source, path, "unknown trainer hyperparameter"
                                        + did_you_mean(str(key), known),
                                        "see docs/hyperparameters.md"))
                continue
            converted, problem = _coerce(known[key], value, source, path, strings=False)
            if problem:
                problems.append(problem)
            else:
                kwargs[key] = converted
        for f in known.values():
            path = f"{key_prefix}.{f.name}" if key_prefix else f.name
            if f.metadata["required"] and f.name not in kwargs and not any(
                    p.key == path for p in problems):
                problems.append(Problem(source, path, "required value is missing",
                                        f.metadata["help"]))
        if problems:
            raise UserError(problems)
        return cls._build(kwargs, source, key_prefix)

    @classmethod
    def from_hyperparameters(cls, values: Mapping[str, str], *,
                             source: str = "hyperparameters.json") -> "TrainerConfig":
        """Parse SageMaker's flat string-to-string map back into typed values."""
        problems: list[Problem] = []
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key.startswith("sagemaker_") or key.startswith("_"):
                continue  # set by SageMaker itself (tuning jobs add `_tuning_objective_metric`)
            if key not in known:
                problems.append(Problem(source, key, "unknown trainer hyperparameter"
                                        + did_you_mean(key, known), "see docs/hyperparameters.md"))
                continue
            converted, problem = _coerce(known[key], value, source, key, strings=True)
            if problem:
                problems.append(problem)
            else:
                kwargs[key] = converted
        for f in known.values():
            if f.metadata["required"] and f.name not in kwargs and not any(
                    p.key == f.name for p in problems):
                problems.append(Problem(source, f.name, "required value is missing",
                                        f.metadata["help"]))
        if problems:
            raise UserError(problems)
        return cls._build(kwargs, source, "")

    @classmethod
    def _build(cls, kwargs: dict[str, Any], source: str, key_prefix: str) -> "TrainerConfig":
        try:
            return cls(**kwargs)
        except UserError as err:  # re-label problems raised by __post_init__ with file and path
            raise UserError([Problem(source, f"{key_prefix}.{p.key}" if key_prefix else p.key,
                                     p.message, p.allowed) for p in err.problems]) from None

    # -- output ---------------------------------------------------------------------------------
    def to_hyperparameters(self, *, only: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The SageMaker string map: every field, sorted, each value rendered by its type.

        Every field is rendered (not only the ones a recipe sets), so the container never
        depends on a default that might change between image versions.
        """
        names = sorted(f.name for f in fields(self)) if only is None else sorted(only)
        return {name: format_value(getattr(self, name)) for name in names}

    def replace(self, **changes: Any) -> "TrainerConfig":
        return dataclasses.replace(self, **changes)


# -- helpers ------------------------------------------------------------------------------------

def field_specs() -> dict[str, dataclasses.Field]:
    """Every hyperparameter's dataclass field (type, default, metadata['help'], bounds)."""
    return {f.name: f for f in fields(TrainerConfig)}


def field_type(f: dataclasses.Field) -> type:
    return {"str": str, "int": int, "float": float, "bool": bool}[
        f.type if isinstance(f.type, str) else f.type.__name__]


def format_value(value: Any) -> str:
    """Render a typed value as SageMaker's string: booleans lower-case, floats by repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_value(name: str, text: str) -> Any:
    """Parse one hyperparameter's string (as a tuning job substitutes it) into its type."""
    f = field_specs()[name]
    converted, problem = _coerce(f, text, "", name, strings=True)
    if problem:
        raise UserError(problem)
    return converted


def _allowed(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta["choices"]:
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    kind = field_type(f).__name__
    lo, hi = meta["min"], meta["max"]
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if meta['min_exclusive'] else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{kind} {'>' if meta['min_exclusive'] else '>='} {lo}"
    return {"bool": "true or false", "str": "a string"}.get(kind, kind)


def _coerce(f: dataclasses.Field, value: Any, source: str, path: str,
            *, strings: bool) -> tuple[Any, Problem | None]:
    kind = field_type(f)
    bad = Problem(source, path, f"invalid value {value!r}", _allowed(f))
    if strings:
        if not isinstance(value, str):
            return None, Problem(source, path, f"must be a string, got {type(value).__name__}",
                                 "SageMaker hyperparameters are strings")
        text = value.strip()
        try:
            if kind is bool:
                low = text.lower()
                if low not in ("true", "false", "1", "0"):
                    return None, bad
                return low in ("true", "1"), None
            if kind is int:
                as_float = float(text)
                if not as_float.is_integer():
                    return None, bad
                return int(as_float), None
            if kind is float:
                number = float(text)
                return (number, None) if math.isfinite(number) else (None, bad)
            return value, None
        except ValueError:
            return None, bad
    # Typed values from YAML: no silent conversions between strings, booleans and numbers.
    if kind is bool:
        return (value, None) if isinstance(value, bool) else (None, bad)
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        return None, bad
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value), None
        return None, bad
    if isinstance(value, str):
        return value, None
    return None, Problem(source, path, f"must be a string, got {type(value).__name__}",
                         _allowed(f))


def _check_value(f: dataclasses.Field, value: Any, source: str, prefix: str) -> list[Problem]:
    meta = f.metadata
    path = f"{prefix}.{f.name}" if prefix else f.name
    if meta["choices"] and value not in meta["choices"]:
        return [Problem(source, path, f"invalid value {value!r}", _allowed(f))]
    lo, hi = meta["min"], meta["max"]
    if field_type(f) is int:  # SageMaker and the container's libraries: 32-bit where unsaid
        lo = INT32[0] if lo is None else lo
        hi = INT32[1] if hi is None else hi
    if lo is not None and (value < lo or (meta["min_exclusive"] and value == lo)):
        return [Problem(source, path, f"{value!r} is out of range", _allowed(f)
                        + ("" if meta["min"] is not None else f", at least {lo} (32-bit)"))]
    if hi is not None and value > hi:
        return [Problem(source, path, f"{value!r} is out of range", _allowed(f)
                        + ("" if meta["max"] is not None else f", at most {hi} (32-bit)"))]
    return []


def _cross_field_problems(cfg: TrainerConfig, source: str, prefix: str) -> list[Problem]:
    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    problems = []
    if cfg.max_tokens_per_turn > cfg.max_completion_length:
        problems.append(Problem(source, key("max_tokens_per_turn"),
                                f"{cfg.max_tokens_per_turn} exceeds max_completion_length "
                                f"{cfg.max_completion_length}",
                                "max_tokens_per_turn <= max_completion_length"))
    if cfg.max_tool_calls >= cfg.max_turns and cfg.max_tool_calls > 0:
        problems.append(Problem(source, key("max_tool_calls"),
                                f"{cfg.max_tool_calls} tool calls leave no turn to answer in "
                                f"max_turns {cfg.max_turns}", "max_tool_calls < max_turns"))
    # -- vllm_shared (sampler helper) --
    if cfg.generation_backend == "vllm_shared" and cfg.weight_sync == "nccl":
        problems.append(Problem(source, key("weight_sync"),
                                "nccl cannot pair two processes on one GPU (generation_backend "
                                "vllm_shared)", "reload or auto"))
    problems += _lora_problems(cfg, source, key)
    # -- overlap (max_staleness) --
    if cfg.max_staleness > 0 and cfg.generation_backend != "vllm":
        problems.append(Problem(source, key("max_staleness"),
                                f"{cfg.max_staleness} needs the sampler on its own server; "
                                f"generation_backend {cfg.generation_backend} shares the "
                                "learner's GPU", "0 or -1 (auto), or generation_backend: vllm"))
    problems += _agent_problems(cfg, source, key)
    return problems


def _agent_problems(cfg: TrainerConfig, source: str, key) -> list[Problem]:
    from mtgrpo.agents.loading import agent_problems

    problems = [Problem(p.file, key(p.key), p.message, p.allowed)
                for p in agent_problems(cfg, source)]
    if (cfg.agent or cfg.agent_command) and cfg.max_staleness > 0:
        problems.append(Problem(source, key("max_staleness"),
                                f"{cfg.max_staleness} is not supported with an agent "
                                "(agent episodes are sampled synchronously)", "0 or -1 (auto)"))
    return problems


def resolved_staleness(cfg: TrainerConfig, *, injected_sampler: bool = False) -> int:
    """``max_staleness`` as the run uses it: auto (-1) overlaps (1) only where the sampler is the
    vLLM server of ``generation_backend: vllm``, which returns the token log-probs the
    importance weights need and runs apart from the learner; otherwise (transformers,
    vllm_shared, or a sampler handed to ``train.run`` by a test or benchmark) it is synchronous
    (0). An explicit 0 or 1 is used as given."""
    if cfg.max_staleness >= 0:
        return cfg.max_staleness
    agent = bool(cfg.agent or cfg.agent_command)  # agent episodes: synchronous (docs/agents.md)
    return int(cfg.generation_backend == "vllm" and not injected_sampler and not agent)


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def lora_target_list(text: str) -> list[str]:
    """``lora_target_modules`` as peft's ``target_modules`` entries (comma-separated names)."""
    return [part.strip() for part in text.split(",")]


def _lora_problems(cfg: TrainerConfig, source: str, key) -> list[Problem]:
    problems = []
    targets = lora_target_list(cfg.lora_target_modules)
    if targets != ["all-linear"] and not all(_MODULE_NAME.match(t) for t in targets):
        problems.append(Problem(source, key("lora_target_modules"),
                                f"invalid value {cfg.lora_target_modules!r}",
                                "all-linear, or comma-separated module names such as "
                                "q_proj,v_proj"))
    if cfg.lora_r > 0 and cfg.deepspeed_stage:
        # ZeRO-2 shards only gradients and optimizer state, which LoRA makes tiny; ZeRO-3 would
        # shard the frozen base, which the merged weight push and save do not gather (not run).
        problems.append(Problem(source, key("deepspeed_stage"),
                                f"DeepSpeed ZeRO-{cfg.deepspeed_stage} with LoRA (lora_r "
                                f"{cfg.lora_r}) is not supported",
                                "deepspeed_stage: 0 with lora_r > 0 (or lora_r: 0)"))
    return problems


def _task_problems(cfg: TrainerConfig) -> list[Problem]:
    """The ``task_*`` keys' shapes: known built-in names or well-formed paths, valid weights."""
    from mtgrpo.contract.task_spec import KINDS, task_problems

    return task_problems({k: getattr(cfg, k) for k in KINDS})
