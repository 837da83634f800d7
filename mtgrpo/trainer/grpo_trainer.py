"""MTGRPOTrainer: TRL's GRPOTrainer with multi-turn tool rollouts and turn-level credit assignment.

What it changes in TRL 1.16 (pinned: ``_generate_and_score_completions`` and the ``(B, T)``
advantages of ``_compute_loss`` are private API):

- Rollouts: ``rollout_func`` runs the multi-turn tool environment over the batch. The token ids
  the sampler produced and the tool-result ids the environment appended are passed through as
  they are (nothing is re-tokenized); ``env_mask`` marks the environment's tokens.
- Loss mask vs attention mask: TRL turns ``env_mask`` into its ``tool_mask``, which multiplies
  the LOSS mask only; the attention mask it builds is ``prompt_mask + completion_mask``, so the
  answer turn attends to the tool result. ``tests/test_attention_mask.py`` pins this down.
- Advantages: TRL's per-sequence advantages are replaced by per-token ``(B, T)`` advantages from
  the episode's turn and outcome rewards (``mt_grpo``, ``grpo_or`` or ``grpo_mr``), normalised per
  prompt group over the whole (all-process) generation batch.
- Evaluation: ``evaluate()`` samples one episode per held-out question and logs ``eval_reward``
  and ``eval_exact_match`` instead of TRL's eval loss.
- Metrics: exact match, tool success rate, reward components, rollout and weight-sync seconds,
  step seconds and learner tokens per second go into TRL's metric buffers, so they appear in
  every log record (and in ``metrics.jsonl``, see ``metrics_log.py``).
- Overlap (``max_staleness: 1``, ``overlap.py``): the next generation batch's prompts are
  peeked from TRL's dataloader (``get_batch_samples`` reads one batch ahead) and rolled out in a
  background thread while the learner trains; each episode keeps its policy version. Stale
  episodes get TRL's truncated importance weight (``vllm_importance_sampling_correction`` in
  ``token_truncate`` mode, cap ``tis_cap``: TRL multiplies it into the per-token loss, so it
  fits per-token advantages); TRL gates that machinery on ``use_vllm``, which is set here while
  TRL's own vLLM weight sync in ``_generate`` is kept off (``_last_loaded_step``). Private API
  of trl 1.16.0, pinned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Callable, Sequence

import torch
from transformers import TrainerCallback, TrainingArguments
from trl import GRPOTrainer

from mtgrpo.contract import TrainerConfig
from mtgrpo.trainer.overlap import PolicyClock, Prefetch, PrefetchCancelled
from mtgrpo.trainer.types import Episode, QARecord, RewardBreakdown

logger = logging.getLogger(__name__)

RolloutFn = Callable[[list[QARecord]], list[Episode]]
ScoreFn = Callable[[Episode], RewardBreakdown]


def _trainer_bases() -> tuple[type, ...]:
    """GRPOTrainer, with the memory-efficient log-prob mixin first when it is available."""
    try:
        from mtgrpo.trainer.fast_logprobs import FastLogprobsMixin  # noqa: WPS433
    except ImportError:  # not shipped (yet): TRL's own chunked path is used
        return (GRPOTrainer,)
    return (FastLogprobsMixin, GRPOTrainer)


def _rollout_entry(prompts: list, trainer: "MTGRPOTrainer") -> dict[str, list]:
    """TRL's ``rollout_func(prompts, trainer)``: delegates to the trainer that owns the env."""
    return trainer.rollout(prompts)


def turn_reward(completions, turn_reward: list[float], **_: Any) -> list[float]:
    """Turn-level reward of each episode (computed by the rollout; TRL logs and sums it)."""
    return [float(r) for r in turn_reward]


def outcome_reward(completions, outcome_reward: list[float], **_: Any) -> list[float]:
    """Outcome-level reward of each episode (computed by the rollout; TRL logs and sums it)."""
    return [float(r) for r in outcome_reward]


turn_reward.__name__ = "turn"
outcome_reward.__name__ = "outcome"


