"""MTGRPOTrainer's hooks on stubbed rollouts, and train.run's stop/resume/failure behaviour."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import torch

from mtgrpo.contract import TrainerConfig
from mtgrpo.trainer.paths import RunPaths
from mtgrpo.trainer.types import Episode, QARecord, RewardBreakdown, Turn

RECORDS = [QARecord(id=f"q{i}", question=f"What is the code of {w}?", aliases=("seven",))
           for i, w in enumerate(["bravo", "delta"])]
# (turn reward, outcome reward, has a tool result) of each scripted episode, group by group.
SCRIPT = {"q0": [(0.7, 2.0, True), (0.0, 0.0, True)],
          "q1": [(0.2, 1.0, True), (0.2, 0.0, False)]}


def _episode(tokenizer, record, j):
    turn, outcome, tool = SCRIPT[record.id][j]
    call = tokenizer.encode(f"<tool> q{j} </tool>")
    result = tokenizer.encode("<result> The code is seven. </result>")
    answer = tokenizer.encode(f"<answer> {'seven' if outcome else 'three'} </answer>")
    turns = [Turn("assistant", f"{turn}|{outcome}", call, [-0.5] * len(call))]
    if tool:
        turns.append(Turn("tool", "", result, None, tool_ok=True))
    turns.append(Turn("assistant", "", answer, [-0.25] * len(answer)))
    return Episode(record=record, prompt_ids=tokenizer.encode(record.question), turns=turns)


def _scorer(episode):
    turn, outcome = map(float, episode.turns[0].text.split("|"))
    return RewardBreakdown(turn=turn, outcome=outcome, components={"exact_match": outcome > 1})


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _trainer(tiny_model_dir, tokenizer, tmp_path, algorithm):
    from transformers import AutoModelForCausalLM

    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer
    from mtgrpo.trainer.train import grpo_args

    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=2,
                        per_device_train_batch_size=4, gradient_accumulation_steps=1,
                        max_steps=1, eval_steps=0, algorithm=algorithm,
                        turn_advantage_coef=0.5)
    paths = RunPaths(str(tiny_model_dir), tmp_path / "t.jsonl", None, tmp_path, tmp_path / "o",
                     tmp_path / "m", tmp_path / "c")
    seen = []

    def rollout(records):
        seen.append([r.id for r in records])
        counts: dict[str, int] = {}
        out = []
        for r in records:
            j = counts.get(r.id, 0)
            counts[r.id] = j + 1
            out.append(_episode(tokenizer, r, j))
        return out

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = MTGRPOTrainer(model, grpo_args(cfg, paths), processing_class=tokenizer, config=cfg,
                            train_records=RECORDS, rollout=rollout, scorer=_scorer)
    trainer.model.train()
    return trainer, seen


def _z(values):
    t = torch.tensor(values, dtype=torch.float64)
    if torch.allclose(t, t[0]):
        return [0.0] * len(values)
    return ((t - t.mean()) / (t.std() + 1e-4)).tolist()


@pytest.mark.parametrize("algorithm", ["mt_grpo", "grpo_or", "grpo_mr"])
def test_per_token_advantages_by_group(tiny_model_dir, tokenizer, tmp_path, algorithm):
    trainer, seen = _trainer(tiny_model_dir, tokenizer, tmp_path, algorithm)
    inputs = [{"prompt": "0"}, {"prompt": "0"}, {"prompt": "1"}, {"prompt": "1"}]
    batch = trainer._generate_and_score_completions(inputs)
    assert seen == [["q0", "q0", "q1", "q1"]]  # TRL's repeated prompts, one episode each
    episodes = [_episode(tokenizer, RECORDS[0], 0), _episode(tokenizer, RECORDS[0], 1),
                _episode(tokenizer, RECORDS[1], 0), _episode(tokenizer, RECORDS[1], 1)]
    # Token ids reach the loss exactly as sampled/appended: nothing re-tokenized.
    for row, ep in enumerate(episodes):
        n = len(ep.completion_ids)
        assert batch["completion_ids"][row, :n].tolist() == ep.completion_ids
        assert batch["tool_mask"][row, :n].tolist() == ep.env_mask
    adv = batch["advantages"]
    assert adv.shape == batch["completion_ids"].shape
    for group, rows in enumerate(([0, 1], [2, 3])):
        rid = RECORDS[group].id
        turn = _z([SCRIPT[rid][j][0] for j in range(2)])
        outcome = _z([SCRIPT[rid][j][1] for j in range(2)])
        combined = _z([SCRIPT[rid][j][0] + SCRIPT[rid][j][1] for j in range(2)])
        for j, row in enumerate(rows):
            ep = episodes[row]
            split = ep.first_tool_result_index
            has_tool = split is not None
            if algorithm == "grpo_or":
                first = later = outcome[j]
            elif algorithm == "grpo_mr" or not has_tool:
                first = later = combined[j]
            else:
                first, later = outcome[j] + 0.5 * turn[j], outcome[j]
            n = len(ep.completion_ids)
            split = n if split is None else split
            assert adv[row, :split].tolist() == pytest.approx([first] * split, abs=1e-5)
            assert adv[row, split:n].tolist() == pytest.approx([later] * (n - split), abs=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["exact_match"] == [0.25] and metrics["tool_success_rate"] == [1.0]
    assert metrics["rewards/turn/mean"] == [pytest.approx((0.7 + 0.0 + 0.2 + 0.2) / 4)]


def test_sampler_logprobs_pass_through_or_none(tiny_model_dir, tokenizer, tmp_path):
    import dataclasses

    trainer, _ = _trainer(tiny_model_dir, tokenizer, tmp_path, "mt_grpo")
    ep = _episode(tokenizer, RECORDS[0], 0)
    [row] = trainer.episodes_to_batch([ep])["logprobs"]
    env_len = len(ep.turns[1].token_ids)  # tool-result tokens: no sampler logprob
    assert row == [-0.5] * len(ep.turns[0].token_ids) + [0.0] * env_len + [-0.25] * (
        len(ep.turns[2].token_ids))
    # VLLMSampler(logprobs=False), as training uses it: TRL gets None, not made-up zeros.
    bare = dataclasses.replace(ep, turns=[dataclasses.replace(t, logprobs=None) for t in ep.turns])
    batch = trainer.episodes_to_batch([bare])
    assert batch["logprobs"] is None and batch["completion_ids"] == [ep.completion_ids]


class _SilentServer:
    """Accepts connections and never answers: a vLLM server that stopped responding."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def _synthetic_run_config(tiny_model_dir, tmp_path, **overrides):
    from mtgrpo.testing.synthetic import write_task

    task = write_task(tmp_path / "task")
    values = dict(model_name_or_path=str(tiny_model_dir), num_generations=2,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=3,
                  eval_steps=0, save_steps=1, save_total_limit=5, learning_rate=1e-3,
                  max_turns=2, max_tool_calls=1, max_tokens_per_turn=48,
                  max_completion_length=160, search_max_tokens=32)
    values.update(overrides)
    out = tmp_path / "out"
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", task / "eval.jsonl",
                     task / "corpus", out, out / "model", out / "checkpoints")
    return TrainerConfig(**values), paths


