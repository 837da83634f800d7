"""On-policy proof against the real vLLM CPU server.

A real ``train.run`` (vLLM rollouts over HTTP, reload weight sync after every optimizer step)
trains the tiny model for 3 steps. After the sync at train start and after each step, a
callback asks the server for the prompt log-probabilities of a fixed token sequence (a full
episode: prompt, tool call, tool result, answer) and compares them with the trainer's current
policy on the same ids.

Tolerance: the server runs bf16, the trainer fp32. The part of the gap that bf16 explains is
measured, not guessed: the trainer's own model cast to bf16 gives log-probabilities that differ
from fp32 by ``bf16_gap`` (mean over tokens). The server must agree with the trainer within
``TOL = max(4 * bf16_gap, 0.02)`` nats (mean over the sequence's tokens; vLLM's bf16 kernels
round differently from torch's, hence the factor). A server one step behind would be off by
the per-step policy change, which the test requires to be larger than ``TOL`` every step: a
stale or half-updated server (e.g. a stale tied LM head) cannot pass.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mtgrpo.contract import TrainerConfig
from mtgrpo.trainer.paths import RunPaths
from mtgrpo.trainer.types import RewardBreakdown

pytestmark = pytest.mark.vllm
STEPS = 3


def _policy_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def _parity_reward(episode) -> RewardBreakdown:
    """Any reward that varies within a group moves the weights: the share of even token ids
    among the sampled tokens does, even for a random model."""
    ids = [i for t in episode.turns if t.role == "assistant" for i in t.token_ids]
    return RewardBreakdown(turn=0.0, outcome=sum(i % 2 == 0 for i in ids) / max(len(ids), 1),
                           components={"exact_match": 0.0})


def _greedy(client, prompt, n=8):
    """The server's greedy continuation of ``prompt`` and the logprob of each token."""
    answer = client.post_sync("/v1/completions", {
        "prompt": [prompt], "max_tokens": n, "temperature": 0.0, "logprobs": 0,
        "return_token_ids": True, "ignore_eos": True})
    choice = answer["choices"][0]
    return choice["token_ids"], torch.tensor(choice["logprobs"]["token_logprobs"])


class ServerAgreement:
    """Records, after every sync, the server's and the trainer's log-probs of fixed ids.

    Two server paths: prompt scoring (``prompt_logprobs``, which vLLM computes without its
    prefix cache) and generation from a prompt the server has already seen (which reuses cached
    KV blocks: stale ones if a sync forgot to drop them).
    """

    def __init__(self, client, ids, prompt):
        from transformers import TrainerCallback

        self.client, self.ids, self.prompt, self.rows = client, ids, prompt, []
        outer = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                outer.record(model)

            def on_step_end(self, args, state, control, model=None, **kwargs):
                outer.record(model)

        self.callback = Callback()

    def record(self, model):
        server = torch.tensor(self.client.score_sync([self.ids])[0])
        trainer = _policy_logprobs(model, self.ids)
        bf16 = _policy_logprobs(copy.deepcopy(model).to(torch.bfloat16), self.ids)
        tokens, generated = _greedy(self.client, self.prompt)
        expected = _policy_logprobs(model, self.prompt + tokens)[-len(tokens):]
        self.rows.append({"server": server, "trainer": trainer,
                          "bf16_gap": (bf16 - trainer).abs().mean().item(),
                          "generation_gap": (generated - expected).abs().mean().item()})
        _greedy(self.client, self.prompt)  # cached now: the next sync must invalidate it


@pytest.mark.parametrize("backend, weight_sync", [("vllm", "reload"), ("vllm_shared", "auto")],
                         ids=["vllm", "vllm_shared"])
def test_server_follows_the_policy_every_step(vllm_server, tiny_model_dir, tmp_path,
                                              monkeypatch, backend, weight_sync):
    """vllm_shared runs the same loop with its own weight sync: reload through a fresh
    directory in /dev/shm (recorded here), removed when training ends."""
    _check_server_follows_the_policy(vllm_server, tiny_model_dir, tmp_path, monkeypatch,
                                     generation_backend=backend, weight_sync=weight_sync)