class MTGRPOTrainer(*_trainer_bases()):
    """GRPOTrainer for multi-turn tool use with per-token (turn-level) advantages.

    Arguments beyond GRPOTrainer's:
        config: the run's TrainerConfig (algorithm, lambda, num_generations, eval sizes).
        train_records / eval_records: the questions; the train dataset holds only their keys.
        rollout: ``records -> episodes``, one episode per record, in order (train sampling).
        eval_rollout: the same for evaluation (defaults to ``rollout``).
        scorer: ``episode -> RewardBreakdown`` (turn and outcome rewards and components).
    """

    def __init__(self, model, args: TrainingArguments, *, processing_class, config: TrainerConfig,
                 train_records: Sequence[QARecord], rollout: RolloutFn, scorer: ScoreFn,
                 eval_records: Sequence[QARecord] = (), eval_rollout: RolloutFn | None = None,
                 callbacks: Sequence[TrainerCallback] = (), policy_clock: PolicyClock | None = None):
        from datasets import Dataset

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we mean to use rollout_func
        self.mt_config = config
        self._records = {str(i): r for i, r in enumerate(train_records)}
        self._eval_records = list(eval_records)[: config.max_eval_samples]
        self._rollout_fn = rollout
        self._eval_rollout_fn = eval_rollout or rollout
        self._scorer = scorer
        self._stop_requested = False
        self._step_wall = 0.0
        self._step_rollout = 0.0
        self._step_tokens = 0
        train_dataset = Dataset.from_dict({"prompt": list(self._records)})
        eval_keys = [str(i) for i in range(len(self._eval_records))]
        eval_dataset = Dataset.from_dict({"prompt": eval_keys}) if eval_keys else None
        super().__init__(
            model=model, reward_funcs=[turn_reward, outcome_reward], args=args,
            train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=processing_class, callbacks=list(callbacks),
            rollout_func=_rollout_entry)
        self.add_callback(_StopOnRequest(self))
        self._init_overlap(policy_clock)
        # The padding-free log-prob path (fast_logprobs.py) pays off on GPUs; on CPU its
        # per-sequence attention loop is slower than TRL's padded path (measured 2x, tiny model).
        self.packed_logprobs = torch.cuda.is_available()
        self.master_weights = self._resolve_master_weights()  # printed at start by train.run

    # -- optimizer precision (master_weights.py) ------------------------------------------------
    def _resolve_master_weights(self):
        from mtgrpo.trainer import master_weights

        trainable = [p for p in self.model.parameters() if p.requires_grad]
        low = [p for p in trainable if p.dtype in (torch.bfloat16, torch.float16)]
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        stage = int(plugin.zero_stage) if self.is_deepspeed_enabled and plugin is not None else 0
        device = self.args.device
        memory = (torch.cuda.get_device_properties(device).total_memory
                  if device.type == "cuda" else None)
        return master_weights.resolve(
            self.mt_config.master_weights, weights_bf16=bool(low), deepspeed_stage=stage,
            trainable_params=sum(p.numel() for p in low), device_bytes=memory)

    def create_optimizer(self, model=None):
        """HF's optimizer (AdamW, its param groups and hyperparameters from the args), in the
        precision ``master_weights`` resolved to: the class is swapped, nothing else."""
        from mtgrpo.trainer import master_weights

        if self.optimizer is None and self.optimizer_cls_and_kwargs is None:
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model or self.model)
            self.optimizer_cls_and_kwargs = master_weights.optimizer_cls_and_kwargs(
                self.master_weights, cls, kwargs)
        return super().create_optimizer(model)

    # -- rollouts ------------------------------------------------------------------------------
    def rollout(self, prompts: list[str]) -> dict[str, list]:
        """Run the environment for a (local) generation batch; one episode per prompt key."""
        if self.overlap:
            return self._overlapped_rollout(prompts)
        records = [self._records[p] for p in prompts]
        start = time.perf_counter()
        with self._live_policy_generation():
            episodes = self._rollout_fn(records)
        seconds = time.perf_counter() - start
        if len(episodes) != len(records):
            raise RuntimeError(f"rollout returned {len(episodes)} episodes for "
                               f"{len(records)} prompts")
        self._step_rollout += seconds
        self._metrics["train"]["rollout_seconds"].append(seconds)
        return self.episodes_to_batch(episodes)

    # -- overlap (max_staleness > 0; overlap.py) -------------------------------------------------
    def _init_overlap(self, clock: PolicyClock | None) -> None:
        self.policy_clock = clock or PolicyClock()
        self.overlap = self.mt_config.max_staleness > 0
        self.sampler_follows_pushes = False  # set by WeightSyncCallback
        self._prefetch: Prefetch | None = None
        self._peek_iterator = None
        self._peeked: list = []  # the dataloader item read ahead (the next generation batch)
        self._step_wait = 0.0  # seconds this step's learner waited for rollouts
        if not self.overlap:
            return
        if self.mt_config.generation_backend != "vllm":  # the config refuses it; belt and braces
            raise ValueError("max_staleness > 0 needs generation_backend vllm")
        # TRL's importance-sampling correction, per token, truncated at tis_cap (see module doc).
        self.use_vllm = True
        self.vllm_importance_sampling_correction = True
        self.vllm_importance_sampling_mode = "token_truncate"
        self.vllm_importance_sampling_clip_max = float(self.mt_config.tis_cap)
        self.vllm_importance_sampling_clip_min = None
        self._last_loaded_step = -1
        self.add_callback(_OverlapCallback(self))

    def _generate(self, prompts: list):
        if self.overlap:  # use_vllm is only TRL's switch for the correction: no TRL weight sync
            self._last_loaded_step = self.state.global_step
        return super()._generate(prompts)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """HF's batches of one optimizer step; with the overlap, one more dataloader item is
        read ahead: the first batch of the next step, i.e. TRL's next generation batch."""
        if not self.overlap:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._peek_iterator is not epoch_iterator:  # a new epoch, or a resume's skip
            self._peeked = []
        samples = self._peeked[:num_batches]
        self._peeked = self._peeked[num_batches:]
        while len(samples) < num_batches:
            try:
                samples.append(next(epoch_iterator))
            except StopIteration:
                break
        if not self._peeked:
            try:
                self._peeked = [next(epoch_iterator)]
            except StopIteration:
                pass
        self._peek_iterator = epoch_iterator
        return samples, self._get_num_items_in_batch(samples, device)

    def _next_generation_keys(self) -> list[str] | None:
        """The prompt keys TRL will hand the next rollout, if there is a next step."""
        if not self._peeked or self.state.global_step + 1 >= self.state.max_steps:
            return None
        return [x["prompt"] for x in self._peeked[0]]

    def _overlapped_rollout(self, prompts: list[str]) -> dict[str, list]:
        """This step's batch (prefetched during the last step, or sampled now), then the next
        step's batch started in the background with the weights the sampler holds now."""
        pending, self._prefetch = self._prefetch, None
        waited = pending.join() if pending is not None else 0.0
        if pending is not None and pending.error is not None:
            raise pending.error  # the failure surfaces at the step that needed the batch
        if pending is not None and pending.keys == list(prompts):
            episodes, version, seconds = pending.episodes, pending.version, pending.seconds
        else:
            if pending is not None:  # should not happen: TRL handed other prompts than peeked
                logger.warning("prefetched rollout is for other prompts; sampling this batch now")
            records = [self._records[p] for p in prompts]
            start = time.perf_counter()
            with self.policy_clock.sampling() as version:
                episodes = self._rollout_fn(records)
            seconds = time.perf_counter() - start
            waited += seconds
        if len(episodes) != len(prompts):
            raise RuntimeError(f"rollout returned {len(episodes)} episodes for "
                               f"{len(prompts)} prompts")
        lag = self.state.global_step - version
        if not 0 <= lag <= self.mt_config.max_staleness:
            raise RuntimeError(f"rollout of policy version {version} is {lag} versions behind "
                               f"the learner's {self.state.global_step} (max_staleness "
                               f"{self.mt_config.max_staleness})")
        for ep in episodes:
            ep.policy_version = version
        self._step_rollout += waited  # the learner's idle time, not the background's
        self._step_wait += waited
        self._metrics["train"]["rollout_seconds"].append(seconds)
        keys = self._next_generation_keys()
        if keys is not None:
            self._prefetch = Prefetch(keys, [self._records[k] for k in keys], self._rollout_fn,
                                      self.policy_clock)
        return self.episodes_to_batch(episodes)

    def finish_prefetch(self) -> float:
        """Wait for the background rollout (before a weight push); the seconds waited. Its
        result or error stays for the next step; on a stop request it is cancelled."""
        if self._prefetch is None:
            return 0.0
        if self._stop_requested:
            self.stop_prefetch()
            return 0.0
        return self._prefetch.join()

    def stop_prefetch(self) -> None:
        """Cancel the background rollout at its next request and join it; drop its result."""
        pending, self._prefetch = self._prefetch, None
        if pending is None:
            return
        self.policy_clock.cancel()
        try:
            pending.join()
        finally:
            self.policy_clock.resume()
        if pending.error is not None and not isinstance(pending.error, PrefetchCancelled):
            logger.warning("background rollout failed while stopping: %s", pending.error)

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self.stop_prefetch()  # an error or the end of training: no thread left behind

    def _correct_stale(self, output: dict, inputs: list[dict]) -> None:
        """Importance weights 1 for current-version episodes (as the synchronous loop: no
        correction), TRL's truncated weight for stale ones; staleness and weight metrics."""
        from accelerate.utils import gather_object

        current = self.state.global_step
        versions = [int(x["policy_version"]) for x in inputs]
        ratio = output["importance_sampling_ratio"]
        stale = torch.tensor([v < current for v in versions], device=ratio.device)
        ratio[~stale] = 1.0
        mask = output["completion_mask"] * output.get("tool_mask", 1)
        raw = torch.exp((output["old_per_token_logps"] - output["sampling_per_token_logps"])
                        * mask)
        picked = raw[mask.bool() & stale[:, None]]
        cap = float(self.mt_config.tis_cap)
        local = (versions, [current - v for v in versions], picked.sum().item(),
                 picked.max().item() if picked.numel() else None, int(picked.numel()),
                 int((picked > cap).sum().item()))
        parts = gather_object([local])
        lags = [lag for p in parts for lag in p[1]]
        tokens = sum(p[4] for p in parts)
        metrics = self._metrics["train"]
        metrics["staleness/mean"].append(sum(lags) / len(lags))
        metrics["staleness/max"].append(float(max(lags)))
        metrics["tis/stale_share"].append(sum(lag > 0 for lag in lags) / len(lags))
        if tokens:
            metrics["tis/ratio_mean"].append(sum(p[2] for p in parts) / tokens)
            metrics["tis/ratio_max"].append(max(p[3] for p in parts if p[3] is not None))
            metrics["tis/clipped_share"].append(sum(p[5] for p in parts) / tokens)

    def _live_policy_generation(self):
        """The context rollouts run in. Sampling from the live policy under DeepSpeed ZeRO-3
        needs every parameter whole on every rank: a sharded forward all-gathers each layer
        from all ranks, so ranks that sample different numbers of turns, tokens or episodes
        would hang or exchange garbage (a 2-GPU ZeRO-3 run's final evaluation failed in
        all_gather_object exactly so). TRL's ``unwrap_model_for_generation`` gathers the
        parameters once (a collective: every rank must enter, which they do at the same points,
        the rollout of a step and an evaluation), then each rank generates on its own. vLLM
        rollouts read a server, not this model: nothing to gather."""
        if self.mt_config.generation_backend != "transformers" or not _zero3(self.accelerator):
            return contextlib.nullcontext()
        return _whole_policy(self.model_wrapped, self.accelerator)

    def episodes_to_batch(self, episodes: Sequence[Episode]) -> dict[str, list]:
        """The rollout_func output for these episodes: sampled ids kept, env tokens flagged."""
        limit = self.mt_config.max_completion_length
        out: dict[str, list] = {k: [] for k in (
            "prompt_ids", "completion_ids", "logprobs", "env_mask", "turn_reward",
            "outcome_reward", "first_tool_result_index", "exact_match", "tool_calls",
            "tool_successes", "reward_components")}
        if self.overlap:
            out["policy_version"] = [ep.policy_version for ep in episodes]
        sampled_logprobs = all(t.logprobs is not None for ep in episodes for t in ep.turns
                               if t.role == "assistant")
        if not sampled_logprobs:  # e.g. VLLMSampler(logprobs=False): TRL takes None as "none"
            out["logprobs"] = None
        for ep in episodes:
            ids = ep.completion_ids[:limit]
            mask = ep.env_mask[:limit]
            if sampled_logprobs:  # environment tokens get 0.0: they carry no loss
                out["logprobs"].append([lp for t in ep.turns for lp in (
                    t.logprobs if t.role == "assistant" else [0.0] * len(t.token_ids))][:limit])
            first = ep.first_tool_result_index
            breakdown = self._scorer(ep)
            out["prompt_ids"].append(list(ep.prompt_ids))
            out["completion_ids"].append(list(ids))
            out["env_mask"].append(mask)
            out["turn_reward"].append(float(breakdown.turn))
            out["outcome_reward"].append(float(breakdown.outcome))
            cut = first is None or first >= len(ids)  # no tool result, or truncated away
            out["first_tool_result_index"].append(-1 if cut else first)
            out["exact_match"].append(float(breakdown.components.get("exact_match", 0.0) > 0))
            out["tool_calls"].append(ep.tool_calls)
            out["tool_successes"].append(ep.tool_successes)
            out["reward_components"].append(dict(breakdown.components))
        return out

    # -- advantages ----------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        # TRL merged the rollout's extra fields into `inputs` (this process's rows).
        self._replace_advantages(output, inputs)
        if self.overlap and self.model.training:
            self._correct_stale(output, inputs)
        return output

    def _replace_advantages(self, output: dict, inputs: list[dict]) -> None:
        from accelerate.utils import gather_object

        from mtgrpo.trainer.advantages import compute_advantages, token_advantages

        mode = "train" if self.model.training else "eval"
        local = [(float(x["turn_reward"]), float(x["outcome_reward"]),
                  int(x["first_tool_result_index"])) for x in inputs]
        rows = gather_object(local)  # the whole generation batch, in TRL's process order
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        groups = [i // num_generations for i in range(len(rows))]
        pairs = compute_advantages(
            [r[0] for r in rows], [r[1] for r in rows], groups, [r[2] >= 0 for r in rows],
            algorithm=self.mt_config.algorithm, turn_coef=self.mt_config.turn_advantage_coef)
        start = self.accelerator.process_index * len(inputs)
        completion_ids = output["completion_ids"]
        width = completion_ids.size(1)
        lengths = output["completion_mask"].sum(dim=1).tolist()
        per_token = torch.zeros(completion_ids.shape, dtype=torch.float32)
        for row, (first_adv, later_adv) in enumerate(pairs[start:start + len(inputs)]):
            first_tool = local[row][2]
            values = token_advantages(first_adv, later_adv, int(lengths[row]),
                                      None if first_tool < 0 else first_tool)
            per_token[row, :len(values)] = torch.tensor(values[:width], dtype=torch.float32)
        output["advantages"] = per_token.to(completion_ids.device)
        self._log_batch_metrics(mode, inputs, output)

    def _log_batch_metrics(self, mode: str, inputs: list[dict], output: dict) -> None:
        from accelerate.utils import gather_object

        stats = gather_object([(x["exact_match"], x["tool_calls"], x["tool_successes"],
                                x["reward_components"]) for x in inputs])
        calls = sum(s[1] for s in stats)
        self._metrics[mode]["exact_match"].append(sum(s[0] for s in stats) / len(stats))
        self._metrics[mode]["tool_calls_per_episode"].append(calls / len(stats))
        # No call in the whole batch: nothing failed, but nothing succeeded either -> 0.
        self._metrics[mode]["tool_success_rate"].append(
            sum(s[2] for s in stats) / calls if calls else 0.0)
        names = sorted({k for s in stats for k in s[3]})
        for name in names:
            self._metrics[mode][f"rewards/components/{name}"].append(
                sum(s[3].get(name, 0.0) for s in stats) / len(stats))
        tokens = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1).sum()
        self._step_tokens += int(self.accelerator.gather(tokens.reshape(1)).sum().item())

    # -- timing ------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch):
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_wall += time.perf_counter() - start
        if self._step % self.current_gradient_accumulation_steps == 0:
            learner = max(self._step_wall - self._step_rollout, 1e-9)
            self._metrics["train"]["step_seconds"].append(self._step_wall)
            self._metrics["train"]["tokens_per_second"].append(self._step_tokens / learner)
            if torch.cuda.is_available():  # this process's peak of the step: the planner's number
                self._metrics["train"]["gpu_peak_gib"].append(
                    torch.cuda.max_memory_allocated() / 2**30)
                torch.cuda.reset_peak_memory_stats()
            self._step_wall = self._step_rollout = 0.0
            self._step_tokens = 0
        return loss

    def record_weight_sync(self, seconds: float) -> None:
        self._metrics["train"]["weight_sync_seconds"].append(seconds)

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Sample one episode per held-out question; log ``eval_reward`` and friends."""
        metrics = self.score_records(self._eval_records, prefix=metric_key_prefix)
        if metrics:
            from transformers import Trainer

            Trainer.log(self, dict(metrics))  # TRL's log() would flush the train buffers here
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control,
                                                         metrics)
        return metrics

    def score_records(self, records: Sequence[QARecord], *,
                      prefix: str = "eval") -> dict[str, float]:
        """Roll out each record once (sharded over processes) and average its scores."""
        from accelerate.utils import gather_object

        if not records:
            return {}
        shard = list(records)[self.accelerator.process_index::self.accelerator.num_processes]
        start = time.perf_counter()
        with self._live_policy_generation():  # entered by every rank, even with no records
            episodes = self._eval_rollout_fn(shard) if shard else []
        local = []
        for ep in episodes:
            b = self._scorer(ep)
            local.append((b.total, float(b.components.get("exact_match", 0.0) > 0),
                          ep.tool_calls, ep.tool_successes))
        rows = gather_object(local)
        calls = sum(r[2] for r in rows)
        n = max(len(rows), 1)
        return {f"{prefix}_reward": sum(r[0] for r in rows) / n,
                f"{prefix}_exact_match": sum(r[1] for r in rows) / n,
                f"{prefix}_tool_success_rate": sum(r[3] for r in rows) / calls if calls else 0.0,
                f"{prefix}_samples": float(len(rows)),
                f"{prefix}_seconds": time.perf_counter() - start}

    # -- stop and save on request (SIGTERM, spot interruption) ------------------------------------
    def request_save_and_stop(self) -> None:
        """Ask for a checkpoint and a clean stop at the end of the current optimizer step.

        Safe to call from a signal handler: it only sets a flag.
        """
        self._stop_requested = True


@contextlib.contextmanager
def _whole_policy(engine, accelerator):
    """TRL's ``unwrap_model_for_generation`` (ZeRO-3 parameters gathered, DeepSpeed's module
    hooks removed), minus one more hook it leaves: DeepSpeed 0.19's start-of-forward hook,
    whose ``reset_step`` checks with a collective that every rank traced the same modules.
    With ranks generating on their own, that check pairs with unrelated collectives (measured
    on 2 H100s: a rank with no evaluation records reached the evaluation's all_gather while
    the other was in it). Restored, first in line again, on the way out. Pinned versions:
    trl 1.16.0, deepspeed 0.19.8 (pyproject.toml, docker/requirements-gpu.in)."""
    from trl.models.utils import unwrap_model_for_generation

    with unwrap_model_for_generation(engine, accelerator, gather_deepspeed3_params=True) as model:
        offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None)
        handle = getattr(offload, "fwd_pre_hook", None)
        hook = offload.module._forward_pre_hooks.get(handle.id) if handle is not None else None
        if hook is not None:
            handle.remove()
        try:
            yield model
        finally:
            if hook is not None:
                offload.fwd_pre_hook = offload.module.register_forward_pre_hook(hook,
                                                                                prepend=True)


class _StopOnRequest(TrainerCallback):
    def __init__(self, trainer: MTGRPOTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer._stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class _OverlapCallback(TrainerCallback):
    """With the overlap: the background rollout ends before the step's weight push (so no
    request of the old version is in flight; the push then holds the clock's writer lock), and
    no thread outlives training. Without a weight sync (a test's scripted sampler) the clock
    still follows the optimizer steps."""

    def __init__(self, trainer: MTGRPOTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.trainer.sampler_follows_pushes:
            with self.trainer.policy_clock.updating(state.global_step):
                pass

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        waited = trainer.finish_prefetch() + trainer._step_wait
        trainer._metrics["train"]["rollout_wait_seconds"].append(waited)
        trainer._step_wait = 0.0
        if not self.trainer.sampler_follows_pushes:
            with self.trainer.policy_clock.updating(state.global_step):
                pass

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.stop_prefetch()


class WeightSyncCallback(TrainerCallback):
    """Pushes the policy's weights to the sampler at train start and after every optimizer step.

    ``push(model) -> seconds`` runs on the main process; under DeepSpeed ZeRO-3 every rank joins
    the parameter gather first (a collective), then the others wait for the push to finish.
    The push holds the trainer's ``policy_clock`` writer lock: it waits for any rollout in
    flight and sets the sampler's version to the step's.
    """

    def __init__(self, trainer: MTGRPOTrainer, push: Callable[[Any], float]):
        self.trainer = trainer
        self.push = push
        trainer.sampler_follows_pushes = True

    def _sync(self) -> float:
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        trainer.finish_prefetch()  # done already by _OverlapCallback; no-op without the overlap
        start = time.perf_counter()
        with _gathered(trainer, model), trainer.policy_clock.updating(trainer.state.global_step):
            if trainer.accelerator.is_main_process:
                self.push(model)
        trainer.accelerator.wait_for_everyone()
        return time.perf_counter() - start

    def on_train_begin(self, args, state, control, **kwargs):
        # The server may hold other weights (a resumed run, a shared server): align it first.
        self._sync()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.record_weight_sync(self._sync())


def _zero3(accelerator) -> bool:
    """Whether DeepSpeed ZeRO-3 shards the parameters over the ranks."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def _gathered(trainer: MTGRPOTrainer, model):
    if _zero3(trainer.accelerator):
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    return contextlib.nullcontext()