def test_unresponsive_server_ends_training_with_a_clear_error(tiny_model_dir, tmp_path):
    from mtgrpo.rollout.client import SamplerError
    from mtgrpo.trainer.train import run

    server = _SilentServer()
    try:
        cfg, paths = _synthetic_run_config(
            tiny_model_dir, tmp_path, generation_backend="vllm", weight_sync="reload",
            vllm_server_url=f"http://127.0.0.1:{server.port}", vllm_request_timeout_s=2.0)
        start = time.monotonic()
        with pytest.raises(SamplerError) as err:
            run(cfg, paths)
        assert time.monotonic() - start < 120
        assert f"127.0.0.1:{server.port}" in str(err.value)
    finally:
        server.close()


@pytest.mark.slow
def test_stop_request_saves_and_resume_continues(tiny_model_dir, tokenizer, tmp_path, capsys):
    from transformers import TrainerCallback

    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser
    from mtgrpo.trainer.train import newest_complete_checkpoint, run

    cfg, paths = _synthetic_run_config(tiny_model_dir, tmp_path, save_steps=100)

    class StopAfterFirstStep(TrainerCallback):
        def bind(self, trainer):
            self.trainer = trainer

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.trainer.request_save_and_stop()  # as a SIGTERM handler would

    first = run(cfg, paths, sampler=ScriptedSampler(tokenizer), parser=task_parser(),
                callbacks=[StopAfterFirstStep()])
    assert first["stopped_early"] and first["global_step"] == 2
    # On CPU the model is fp32 (its own weights are the masters) and Liger is off under auto.
    assert first["master_weights"] == "fp32" and first["liger_kernels"] == []
    assert ("mtgrpo: liger kernels: off; master weights: fp32 (the model's own fp32 weights)"
            in capsys.readouterr().out)
    checkpoint = newest_complete_checkpoint(paths.checkpoint_dir)
    assert checkpoint is not None and checkpoint.name == "checkpoint-2"
    # A checkpoint cut short (no trainer_state.json) is never resumed from.
    (paths.checkpoint_dir / "checkpoint-9").mkdir()
    assert newest_complete_checkpoint(paths.checkpoint_dir) == checkpoint

    second = run(cfg, paths, sampler=ScriptedSampler(tokenizer), parser=task_parser())
    assert second["resumed_from"] == str(checkpoint) and second["global_step"] == 3
    steps = [json.loads(x)["step"] for x in (paths.output_dir / "metrics.jsonl").read_text()
             .splitlines()]
    assert steps == [1, 2, 3]


