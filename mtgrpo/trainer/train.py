"""The training entry point shared by ``mtgrpo train`` and the SageMaker container: ``run``.

``run(config, paths)`` builds the tokenizer and model, the task's plug-ins (tools, parser,
rewards, record loader: ``task_*`` keys), the data, the environment, the sampler and the weight sync; maps the TrainerConfig onto TRL's GRPOConfig;
trains with MTGRPOTrainer (resuming from the newest complete checkpoint); saves the final model
with its tokenizer to ``paths.model_dir``; scores the held-out split once more and writes
``eval_summary.json`` to ``paths.output_dir``; returns a summary dict.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from mtgrpo.contract import TrainerConfig
from mtgrpo.contract.config import resolved_staleness
from mtgrpo.errors import Problem, UserError
from mtgrpo.trainer.paths import RunPaths

logger = logging.getLogger(__name__)



def newest_complete_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The highest-step complete ``checkpoint-N`` directory: the one rule of
    :mod:`mtgrpo.contract.checkpoints` (every node's marker, every file it lists), the same
    the launcher and the S3 resume use. ``run`` commits every checkpoint it saves."""
    from mtgrpo.contract.checkpoints import newest_complete

    return newest_complete(Path(checkpoint_dir))


def checkpoint_step(checkpoint: str | Path) -> int:
    """The global step a complete checkpoint was saved at (its ``trainer_state.json``)."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state.get("global_step") or 0)


def check_batch_shape(config: TrainerConfig, world_size: int, *, source: str = "") -> None:
    """GRPO needs whole prompt groups in a generation batch; say which keys to change if not."""
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps * world_size
    if batch % config.num_generations:
        raise UserError(Problem(
            source, "trainer.num_generations",
            f"{config.num_generations} does not divide the generation batch of {batch} completions "
            f"(per_device_train_batch_size {config.per_device_train_batch_size} x "
            f"gradient_accumulation_steps {config.gradient_accumulation_steps} x {world_size} "
            "process(es))", "a divisor of that product; or raise gradient_accumulation_steps"))


def grpo_args(config: TrainerConfig, paths: RunPaths, *, world_size: int = 1,
              use_cuda: bool | None = None, evaluate: bool = True):
    """TRL's GRPOConfig for this TrainerConfig (rollouts live in rollout_func: use_vllm=False).

    ``evaluate=False`` (no held-out records) turns periodic evaluation off.
    """
    import torch
    from trl import GRPOConfig

    check_batch_shape(config, world_size)
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    deepspeed = _deepspeed_config(config) if cuda and world_size > 1 and config.deepspeed_stage \
        else None
    return GRPOConfig(
        output_dir=str(paths.checkpoint_dir),
        seed=config.seed,
        data_seed=config.seed,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm,
        weight_decay=config.weight_decay,
        # transformers 5 reads a float in [0, 1) as the warm-up share of all steps
        warmup_steps=min(float(config.warmup_ratio), 0.9999),
        lr_scheduler_type=config.lr_scheduler_type,
        bf16=bool(config.bf16 and cuda),
        gradient_checkpointing=bool(config.gradient_checkpointing and cuda),
        deepspeed=deepspeed,
        use_cpu=not cuda,
        # GRPO
        num_generations=config.num_generations,
        num_generations_eval=1,
        beta=config.beta,
        epsilon=config.epsilon,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        temperature=config.temperature,
        top_p=config.top_p,
        max_completion_length=config.max_completion_length,
        mask_truncated_completions=False,
        use_vllm=False,  # FACTS 4: the rollout_func talks to vLLM over HTTP; we sync weights
        # evaluation, logging, checkpoints
        eval_strategy="steps" if config.eval_steps and evaluate else "no",
        eval_steps=(config.eval_steps or None) if evaluate else None,
        per_device_eval_batch_size=1,
        logging_steps=config.logging_steps,
        logging_first_step=False,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def _deepspeed_config(config: TrainerConfig) -> dict:
    """The shipped ZeRO config of the stage: the same file the launcher gives accelerate.

    The Trainer's own DeepSpeed argument wins over accelerate's, so it must be the same
    settings; ZeRO-3 needs ``stage3_gather_16bit_weights_on_model_save`` from that file, or the
    final model is saved as sharded DeepSpeed state instead of loadable safetensors.
    """
    from mtgrpo.sagemaker.launcher import DEEPSPEED_CONFIGS

    return json.loads(DEEPSPEED_CONFIGS[config.deepspeed_stage].read_text(encoding="utf-8"))


def _load_model(config: TrainerConfig, model_path: str, *, use_cuda: bool | None = None):
    """Tokenizer and model: bf16 weights with ``bf16`` on CUDA (the optimizer keeps the
    precision ``master_weights`` says, see master_weights.py), else fp32; Liger's kernels
    applied when ``liger_kernels`` resolves to on (before any peft wrapping, see liger.py)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.trainer import liger

    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    kernels = liger.resolve(config.liger_kernels, cuda=cuda)  # "on" where unavailable: stop now
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if (config.bf16 and cuda) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    applied = liger.apply(model, required=config.liger_kernels == "on") if kernels else []
    model.mtgrpo_liger_kernels = applied  # read back into the start line and the summary
    return tokenizer, model


