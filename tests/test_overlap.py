"""Bounded-staleness overlap of rollouts and learning (``trainer.max_staleness``).

- ``max_staleness: 0`` is today's synchronous loop: a seeded short run's metrics equal the ones
  recorded from the code before the overlap existed (``fixtures/overlap/sync_metrics.json``,
  written by this file's ``_seeded_run`` on that commit, ``python tests/test_overlap.py``;
  timing keys left out; the tool failure/time-out/truncation counts, logged since, were added
  to it from the same run).
- With ``max_staleness: 1`` (real vLLM server): every episode is current or one version
  behind, no request spans a weight push, and the importance weights are exactly 1 for the
  current-version episodes and differ from 1 for the stale ones.
- The learner's log-probs of those weights are the loss forward's own: no forward more than the
  synchronous loop (gradient accumulation too), and the weights, the loss and its gradient
  equal what TRL's ``vllm_importance_sampling_correction`` gave with its separate forward.
- Failures in the background rollout surface in the training thread at the next step, as
  today; a stop request joins the rollout thread, saves, and the run resumes at that step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mtgrpo.contract import TrainerConfig
from mtgrpo.trainer.paths import RunPaths

FIXTURE = Path(__file__).parent / "fixtures" / "overlap" / "sync_metrics.json"
# Wall-clock values differ between any two runs; everything else of a seeded run must not.
TIMING = {"rollout_seconds", "step_seconds", "tokens_per_second", "weight_sync_seconds",
          "step_time", "train_seconds", "eval_seconds"}


def _config(tiny_model_dir, tmp_path, **overrides):
    from mtgrpo.testing.synthetic import write_task

    task = write_task(tmp_path / "task")
    values = dict(model_name_or_path=str(tiny_model_dir), num_generations=2,
                  per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=3,
                  eval_steps=0, save_steps=100, learning_rate=1e-3, max_grad_norm=1.0,
                  max_turns=2, max_tool_calls=1, max_tokens_per_turn=48,
                  max_completion_length=160, search_max_tokens=32, seed=3)
    values.update(overrides)
    out = tmp_path / "out"
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", None, task / "corpus", out,
                     out / "model", out / "checkpoints")
    return TrainerConfig(**values), paths


def _seeded_run(tiny_model_dir, tmp_path, sampler=None, on_trainer=None,
                **overrides) -> list[dict]:
    """A 3-step run on the scripted sampler (half its searches vague: rewards vary, the
    weights move); its per-step metrics without wall-clock values."""
    from transformers import AutoTokenizer

    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser
    from mtgrpo.trainer.train import run

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg, paths = _config(tiny_model_dir, tmp_path, **overrides)
    run(cfg, paths, sampler=sampler or ScriptedSampler(tokenizer, query_accuracy=0.5, seed=0),
        parser=task_parser(), on_trainer=on_trainer)
    rows = [json.loads(x) for x in (paths.output_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("staleness", [0, -1], ids=["0", "auto-with-a-given-sampler"])
def test_max_staleness_0_is_the_synchronous_loop(tiny_model_dir, tmp_path, staleness):
    """0, and auto (-1) where train.run is handed a sampler (here the scripted one)."""
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    rows = _seeded_run(tiny_model_dir, tmp_path, max_staleness=staleness)
    assert [sorted(r) for r in rows] == [sorted(r) for r in expected]  # no new metric either
    bad = [(r["step"], k, r[k], e[k]) for r, e in zip(rows, expected) for k in e
           if not _close(r[k], e[k])]
    assert not bad, bad
    assert any(r["grad_norm"] > 0 for r in rows)  # the weights moved: a real comparison


@pytest.mark.slow
def test_max_staleness_1_with_the_scripted_sampler(tiny_model_dir, tmp_path):
    """The pipeline on CPU without a server: episodes one version behind after the first step,
    the background rollout joined before every push, staleness and TIS metrics logged."""
    rows = _seeded_run(tiny_model_dir, tmp_path, max_staleness=1)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["staleness_max"] for r in rows] == [0.0, 1.0, 1.0]
    assert [r["staleness_mean"] for r in rows] == [0.0, 1.0, 1.0]
    assert rows[0]["tis_stale_share"] == 0.0 and "tis_ratio_mean" not in rows[0]
    # The scripted sampler's logprobs are 0 (p = 1): every learner/sampler ratio is below 1.
    assert all(0 < r["tis_ratio_mean"] < 1 and r["tis_clipped_share"] == 0.0 for r in rows[1:])
    assert all(r["tis_ratio_max"] < 1 for r in rows[1:])
    # |learner - sampler| over every episode's tokens (current ones too), from the loss forward.
    assert all(r["sampling_sampling_logp_difference_mean"] > 0 for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_overlap_runs_no_extra_forward(tiny_model_dir, tmp_path, accumulation):
    """The learner's log-probs for the importance weights come from the loss forward: the
    overlapped run calls the policy exactly as often as the synchronous one (one forward per
    micro-batch), with gradient accumulation too."""
    counts = {}

    def counting(staleness):
        def hook(trainer):
            counts[staleness] = 0

            def count(*_):
                counts[staleness] += 1

            trainer.model.register_forward_pre_hook(count)
        return hook

    for staleness in (0, 1):
        _seeded_run(tiny_model_dir, tmp_path / str(staleness), on_trainer=counting(staleness),
                    max_staleness=staleness, gradient_accumulation_steps=accumulation)
    assert counts[0] == counts[1] == 3 * accumulation, counts


@pytest.mark.slow
@pytest.mark.parametrize("accumulation, loss_type",
                         [(1, "grpo"), (2, "dapo"), (2, "bnpo"), (1, "dr_grpo")])
def test_loss_forward_weights_equal_trls_separate_forward(tiny_model_dir, tmp_path,
                                                          accumulation, loss_type):
    """What TRL's vllm_importance_sampling_correction (token_truncate, cap tis_cap) computed
    with its separate no-grad forward at generation time, with current-version rows set to 1,
    is reproduced here and travels with the batch rows (TRL shuffles and splits them). The
    weights from the loss forward must equal it; and the loss with the weights folded into the
    advantages must equal TRL's loss with `per_token_loss * importance_sampling_ratio`, and so
    must its gradient."""
    import torch
    from trl import GRPOTrainer

    seen = {"weights": [], "losses": []}

    def spy(trainer):
        generate, weights_of, compute = (trainer._generate_and_score_completions,
                                         trainer._tis_weights, trainer._compute_loss)

        def generate_with_reference(inputs):
            output = generate(inputs)
            ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
            attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
            with torch.no_grad():
                old, _, _ = trainer._get_per_token_logps_and_entropies(
                    trainer.model, ids, attention, output["completion_ids"].size(1),
                    batch_size=trainer.args.per_device_train_batch_size)
            mask = output["completion_mask"] * output["tool_mask"]
            ratio = torch.exp(torch.nan_to_num(
                (old - output["sampling_per_token_logps"]) * mask, nan=0.0))
            ratio = torch.clamp(ratio, max=trainer.mt_config.tis_cap)
            ratio[~output["tis_stale"]] = 1.0
            output["reference_weights"] = ratio
            return output

        def checked(learner, inputs):
            weights = weights_of(learner, inputs)
            seen["weights"].append((weights, inputs["reference_weights"], inputs["tis_stale"],
                                    (inputs["completion_mask"] * inputs["tool_mask"]).bool()))
            return weights

        def both_losses(model, inputs):
            trl_inputs = {k: v for k, v in inputs.items()}  # before ours scales the advantages
            trl_inputs["importance_sampling_ratio"] = inputs["reference_weights"]
            ours = compute(model, inputs)
            lengths = {k: len(v) for k, v in trainer._metrics["train"].items()}
            trainer.use_vllm = trainer.vllm_importance_sampling_correction = True
            try:
                theirs = GRPOTrainer._compute_loss(trainer, model, trl_inputs)
            finally:
                trainer.use_vllm = trainer.vllm_importance_sampling_correction = False
                for k, v in trainer._metrics["train"].items():  # no metric counted twice
                    del v[lengths.get(k, 0):]
            params = [q for q in model.parameters() if q.requires_grad]
            grads = [torch.cat([g.flatten() for g in torch.autograd.grad(
                loss, params, retain_graph=retain)]) for loss, retain in ((ours, True),
                                                                         (theirs, False))]
            seen["losses"].append((ours.item(), theirs.item(), *grads))
            return ours

        trainer._generate_and_score_completions = generate_with_reference
        trainer._tis_weights = checked
        trainer._compute_loss = both_losses

    _seeded_run(tiny_model_dir, tmp_path, on_trainer=spy, max_staleness=1,
                gradient_accumulation_steps=accumulation, loss_type=loss_type)
    assert len(seen["weights"]) == 3 * accumulation
    stale_values = []
    for weights, reference, stale, mask in seen["weights"]:
        assert torch.allclose(weights, reference, rtol=1e-5, atol=1e-6)
        assert torch.equal(weights[~stale], torch.ones_like(weights[~stale]))
        stale_values.append(weights[stale][mask[stale]])
    stale_values = torch.cat(stale_values)
    # The scripted sampler's log-probs are 0 (p = 1): every stale weight is p_learner < 1.
    assert stale_values.numel() > 0 and bool((stale_values < 1).all())
    # A gradient on the stale steps (dr_grpo's is the smallest: it divides by B x 160 tokens).
    assert any(ours_grad.norm() > 1e-5 for *_, ours_grad, _ in seen["losses"][accumulation:])
    for ours, theirs, ours_grad, theirs_grad in seen["losses"]:
        assert math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-7)
        assert torch.allclose(ours_grad, theirs_grad, rtol=1e-4, atol=1e-7)


def test_config_refuses_overlap_where_the_sampler_shares_the_learner():
    from mtgrpo.errors import UserError

    for backend in ("transformers", "vllm_shared"):
        with pytest.raises(UserError) as err:
            TrainerConfig.from_mapping({"model_name_or_path": "m", "generation_backend": backend,
                                        "max_staleness": 1}, source="recipes/r.yaml")
        (line,) = err.value.lines()
        assert "recipes/r.yaml" in line and "trainer.max_staleness" in line
        assert f"generation_backend {backend}" in line, line
    for bad in (2, -2):
        with pytest.raises(UserError, match="out of range"):
            TrainerConfig(model_name_or_path="m", max_staleness=bad)


def test_auto_staleness_overlaps_only_with_a_vllm_server_of_its_own():
    """-1 (auto, the default): 1 with generation_backend vllm and the sampler train.run builds
    (the server returns the log-probs the weights need); 0 where the sampler shares the
    learner's GPU (no config error for the default there) or is handed in."""
    from mtgrpo.contract.config import resolved_staleness

    auto = TrainerConfig.from_mapping({"model_name_or_path": "m"}, source="recipes/r.yaml")
    assert auto.max_staleness == -1 and auto.generation_backend == "vllm"
    assert resolved_staleness(auto) == 1
    assert resolved_staleness(auto, injected_sampler=True) == 0
    for backend in ("transformers", "vllm_shared"):
        cfg = TrainerConfig.from_mapping({"model_name_or_path": "m",
                                          "generation_backend": backend}, source="r.yaml")
        assert resolved_staleness(cfg) == 0
        assert resolved_staleness(cfg.replace(max_staleness=0)) == 0
    for explicit in (0, 1):
        cfg = auto.replace(max_staleness=explicit)
        assert resolved_staleness(cfg) == resolved_staleness(cfg, injected_sampler=True) \
            == explicit
    assert TrainerConfig.from_hyperparameters(auto.to_hyperparameters()) == auto