def test_liger_on_where_it_cannot_run_stops_at_start_in_one_line(tiny_model_dir, tmp_path):
    from mtgrpo.errors import UserError
    from mtgrpo.trainer.train import run

    cfg, paths = _synthetic_run_config(tiny_model_dir, tmp_path, liger_kernels="on")
    with pytest.raises(UserError) as err:
        run(cfg, paths)
    (line,) = err.value.lines()
    assert "trainer.liger_kernels" in line and "no CUDA device" in line, line
    assert not paths.output_dir.exists()  # refused before anything was written


def test_liger_setting_resolves_off_on_cpu_and_on_where_available(monkeypatch):
    import importlib.util

    from mtgrpo.trainer import liger

    assert liger.resolve("auto", cuda=False) is False
    assert liger.resolve("off", cuda=True) is False
    installed = importlib.util.find_spec("liger_kernel") is not None
    assert liger.resolve("auto", cuda=True) is installed
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else object())
    assert liger.resolve("auto", cuda=True) is False
    with pytest.raises(Exception, match="liger-kernel is not installed"):
        liger.resolve("on", cuda=True)


def test_whole_policy_lifts_deepspeeds_start_of_forward_hook_and_puts_it_back_first(
        monkeypatch):
    # What the 2-GPU ZeRO-3 test (test_sagemaker_gpu.py) needs, on CPU with stand-ins: inside
    # the context a forward runs no DeepSpeed start-of-forward hook (its collective check would
    # pair with other ranks' unrelated collectives); afterwards the hook is back, first in line.
    import contextlib

    import trl.models.utils

    from mtgrpo.trainer import grpo_trainer

    module = torch.nn.Linear(2, 2)
    calls: list[str] = []
    start = module.register_forward_pre_hook(lambda m, args: calls.append("start"))
    module.register_forward_pre_hook(lambda m, args: calls.append("fetch"))

    class Offload:
        fwd_pre_hook = start

    Offload.module = module

    class Engine:
        optimizer = type("Optimizer", (), {"parameter_offload": Offload})()

    @contextlib.contextmanager
    def unwrap(engine, accelerator, gather_deepspeed3_params):
        assert gather_deepspeed3_params is True
        yield module

    monkeypatch.setattr(trl.models.utils, "unwrap_model_for_generation", unwrap)
    with grpo_trainer._whole_policy(Engine(), accelerator=None) as model:
        model(torch.zeros(1, 2))
        assert calls == ["fetch"]
    calls.clear()
    module(torch.zeros(1, 2))
    assert calls == ["start", "fetch"]
    assert Offload.fwd_pre_hook is not start  # a live handle for the next removal
