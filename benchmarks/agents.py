"""What the agent endpoint costs: the same episodes played by the built-in loop and by the
retrieval agent (``mtgrpo/examples/retrieval_agent.py``) through the endpoint.

The sampler is the synthetic task's scripted policy (no model: what is timed is the loop, the
HTTP round trips, the rendering and the recording), so the difference is the endpoint's
overhead per call; with a real model it is added to the sampler's time. Both produce the same
tokens (tests/test_agents.py checks it). Prints one JSON line per repeat and the medians.

    python benchmarks/agents.py [--episodes 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from mtgrpo.agents.chat import ChatRenderer
    from mtgrpo.agents.endpoint import AgentEndpoint
    from mtgrpo.agents.loading import AgentSpec
    from mtgrpo.agents.runner import AgentRunner
    from mtgrpo.contract import TrainerConfig
    from mtgrpo.examples.retrieval_agent import RetrievalAgent
    from mtgrpo.task.api import TaskContext
    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser, write_task
    from mtgrpo.testing.tiny import build_tokenizer
    from mtgrpo.trainer.data import load_records
    from mtgrpo.trainer.environment import ToolEnvironment
    from mtgrpo.trainer.paths import RunPaths

    tokenizer = build_tokenizer()
    work = Path(tempfile.mkdtemp(prefix="mtgrpo-agents-bench-"))
    task = write_task(work / "task")
    cfg = TrainerConfig(model_name_or_path="m", max_turns=2, max_tool_calls=1,
                        max_tokens_per_turn=40, max_completion_length=128,
                        search_max_tokens=32, search_top_k=1)
    paths = RunPaths("m", task / "train.jsonl", None, task / "corpus", work, work, work)
    agent = RetrievalAgent(TaskContext(cfg, paths, tokenizer))
    records = load_records(task / "train.jsonl")
    records = (records * (args.episodes // len(records) + 1))[:args.episodes]
    env = ToolEnvironment.from_config(cfg, tokenizer, {"wiki_search": agent.search},
                                      parser=task_parser())
    sampler = ScriptedSampler(tokenizer)
    endpoint = AgentEndpoint(sampler, ChatRenderer(tokenizer, task_parser()), temperature=1.0,
                             top_p=1.0, max_tokens_per_turn=40, max_completion_length=128,
                             max_prompt_length=512).start()
    runner = AgentRunner(endpoint, AgentSpec("retrieval", call=agent), concurrency=64)
    print(json.dumps({"machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
                      "episodes": args.episodes}))
    loop_s, agent_s = [], []
    try:
        for repeat in range(args.repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            built_in = env.rollout_sync(records, 1, sampler)
            t1 = time.perf_counter()
            played = runner.rollout_sync(records, 1)
            t2 = time.perf_counter()
            same = all(a.completion_ids == b.completion_ids for a, b in zip(played, built_in))
            if repeat:
                loop_s.append(t1 - t0)
                agent_s.append(t2 - t1)
                print(json.dumps({"repeat": repeat, "built_in_s": round(t1 - t0, 4),
                                  "agent_s": round(t2 - t1, 4), "same_tokens": same}))
    finally:
        endpoint.close()
        env.close()
    calls = sum(e.calls for e in played)
    loop, ag = statistics.median(loop_s), statistics.median(agent_s)
    print(json.dumps({"median_built_in_s": round(loop, 4), "median_agent_s": round(ag, 4),
                      "calls": calls,
                      "endpoint_ms_per_call": round(1000 * (ag - loop) / calls, 3)}))


if __name__ == "__main__":
    main()