class _FailingSampler:
    """The scripted sampler whose ``fail_at``-th request (1-based) fails as a dead server's."""

    def __init__(self, tokenizer, fail_at: int, hold_at: int = 0, until=None):
        from mtgrpo.testing.synthetic import ScriptedSampler

        self.inner = ScriptedSampler(tokenizer, query_accuracy=0.5, seed=0)
        self.fail_at, self.calls = fail_at, 0
        self.hold_at, self.until = hold_at, until  # request hold_at waits until until() is true

    async def generate(self, prompts, **kwargs):
        import asyncio

        from mtgrpo.rollout.client import SamplerError

        self.calls += 1
        if self.calls == self.fail_at:
            raise SamplerError("vLLM server at http://127.0.0.1:1 is unreachable (test)")
        for _ in range(6000):
            if self.calls != self.hold_at or self.until():
                break
            await asyncio.sleep(0.01)
        return await self.inner.generate(prompts, **kwargs)

    def close(self):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("fail_at", [3, 5])
def test_a_failed_background_rollout_ends_the_run_as_the_synchronous_loop(
        tiny_model_dir, tmp_path, fail_at):
    """Two requests per batch (two turns): request 3 is step 2's batch, 5 step 3's. The
    overlap samples them during the step before; the error must still end the run at the step
    that needs the batch, after the same checkpoints as the synchronous loop."""
    import threading

    from transformers import AutoTokenizer

    from mtgrpo.rollout.client import SamplerError
    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.train import newest_complete_checkpoint, run

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    outcomes = []
    for staleness in (0, 1):
        cfg, paths = _config(tiny_model_dir, tmp_path / str(staleness), save_steps=1,
                             max_staleness=staleness)
        with pytest.raises(SamplerError, match="unreachable") as err:
            run(cfg, paths, sampler=_FailingSampler(tokenizer, fail_at), parser=task_parser())
        newest = newest_complete_checkpoint(paths.checkpoint_dir)
        outcomes.append((str(err.value), newest.name if newest else None))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1] == ("checkpoint-1" if fail_at == 3 else "checkpoint-2")
    assert not [t for t in threading.enumerate() if t.name == "mtgrpo-prefetch"]


