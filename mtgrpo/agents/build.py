"""The trainer's wiring of an agent run: endpoint, runner and scorer over the run's sampler.

``train.build_components`` calls :func:`agent_components` when the config names ``agent`` or
``agent_command``; it returns the same parts as the built-in loop (``rollout``, ``scorer``,
...), with the endpoint as the part to close.
"""

from __future__ import annotations

import os
from typing import Any


def agent_components(config, paths, tokenizer, task, sampler, weight_sync, *, scorer=None,
                     agent=None, source: str = "") -> dict[str, Any]:
    from mtgrpo.agents.chat import ChatRenderer
    from mtgrpo.agents.endpoint import AgentEndpoint
    from mtgrpo.agents.loading import load_agent
    from mtgrpo.agents.runner import AgentRunner
    from mtgrpo.agents.scoring import AgentScorer
    from mtgrpo.task.api import TaskContext

    spec = agent or load_agent(config, TaskContext(config, paths, tokenizer), source=source)
    if spec is None:
        raise ValueError("agent_components needs an agent (agent or agent_command)")
    # Every training process serves its own episodes: a fixed port is offset by the local rank.
    port = config.agent_port + int(os.environ.get("LOCAL_RANK", "0")) if config.agent_port else 0
    renderer = ChatRenderer(tokenizer, task.parser)
    endpoint = AgentEndpoint(
        sampler, renderer, temperature=config.temperature, top_p=config.top_p,
        max_tokens_per_turn=config.max_tokens_per_turn,
        max_completion_length=config.max_completion_length,
        max_prompt_length=config.max_prompt_length, port=port).start()
    runner = AgentRunner(endpoint, spec, concurrency=config.agent_concurrency,
                         timeout_s=config.agent_timeout_s, parser=task.parser)

    def rollout(records):
        return runner.rollout_sync(records, 1)

    return {"environment": endpoint, "sampler": sampler, "parser": task.parser,
            "scorer": scorer or AgentScorer(task.rubric, task.parser), "rollout": rollout,
            "weight_sync": weight_sync, "task": task, "policy_clock": None, "runner": runner}