def test_server_follows_the_lora_policy_every_step(vllm_server, tiny_model_dir, tmp_path,
                                                   monkeypatch):
    """LoRA on: the trainer's policy is the peft model (base + adapters); every push sends the
    merged weights under the base checkpoint's names, and the server must match them."""
    pytest.importorskip("peft")
    _check_server_follows_the_policy(vllm_server, tiny_model_dir, tmp_path, monkeypatch,
                                     lora_r=8, lora_alpha=32, deepspeed_stage=0)


def _check_server_follows_the_policy(vllm_server, tiny_model_dir, tmp_path, monkeypatch,
                                     **changes):
    from transformers import AutoTokenizer

    from mtgrpo.rollout.client import VLLMClient
    from mtgrpo.rollout.weight_sync import ReloadWeightSync
    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser, write_task
    from mtgrpo.trainer.environment import ToolEnvironment
    from mtgrpo.trainer.train import run
    from transformers import AutoModelForCausalLM

    from mtgrpo.rollout import shared_gpu

    made = []
    real_root = shared_gpu.shm_weights_root
    monkeypatch.setattr(shared_gpu, "shm_weights_root",
                        lambda *a, **k: made.append(real_root(*a, **k)) or made[-1])
    # Other tests may have pushed other weights: start from the original ones.
    ReloadWeightSync(vllm_server.url).push(AutoModelForCausalLM.from_pretrained(tiny_model_dir))

    task = write_task(tmp_path / "task")
    settings = {"generation_backend": "vllm", "weight_sync": "reload", **changes}
    cfg = TrainerConfig(
        model_name_or_path=str(tiny_model_dir), vllm_server_url=vllm_server.url,
        vllm_request_timeout_s=120,
        num_generations=4, per_device_train_batch_size=8, gradient_accumulation_steps=1,
        max_steps=STEPS, learning_rate=1e-2, max_grad_norm=1.0, eval_steps=0, save_steps=100,
        max_turns=2, max_tool_calls=1, max_tokens_per_turn=24, max_completion_length=128,
        search_max_tokens=32, temperature=1.0, seed=1, **settings)
    out = tmp_path / "out"
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", None, task / "corpus", out,
                     out / "model", out / "checkpoints")

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    probe_env = ToolEnvironment.from_config(cfg, tokenizer, {}, parser=task_parser())
    from mtgrpo.testing.synthetic import make_task
    record = make_task(0)[0][0]
    prompt = probe_env.prompt_ids(record)
    fixed = prompt + tokenizer.encode(ScriptedSampler(tokenizer).turn_text(
        tokenizer.decode(prompt)), add_special_tokens=False)
    agreement = ServerAgreement(VLLMClient(vllm_server.url), fixed, prompt)
    summary = run(cfg, paths, parser=task_parser(), scorer=_parity_reward,
                  callbacks=[agreement.callback])

    assert summary["global_step"] == STEPS
    if cfg.generation_backend == "vllm_shared":
        assert len(made) == 1 and made[0].parent == Path("/dev/shm") and not made[0].exists()
    else:
        assert made == []
    rows = agreement.rows
    assert len(rows) == STEPS + 1  # after the initial sync, then after every step
    report = []
    for step, row in enumerate(rows):
        tol = max(4 * row["bf16_gap"], 0.02)
        gap = (row["server"] - row["trainer"]).abs().mean().item()
        report.append(f"step {step}: server-trainer {gap:.4f} (tol {tol:.4f}), generation "
                      f"{row['generation_gap']:.4f}")
        assert gap <= tol and row["generation_gap"] <= tol, report
        if step:
            moved = (row["trainer"] - rows[step - 1]["trainer"]).abs().mean().item()
            stale = (row["server"] - rows[step - 1]["trainer"]).abs().mean().item()
            report[-1] += f", policy moved {moved:.4f}, stale gap {stale:.4f}"
            assert moved > tol and stale > tol, report
    # The final model directory is what vLLM serves after training (merged, for LoRA).
    client = VLLMClient(vllm_server.url)
    client.post_sync("/collective_rpc", {"method": "mtgrpo_reload_weights",
                                         "kwargs": {"weights_path": str(paths.model_dir)}})
    client.post_sync("/reset_prefix_cache")
    final = torch.tensor(client.score_sync([fixed])[0])
    gap = (final - rows[-1]["trainer"]).abs().mean().item()
    report.append(f"final model served: server-trainer {gap:.4f}")
    print("\n".join(report))
    assert gap <= max(4 * rows[-1]["bf16_gap"], 0.02), report