@pytest.mark.slow
def test_a_stop_request_joins_the_background_rollout_saves_and_resumes(tiny_model_dir,
                                                                       tmp_path):
    import threading

    from transformers import AutoTokenizer, TrainerCallback

    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.train import newest_complete_checkpoint, run

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg, paths = _config(tiny_model_dir, tmp_path, max_staleness=1)

    class StopInStepTwo(TrainerCallback):
        trainer = None

        def bind(self, trainer):
            self.trainer = trainer

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.trainer.request_save_and_stop()  # as the SIGTERM handler does

    stop = StopInStepTwo()
    # Step 3's first request (the 5th) is in flight until the stop cancels the rollout.
    slow = _FailingSampler(tokenizer, fail_at=0, hold_at=5,
                           until=lambda: stop.trainer.policy_clock.cancelled)
    first = run(cfg, paths, sampler=slow, parser=task_parser(), callbacks=[stop])
    assert first["stopped_early"] and first["global_step"] == 2
    assert slow.calls == 5  # the cancelled rollout sent no further request
    assert not [t for t in threading.enumerate() if t.name == "mtgrpo-prefetch"]
    assert newest_complete_checkpoint(paths.checkpoint_dir).name == "checkpoint-2"
    second = run(cfg, paths, sampler=_FailingSampler(tokenizer, fail_at=0), parser=task_parser())
    assert second["resumed_from"].endswith("checkpoint-2") and second["global_step"] == 3
    rows = [json.loads(x) for x in (paths.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[2]["staleness_max"] == 0.0  # the resumed step's batch: sampled on resume


def test_a_weight_push_waits_for_the_rollout_in_flight():
    import threading
    import time

    from mtgrpo.trainer.overlap import PolicyClock

    clock = PolicyClock(4)
    events = []
    inside = threading.Event()

    def rollout():
        with clock.sampling() as version:
            inside.set()
            time.sleep(0.3)
            events.append(("rollout end", version, clock.version))

    thread = threading.Thread(target=rollout)
    thread.start()
    inside.wait()
    with clock.updating(5):
        events.append(("push", clock.version))
    thread.join()
    assert events == [("rollout end", 4, 4), ("push", 4)] and clock.version == 5
    with clock.sampling() as version:
        assert version == 5


_TWO_PROCESSES = """
import json, sys
from pathlib import Path
from accelerate import PartialState
from transformers import AutoTokenizer
from mtgrpo.contract import TrainerConfig
from mtgrpo.testing.synthetic import ScriptedSampler, task_parser
from mtgrpo.trainer.paths import RunPaths
from mtgrpo.trainer.train import run

model, task, out = (Path(a) for a in sys.argv[1:4])
cfg = TrainerConfig(model_name_or_path=str(model), num_generations=2,
                    per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=3,
                    eval_steps=0, save_steps=100, learning_rate=1e-3, max_grad_norm=1.0,
                    max_turns=2, max_tool_calls=1, max_tokens_per_turn=48,
                    max_completion_length=160, search_max_tokens=32, seed=3, max_staleness=1,
                    deepspeed_stage=0)
rank = PartialState().process_index
run(cfg, RunPaths(str(model), task / "train.jsonl", None, task / "corpus", out, out / "model",
                  out / "checkpoints"),
    sampler=ScriptedSampler(AutoTokenizer.from_pretrained(model), query_accuracy=0.5,
                            seed=rank), parser=task_parser())
"""


@pytest.mark.slow
def test_overlap_with_two_learner_processes(tiny_model_dir, tmp_path):
    """Two learner processes (accelerate on CPU, gloo), each prefetching its own shard: the
    staleness and weight metrics are gathered over both (their collectives pair up), with
    gradient accumulation."""
    import os
    import subprocess
    import sys

    from mtgrpo.testing.synthetic import write_task
    from tests.conftest import free_port

    task = write_task(tmp_path / "task")
    script = tmp_path / "two.py"
    script.write_text(_TWO_PROCESSES)
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(repo)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(free_port()), str(script), str(tiny_model_dir), str(task),
         str(out)], capture_output=True, text=True, timeout=600, cwd=repo, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["staleness_max"] for r in rows] == [0.0, 1.0, 1.0]
    assert [r["tis_stale_share"] for r in rows] == [0.0, 1.0, 1.0]
    assert all(0 < r["tis_ratio_mean"] < 1 for r in rows[1:])


