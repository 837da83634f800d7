"""Where a recipe's processes go: the launcher's own placement, computed at render time.

``placement`` asks :func:`mtgrpo.sagemaker.launcher.build_plan` (the code the container runs)
what every host of the job would start, with the catalogue's GPU count standing in for
``nvidia-smi``: the vLLM GPUs of the first host, the training processes per host and the world
size. So the batch shape is checked against the world size the job will really have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import UserError


@dataclass(frozen=True)
class Placement:
    hosts: int
    gpus_per_host: int
    vllm_gpus: tuple[int, ...]  # on the first host
    processes_per_host: tuple[int, ...]  # as accelerate starts them, one entry per host
    idle_gpus: int  # GPUs neither training nor serving (the same indices as vLLM's, off host 1)
    error: str = ""  # the launcher's refusal (e.g. vLLM on a one-GPU host), if any
    error_key: str = ""  # the trainer key it names (generation_backend, vllm_gpus, ...)
    error_allowed: str = ""
    vllm_utilization: float | None = None  # the --gpu-memory-utilization the launcher passes

    @property
    def world_size(self) -> int:
        return sum(self.processes_per_host)

    @property
    def trains_on_gpu(self) -> bool:
        return self.gpus_per_host > 0


def placement(config: TrainerConfig, *, instance_count: int, gpus_per_host: int,
              gpu_memory_bytes: int | None = None, model: str | None = None) -> Placement:
    """The launcher's placement of this trainer config on ``instance_count`` hosts.

    ``gpu_memory_bytes`` (the catalogue's) stands in for nvidia-smi where the launcher asks it
    (vLLM sharing the training GPU sizes its share from it); ``model`` is the local model
    directory the launcher would read, if the planner has one.
    """
    import inspect

    from mtgrpo.sagemaker.contract import OptML, ResourceConfig
    from mtgrpo.sagemaker.launcher import build_plan

    extra: dict[str, Any] = {}
    if gpu_memory_bytes and "gpu_memory_bytes" in inspect.signature(build_plan).parameters:
        extra["gpu_memory_bytes"] = gpu_memory_bytes
    hosts = tuple(f"algo-{i + 1}" for i in range(max(instance_count, 1)))
    per_host: list[int] = []
    vllm: tuple[int, ...] = ()
    utilization = None
    idle = 0
    for host in hosts:
        try:
            plan = build_plan(config, ResourceConfig(current_host=host, hosts=hosts),
                              OptML(Path("/opt/ml")), model=model or "/opt/ml/input/data/model",
                              gpu_count=gpus_per_host, master_addr="10.0.0.1",
                              python="python", **extra)
        except UserError as err:
            first = err.problems[0]
            return Placement(len(hosts), gpus_per_host, (), (), 0,
                             error="; ".join(p.message for p in err.problems),
                             error_key=first.key, error_allowed=first.allowed)
        per_host.append(plan.processes_per_host if gpus_per_host else 1)
        if plan.node_rank == 0:
            vllm = plan.vllm_gpus
            if plan.vllm is not None:
                utilization = plan.vllm.gpu_memory_utilization
        else:
            idle += gpus_per_host - len(plan.train_gpus)
    return Placement(len(hosts), gpus_per_host, vllm, tuple(per_host), idle,
                     vllm_utilization=utilization)
