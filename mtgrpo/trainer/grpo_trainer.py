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
  episodes get a truncated per-token importance weight ``min(pi_learner / pi_sampler,
  tis_cap)``, current ones exactly 1. The learner's log-probs are the loss forward's own
  (detached), not a separate forward: see ``_tis_weights``. Private API of trl 1.16.0 (the
  order of ``_compute_loss``: log-probs first, advantages read after), pinned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
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
        # train.run resolves max_staleness -1 (auto) to 0 or 1; left unresolved, it is synchronous.
        self.overlap = self.mt_config.max_staleness > 0
        self.sampler_follows_pushes = False  # set by WeightSyncCallback
        self._prefetch: Prefetch | None = None
        self._peek_iterator = None
        self._peeked: list = []  # the dataloader item read ahead (the next generation batch)
        self._step_wait = 0.0  # seconds this step's learner waited for rollouts
        self._tis_inputs: dict | None = None  # the micro-batch whose loss forward is running
        self._tis_sums = _TISSums()  # this optimizer step's weight statistics
        if not self.overlap:
            return
        if self.mt_config.generation_backend != "vllm":  # the config refuses it; belt and braces
            raise ValueError("max_staleness > 0 needs generation_backend vllm")
        self.add_callback(_OverlapCallback(self))

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

    def prefetch_failed(self) -> bool:
        """The background rollout ended with an error (raised at the next step's rollout)."""
        pending = self._prefetch
        return (pending is not None and pending.done() and pending.error is not None
                and not isinstance(pending.error, PrefetchCancelled))

    def stop_prefetch(self, wait: float | None = None) -> None:
        """Cancel the background rollout at its next request and join it (at most ``wait``
        seconds: a run ending on an error does not wait for a stuck request, which the
        daemon thread abandons); drop its result."""
        pending, self._prefetch = self._prefetch, None
        if pending is None:
            return
        self.policy_clock.cancel()
        try:
            pending.join(wait)
        finally:
            self.policy_clock.resume()
        if pending.error is not None and not isinstance(pending.error, PrefetchCancelled):
            logger.warning("background rollout failed while stopping: %s", pending.error)

    def train(self, *args, **kwargs):
        try:
            result = super().train(*args, **kwargs)
        except BaseException:
            self.stop_prefetch(wait=5.0)  # failing already: not one more request time-out
            raise
        self.stop_prefetch()  # the end of training: no thread left behind
        return result

    def _mark_stale(self, output: dict, inputs: list[dict]) -> None:
        """Flag this generation batch's stale episodes (``tis_stale``, one bool per row: TRL's
        shuffle and split of the batch keep it aligned with the rows) and log the staleness."""
        from accelerate.utils import gather_object

        if output.get("sampling_per_token_logps") is None:
            raise RuntimeError("max_staleness 1 needs the sampler's token log-probs "
                               "(VLLMSampler(logprobs=True)); the rollout returned none")
        current = self.state.global_step
        lags = [current - int(x["policy_version"]) for x in inputs]
        output["tis_stale"] = torch.tensor([lag > 0 for lag in lags],
                                           device=output["completion_ids"].device)
        lags = [lag for part in gather_object([lags]) for lag in part]
        metrics = self._metrics["train"]
        metrics["staleness/mean"].append(sum(lags) / len(lags))
        metrics["staleness/max"].append(float(max(lags)))
        metrics["tis/stale_share"].append(sum(lag > 0 for lag in lags) / len(lags))

    def _compute_loss(self, model, inputs):
        if not self.overlap or "tis_stale" not in inputs:
            return super()._compute_loss(model, inputs)
        self._tis_inputs = inputs  # read by the loss forward's _get_per_token_logps_and_entropies
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._tis_inputs = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                           logits_to_keep, *args, **kwargs):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        inputs, self._tis_inputs = self._tis_inputs, None  # only the loss's own forward
        if inputs is not None:
            # TRL reads the advantages after this forward. The weight w >= 0 scales the
            # per-token loss: every loss type allowed (LOSS_TYPES: grpo, dapo, dr_grpo, bnpo) is
            # -min(r * A, clip(r) * A), so w * loss(A) = loss(w * A), which is what TRL's
            # `per_token_loss * importance_sampling_ratio` computes. The KL term (beta) stays
            # unweighted in both.
            inputs["advantages"] = inputs["advantages"] * self._tis_weights(logps.detach(),
                                                                            inputs)
        return logps, entropies, aux

    def _tis_weights(self, learner_logps: torch.Tensor, inputs: dict) -> torch.Tensor:
        """Per-token weights of a micro-batch: ``min(exp(learner - sampler), tis_cap)`` on stale
        episodes, exactly 1 on current ones; their statistics join the step's metrics.

        The learner's log-probs are the loss forward's. TRL's ``vllm_importance_sampling_correction``
        computes them in a separate no-grad forward before the loss (``old_per_token_logps``);
        that forward is needed only when a generation batch is used across optimizer steps
        (``num_iterations`` > 1, or ``gradient_accumulation_steps`` not a multiple of
        ``steps_per_generation``). Here neither is: TRL generates at the first micro-batch of an
        optimizer step a batch of ``gradient_accumulation_steps`` micro-batches (its default
        ``steps_per_generation``), each is used once, and the optimizer steps after the last, so
        every micro-batch's loss forward runs with the weights that would have computed the old
        log-probs. Where TRL computes them anyway (a config that breaks that), they are used."""
        old = inputs.get("old_per_token_logps")
        learner = learner_logps if old is None else old
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        # As TRL: tokens the sampler could not score (NaN) get log-ratio 0, weight 1.
        diff = torch.nan_to_num((learner - inputs["sampling_per_token_logps"]) * mask, nan=0.0)
        raw = torch.exp(diff)
        stale = inputs["tis_stale"].bool()[:, None]
        weights = torch.where(stale, raw.clamp(max=float(self.mt_config.tis_cap)),
                              torch.ones_like(raw))
        self._tis_sums.add(raw, diff, mask.bool(), stale, float(self.mt_config.tis_cap))
        return weights

    def _log_tis_sums(self) -> None:
        """The optimizer step's weight metrics (over its micro-batches and processes)."""
        from accelerate.utils import gather_object

        sums, self._tis_sums = self._tis_sums, _TISSums()
        parts = gather_object([sums])
        metrics = self._metrics["train"]
        total = _TISSums.merged(parts)
        if total.tokens:
            metrics["sampling/sampling_logp_difference/mean"].append(total.diff_sum / total.tokens)
            metrics["sampling/sampling_logp_difference/max"].append(total.diff_max)
        if total.stale_tokens:
            metrics["tis/ratio_mean"].append(total.ratio_sum / total.stale_tokens)
            metrics["tis/ratio_max"].append(total.ratio_max)
            metrics["tis/clipped_share"].append(total.clipped / total.stale_tokens)

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
            "tool_successes", "reward_components", "tool_counts", "calls")}
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
            out["tool_counts"].append(ep.tool_counts())
            out["calls"].append(_calls(ep, breakdown))
        return out

    # -- advantages ----------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        # TRL merged the rollout's extra fields into `inputs` (this process's rows).
        self._replace_advantages(output, inputs)
        if self.overlap and self.model.training:
            self._mark_stale(output, inputs)
        return output

    def _replace_advantages(self, output: dict, inputs: list[dict]) -> None:
        from accelerate.utils import gather_object

        from mtgrpo.trainer.advantages import compute_advantages, token_advantages

        mode = "train" if self.model.training else "eval"
        local = [(float(x["turn_reward"]), float(x["outcome_reward"]),
                  int(x["first_tool_result_index"]), x.get("calls")) for x in inputs]
        rows = gather_object(local)  # the whole generation batch, in TRL's process order
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        groups = [i // num_generations for i in range(len(rows))]
        if any(r[3] is not None for r in rows):  # agent episodes: per-call credit
            self._replace_call_advantages(output, inputs, rows, groups, mode)
            return
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

    def _replace_call_advantages(self, output: dict, inputs: list[dict], rows: list,
                                 groups: list[int], mode: str) -> None:
        """Agent episodes: one advantage per call (``call_advantages``), on that call's tokens."""
        from mtgrpo.trainer.advantages import call_advantages, call_token_advantages

        per_call = call_advantages(
            [r[1] for r in rows], [r[3][0] if r[3] else [] for r in rows], groups,
            algorithm=self.mt_config.algorithm, turn_coef=self.mt_config.turn_advantage_coef)
        start = self.accelerator.process_index * len(inputs)
        completion_ids = output["completion_ids"]
        width = completion_ids.size(1)
        per_token = torch.zeros(completion_ids.shape, dtype=torch.float32)
        for row in range(len(inputs)):
            calls = rows[start + row][3]
            values = call_token_advantages(per_call[start + row], calls[1] if calls else [],
                                           width)
            per_token[row] = torch.tensor(values, dtype=torch.float32)
        output["advantages"] = per_token.to(completion_ids.device)
        self._log_batch_metrics(mode, inputs, output)
        self._log_agent_metrics(mode, inputs)

    def _log_agent_metrics(self, mode: str, inputs: list[dict]) -> None:
        from accelerate.utils import gather_object

        stats = gather_object([x["calls"][2] for x in inputs if x.get("calls")])
        if not stats:
            return
        n = len(stats)
        metrics = self._metrics[mode]
        metrics["agent_calls_per_episode"].append(sum(s["calls"] for s in stats) / n)
        metrics["agent_failed_share"].append(sum(s["failed"] for s in stats) / n)
        metrics["agent_sequence_breaks"].append(float(sum(s["breaks"] for s in stats)))
        metrics["agent_dropped_tokens"].append(float(sum(s["dropped_tokens"] for s in stats)))

    def _log_batch_metrics(self, mode: str, inputs: list[dict], output: dict) -> None:
        from accelerate.utils import gather_object

        stats = gather_object([(x["exact_match"], x["tool_calls"], x["tool_successes"],
                                x["reward_components"], x.get("tool_counts") or {})
                               for x in inputs])
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
        # Calls that failed, ran out of time or were cut, in the whole batch: totals always,
        # per tool (tool_failures/<name>) when a call of that tool failed.
        for key in sorted({k for s in stats for k in s[4]}):
            self._metrics[mode][key].append(sum(s[4].get(key, 0.0) for s in stats))
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
            if self.overlap:
                self._log_tis_sums()
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

    # -- checkpoints: a full disk is one line, the previous checkpoint kept (disk.py) ----------
    def _save_checkpoint(self, model, trial):
        from pathlib import Path

        from mtgrpo.trainer.disk import checkpoint_guard

        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        with checkpoint_guard(folder, lambda: checkpoint_bytes(self, folder.parent)):
            super()._save_checkpoint(model, trial)

    # -- stop and save on request (SIGTERM, spot interruption) ------------------------------------
    def request_save_and_stop(self) -> None:
        """Ask for a checkpoint and a clean stop at the end of the current optimizer step.

        Safe to call from a signal handler: it only sets a flag.
        """
        self._stop_requested = True


def _calls(episode: Episode, breakdown: RewardBreakdown):
    """An agent episode's per-call turn rewards, each call's completion span and its counts
    (None for the built-in loop's episodes, whose breakdown has no ``calls``)."""
    rewards = getattr(breakdown, "calls", None)
    if rewards is None:
        return None
    spans, offset = [], 0
    for turn in episode.turns:
        if turn.role == "assistant":
            spans.append((offset, offset + len(turn.token_ids)))
        offset += len(turn.token_ids)
    counts = {"calls": getattr(episode, "calls", len(spans)),
              "failed": bool(getattr(episode, "error", None)),
              "breaks": getattr(episode, "breaks", 0),
              "dropped_tokens": getattr(episode, "dropped_tokens", 0)}
    return list(rewards), spans, counts


def checkpoint_bytes(trainer, checkpoint_dir) -> int:
    """About what one checkpoint takes: the newest earlier one's size, else the weights plus
    two optimizer moments per trainable parameter."""
    from mtgrpo.trainer.disk import tree_bytes
    from mtgrpo.trainer.train import newest_complete_checkpoint

    previous = newest_complete_checkpoint(checkpoint_dir)
    if previous is not None:
        return tree_bytes(previous)
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = sum(p.numel() * 4 * 2 for p in model.parameters() if p.requires_grad)
    return weights + moments


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


@dataclass
class _TISSums:
    """Sums of the importance weights' statistics over one optimizer step's micro-batches:
    the learner/sampler log-prob gap over every sampled token, the ratio before truncation over
    the stale episodes' tokens."""

    tokens: int = 0
    diff_sum: float = 0.0
    diff_max: float = 0.0
    stale_tokens: int = 0
    ratio_sum: float = 0.0
    ratio_max: float = 0.0
    clipped: int = 0

    def add(self, raw, diff, mask, stale, cap: float) -> None:
        """One micro-batch's tokens: ``diff`` the log-prob gaps, ``raw`` their exp."""
        gap = diff[mask].abs()
        picked = raw[mask & stale]
        self += _TISSums(
            tokens=int(gap.numel()), diff_sum=gap.sum().item(),
            diff_max=gap.max().item() if gap.numel() else 0.0,
            stale_tokens=int(picked.numel()), ratio_sum=picked.sum().item(),
            ratio_max=picked.max().item() if picked.numel() else 0.0,
            clipped=int((picked > cap).sum().item()))

    def __iadd__(self, other: "_TISSums") -> "_TISSums":
        self.tokens += other.tokens
        self.diff_sum += other.diff_sum
        self.diff_max = max(self.diff_max, other.diff_max)
        self.stale_tokens += other.stale_tokens
        self.ratio_sum += other.ratio_sum
        self.ratio_max = max(self.ratio_max, other.ratio_max)
        self.clipped += other.clipped
        return self

    @classmethod
    def merged(cls, parts) -> "_TISSums":
        total = cls()
        for part in parts:
            total += part
        return total


class _StopOnRequest(TrainerCallback):
    def __init__(self, trainer: MTGRPOTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        from mtgrpo.sagemaker.callback import _agree

        # Every rank saves the same step: stop if any rank was asked to (a signal reaches the
        # ranks at different moments).
        if _agree(self.trainer._stop_requested):
            self.trainer._stop_requested = True
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
        self.trainer.finish_prefetch()  # done already by _OverlapCallback; no-op without it
        if self.trainer.prefetch_failed():
            # The server died or stopped answering: the next step raises that error. A push
            # now would wait one more vllm_request_timeout_s to fail the same way.
            return
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