@pytest.mark.vllm
def test_overlap_with_the_real_server(vllm_server, tiny_model_dir, tmp_path, capsys):
    """max_staleness auto (1 here) against the real vLLM server (reload weight sync, sampler logprobs):
    every episode is current or one version behind; no request spans a weight push; the
    importance weights are exactly 1 on current-version episodes and differ from 1 on stale
    ones; on current-version episodes the server's log-probs match the learner's (on-policy)
    much closer than on stale ones."""
    import torch
    from transformers import AutoModelForCausalLM

    from mtgrpo.rollout.weight_sync import ReloadWeightSync
    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.train import run

    # Other tests may have pushed other weights: start from the original ones.
    ReloadWeightSync(vllm_server.url).push(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    cfg, paths = _config(tiny_model_dir, tmp_path, generation_backend="vllm",
                         weight_sync="reload", vllm_server_url=vllm_server.url,
                         vllm_request_timeout_s=120, num_generations=4,
                         per_device_train_batch_size=8, max_steps=4, learning_rate=1e-2,
                         max_tokens_per_turn=24, max_completion_length=128, temperature=1.0)
    assert cfg.max_staleness == -1  # auto: train.run builds the vLLM sampler, so it overlaps
    seen, trainers = [], []

    def spy(trainer):
        trainers.append(trainer)
        weights_of = trainer._tis_weights

        def recording(learner, inputs):  # the loss forward's log-probs, per micro-batch
            weights = weights_of(learner, inputs)
            mask = (inputs["completion_mask"] * inputs["tool_mask"]).bool()
            gap = (learner - inputs["sampling_per_token_logps"]).abs()
            for row, stale in enumerate(inputs["tis_stale"].tolist()):
                seen.append((trainer.state.global_step, int(stale),
                             weights[row][mask[row]].clone(), gap[row][mask[row]].mean().item()))
            return weights

        trainer._tis_weights = recording

    def parity(episode):
        from mtgrpo.trainer.types import RewardBreakdown

        ids = [i for t in episode.turns if t.role == "assistant" for i in t.token_ids]
        return RewardBreakdown(turn=0.0, outcome=sum(i % 2 == 0 for i in ids) / max(len(ids), 1),
                               components={"exact_match": 0.0})

    summary = run(cfg, paths, parser=task_parser(), scorer=parity, on_trainer=spy)
    assert summary["global_step"] == 4
    assert trainers[0].overlap and trainers[0].mt_config.max_staleness == 1
    assert "mtgrpo: rollouts: overlapped with learning" in capsys.readouterr().out
    requests = list(trainers[0].policy_clock.requests)
    assert requests and all(start == end for start, end in requests), requests
    # Steps 1-4 sampled with versions 0, 0, 1, 2; the final evaluation with 4.
    assert {v for v, _ in requests} == {0, 1, 2, 4}
    assert len(seen) == 4 * 8  # every episode's weights, computed in the loss forward
    assert {lag for step, lag, _, _ in seen if step == 0} == {0}  # step 1: sampled on the spot
    assert {lag for step, lag, _, _ in seen if step > 0} == {1}  # later: prefetched, one behind
    current = [r for r in seen if r[1] == 0]
    stale = [r for r in seen if r[1] == 1]
    assert all(torch.equal(w, torch.ones_like(w)) for _, _, w, _ in current)
    weights = torch.cat([w for _, _, w, _ in stale])
    assert (weights != 1).float().mean() > 0.5 and weights.max() <= cfg.tis_cap
    on_policy = sum(g for *_, g in current) / len(current)
    off_policy = sum(g for *_, g in stale) / len(stale)
    print(f"mean |learner - sampler| log-prob: current {on_policy:.4f}, stale {off_policy:.4f}")
    assert on_policy < 0.05 and off_policy > 2 * on_policy
    rows = [json.loads(x) for x in (paths.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["staleness_max"] for r in rows] == [0.0, 1.0, 1.0, 1.0]
    assert all(0 <= r["tis_clipped_share"] <= 1 and r["tis_ratio_max"] > 0 for r in rows[1:])


if __name__ == "__main__":  # rewrite the fixture (on a commit whose loop is the reference)
    import tempfile

    from mtgrpo.testing.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="mtgrpo-overlap-fixture-"))
    rows = _seeded_run(build_tiny_model(work / "model", seed=0), work / "run")
    FIXTURE.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE}")