def learner_settings(model, trainer) -> str:
    """The start-up line: which kernels and which optimizer precision this run uses."""
    applied = getattr(model, "mtgrpo_liger_kernels", [])
    liger = f"on ({', '.join(applied)})" if applied else "off"
    weights = trainer.master_weights
    return f"liger kernels: {liger}; master weights: {weights.name} ({weights.how})"


def rollout_mode(config: TrainerConfig) -> str:
    """The start-up line of the rollout schedule (``max_staleness`` resolved)."""
    if config.max_staleness:
        return ("rollouts: overlapped with learning (max_staleness 1: sampled one policy "
                f"version behind, truncated importance weights, tis_cap {config.tis_cap:g})")
    return "rollouts: synchronous (max_staleness 0)"


def _records(config: TrainerConfig, paths: RunPaths, load_records=None):
    """Train and eval records, read by the task's record loader (default: TriviaQA's)."""
    from mtgrpo.trainer.data import split_eval

    if load_records is None:
        from mtgrpo.trainer.data import load_records
    train = _loaded(load_records, paths.train_file)
    if paths.eval_file is not None:
        evals = _loaded(load_records, paths.eval_file)
    elif config.eval_fraction > 0:
        train, evals = split_eval(train, config.eval_fraction, config.seed)
    else:
        evals = []
    if config.max_train_samples:
        train = train[: config.max_train_samples]
    if not train:
        raise UserError(Problem(str(paths.train_file), "", "no training records",
                                "JSONL or parquet rows with question and aliases"))
    return list(train), list(evals)[: config.max_eval_samples]


def _loaded(load_records, path) -> list:
    """A record loader's records, checked: a plug-in's mistake is one line naming the file."""
    from mtgrpo.trainer.types import QARecord

    try:
        records = list(load_records(Path(path)))
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a loader plug-in's failure, reported as one line
        raise UserError(Problem(str(path), "", f"the record loader failed "
                                f"({type(err).__name__}: {err})", "see task_records")) from None
    bad = next((r for r in records if not isinstance(r, QARecord)), None)
    if bad is not None:
        raise UserError(Problem(str(path), "", f"the record loader gave a "
                                f"{type(bad).__name__}, not a Record", "mtgrpo.task.Record "
                                "objects (task_records)"))
    return records


def build_components(config: TrainerConfig, paths: RunPaths, tokenizer, model, *,
                     sampler=None, parser=None, scorer=None, task=None) -> dict[str, Any]:
    """Tools, parser, environment, sampler, scorer and weight sync for one run.

    ``task``: the loaded plug-ins (:func:`mtgrpo.task.loading.load_task`); default: loaded
    from the config's ``task_*`` keys, with ``parser`` (when given) as the task's parser.
    """
    import torch

    from mtgrpo.task.loading import load_task
    from mtgrpo.trainer.environment import ToolEnvironment

    if task is None:
        task = load_task(config, paths, tokenizer, parser=parser)
    parser = task.parser
    environment = ToolEnvironment.from_config(config, tokenizer, task.tools, parser=parser)
    weight_sync = None
    if sampler is None:
        if config.generation_backend in ("vllm", "vllm_shared"):
            from mtgrpo.rollout.sampler import VLLMSampler
            from mtgrpo.rollout.weight_sync import make_weight_sync

            # No sampler logprobs in the synchronous loop: its loss never reads them (no
            # importance-sampling correction), and they cost the server ~25% of its time. The
            # overlap (max_staleness > 0) corrects stale episodes with them.
            sampler = VLLMSampler(config.vllm_server_url, None, config.vllm_request_timeout_s,
                                  logprobs=config.max_staleness > 0)
            weight_sync = make_weight_sync(config)
        else:
            from mtgrpo.rollout.sampler import TransformersSampler

            # The live policy: always on-policy. No sampler logprobs, as with vLLM above.
            compiled = config.sampler_compile == "on" or (
                config.sampler_compile == "auto" and torch.cuda.is_available())
            sampler = TransformersSampler(model, tokenizer, logprobs=False,
                                          cache="static" if compiled else "dynamic",
                                          compile=compiled)

    clock = None
    if config.max_staleness > 0:  # rollouts in a background thread: versions and cancel
        from mtgrpo.trainer.overlap import PolicyClock, VersionedSampler

        clock = PolicyClock()
        sampler = VersionedSampler(sampler, clock)

    def rollout(records):
        return environment.rollout_sync(records, 1, sampler)

    return {"environment": environment, "sampler": sampler, "parser": parser,
            "scorer": scorer or task.score, "rollout": rollout, "weight_sync": weight_sync,
            "task": task, "policy_clock": clock}


def run(config: TrainerConfig, paths: RunPaths, *, callbacks: Sequence[Any] = (),
        resume: bool = True, sampler=None, parser=None, scorer=None,
        on_trainer: Callable[[Any], None] | None = None,
        source: str = "") -> dict[str, Any]:
    """Train, save the final model to ``paths.model_dir`` and return a summary.

    callbacks: extra ``transformers.TrainerCallback``s, run after the built-in ones (weight
        sync, metrics). A callback with a ``bind(trainer)`` method gets the trainer before
        training starts, e.g. to call ``trainer.request_save_and_stop()`` on SIGTERM.
    resume: continue from the newest complete checkpoint in ``paths.checkpoint_dir``.
    sampler: a ready sampler (tests, benchmarks); default: from ``generation_backend``.
    parser / scorer: a tool-call parser and an ``episode -> RewardBreakdown`` that replace the
        task's (tests); default: the plug-ins the config's ``task_*`` keys name (docs/tasks.md).
    on_trainer: called with the trainer once it is built (tests and the SageMaker entry).
    source: the file the config came from, named in plug-in loading errors.
    """
    import torch
    from accelerate import PartialState
    from transformers import set_seed

    from mtgrpo.trainer import liger
    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer, WeightSyncCallback
    from mtgrpo.trainer.lora import apply_lora
    from mtgrpo.trainer.metrics_log import MetricsLogger
    from mtgrpo.trainer.tensorboard_log import EVENTS_DIR

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental
    # TRL 1.16 warns about any vLLM newer than 0.31 at import; we never use its vLLM client.
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
    started = time.perf_counter()
    world_size = PartialState().num_processes
    check_batch_shape(config, world_size)
    # max_staleness -1 (auto) becomes 1 or 0 here, before anything reads it.
    config = config.replace(max_staleness=resolved_staleness(
        config, injected_sampler=sampler is not None))
    liger.resolve(config.liger_kernels, cuda=torch.cuda.is_available())  # before any output
    set_seed(config.seed)
    for d in (paths.output_dir, paths.model_dir, paths.checkpoint_dir):
        Path(d).mkdir(parents=True, exist_ok=True)

    tokenizer, model = _load_model(config, paths.model)
    model = apply_lora(model, config)  # a peft model when lora_r > 0, else unchanged
    from mtgrpo.task.loading import load_task

    task = load_task(config, paths, tokenizer, parser=parser, source=source)
    try:
        train_records, eval_records = _records(config, paths, task.load_records)
    except BaseException:
        task.close()
        raise
    parts = build_components(config, paths, tokenizer, model, sampler=sampler, scorer=scorer,
                             task=task)
    try:
        trainer = MTGRPOTrainer(
            model, grpo_args(config, paths, world_size=world_size, evaluate=bool(eval_records)),
            processing_class=tokenizer,
            config=config, train_records=train_records, eval_records=eval_records,
            rollout=parts["rollout"], scorer=parts["scorer"], policy_clock=parts["policy_clock"])
        if trainer.accelerator.is_main_process:  # stdout, as the metric lines: the job log shows it
            print(f"mtgrpo: {learner_settings(model, trainer)}", flush=True)
            print(f"mtgrpo: {rollout_mode(config)}", flush=True)
        if parts["weight_sync"] is not None:
            trainer.add_callback(WeightSyncCallback(trainer, parts["weight_sync"].push))
        trainer.add_callback(MetricsLogger(Path(paths.output_dir) / "metrics.jsonl",
                                           events_dir=Path(paths.output_dir) / EVENTS_DIR))
        if not any(getattr(cb, "commits_checkpoints", False) for cb in callbacks):
            # Without the job's own callback (a local run): commit each checkpoint as one node,
            # so resume applies the same completeness rule as a job.
            from mtgrpo.sagemaker.callback import CheckpointCallback
            from mtgrpo.sagemaker.checkpoints import StopRequest

            callbacks = [*callbacks, CheckpointCallback(
                StopRequest(), Path(paths.output_dir) / "metrics.jsonl", node_rank=0,
                num_nodes=1)]
        for cb in callbacks:
            if hasattr(cb, "bind"):
                cb.bind(trainer)
            trainer.add_callback(cb)
        if on_trainer is not None:
            on_trainer(trainer)

        checkpoint = newest_complete_checkpoint(paths.checkpoint_dir) if resume else None
        if checkpoint is not None:
            logger.info("resuming from %s", checkpoint)
        done = checkpoint_step(checkpoint) if checkpoint is not None else 0
        if config.max_steps > 0 and done >= config.max_steps:
            # HF Trainer resumed at max_steps still runs one more step when max_steps is not a
            # whole number of epochs: a finished run re-run must train nothing.
            if trainer.accelerator.is_main_process:
                print(f"mtgrpo: {checkpoint.name} already reached max_steps "
                      f"{config.max_steps}: nothing to train", flush=True)
            trainer._load_from_checkpoint(str(checkpoint))  # the checkpoint's weights
            trainer.state.global_step = done
            training_loss = None
        else:
            result = trainer.train(
                resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            training_loss = result.training_loss
        save_final_model(trainer, tokenizer, paths.model_dir)
        stopped = bool(trainer._stop_requested)
        # A stop request (SIGTERM) leaves little time: skip the final evaluation then.
        final_eval = trainer.score_records(eval_records) if eval_records and not stopped else {}
    finally:
        for part in (parts["environment"], parts["sampler"], parts["weight_sync"],
                     parts["task"]):
            if hasattr(part, "close"):
                part.close()
    summary = {
        "global_step": int(trainer.state.global_step),
        "train_loss": _finite(training_loss),
        "train_seconds": round(time.perf_counter() - started, 3),
        "resumed_from": str(checkpoint) if checkpoint else None,
        "stopped_early": stopped,
        "model_dir": str(paths.model_dir),
        "eval": {k: _finite(v) for k, v in sorted(final_eval.items())},
        "train_records": len(train_records),
        "eval_records": len(eval_records),
        "algorithm": config.algorithm,
        "master_weights": trainer.master_weights.name,
        "master_weights_how": trainer.master_weights.how,
        "liger_kernels": list(getattr(model, "mtgrpo_liger_kernels", [])),
    }
    if trainer.accelerator.is_main_process:
        _write_json(Path(paths.output_dir) / "eval_summary.json", summary)
    return summary


LORA_ADAPTER_DIR = "adapter"


def save_final_model(trainer, tokenizer, model_dir: str | Path) -> None:
    """Safetensors + config + tokenizer + generation config: loadable by transformers and vLLM.

    A LoRA policy is saved merged (base + adapters, the base checkpoint's names), with the
    adapter alone (peft's ``adapter_config.json`` + ``adapter_model.safetensors``) beside it in
    ``adapter/``.
    """
    from mtgrpo.rollout.policy_weights import is_lora, save_policy

    model = trainer.accelerator.unwrap_model(trainer.model)
    if is_lora(model):
        if trainer.accelerator.is_main_process:
            save_policy(model, model_dir)
            model.save_pretrained(str(Path(model_dir) / LORA_ADAPTER_DIR))
            tokenizer.save_pretrained(str(model_dir))
        trainer.accelerator.wait_for_everyone()
        return
    trainer.save_model(str(model_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(model_dir))
        model = trainer.accelerator.unwrap_model(trainer.model)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(model_dir))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
