"""Where a recipe's processes go, as the planner shows them: the one placement rule
(:func:`mtgrpo.contract.placement.place`, which the launcher in the container runs too) with
the catalogue's GPU count standing in for ``nvidia-smi``: the vLLM GPUs of the first host, the
training processes per host and the world size. So the batch shape is checked against the
world size the job will really have.
"""

from __future__ import annotations

from dataclasses import dataclass
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
              gpu_memory_bytes: int | None = None, model: str | None = None,
              first_host: str = "") -> Placement:
    """The placement of this trainer config on ``instance_count`` hosts.

    ``gpu_memory_bytes`` (the catalogue's) stands in for nvidia-smi where the launcher asks it
    (vLLM sharing the training GPU sizes its share from it); ``model`` is the local model
    directory the launcher would read, if the planner has one; ``first_host`` the name of the
    job's first host, where the backend knows it (a URL naming it is the job's own server).
    """
    from mtgrpo.contract.placement import place

    hosts = max(instance_count, 1)
    try:
        where = place(config, num_nodes=hosts, gpus_per_node=gpus_per_host,
                      master_host=first_host)
    except UserError as err:
        first = err.problems[0]
        return Placement(hosts, gpus_per_host, (), (), 0,
                         error="; ".join(p.message for p in err.problems),
                         error_key=first.key, error_allowed=first.allowed)
    utilization = None
    if where.starts_vllm:
        utilization = config.vllm_gpu_memory_utilization
        if where.shared and gpus_per_host > 0 and gpu_memory_bytes:
            from mtgrpo.rollout.shared_gpu import shared_gpu_memory_utilization

            utilization = shared_gpu_memory_utilization(
                config, model or "/opt/ml/input/data/model", gpu_memory_bytes,
                world_size=where.world_size)
    per_host = (where.processes_per_node if gpus_per_host else 1,) * hosts
    return Placement(hosts, gpus_per_host, where.vllm_gpus, per_host, where.idle_gpus,
                     vllm_utilization=utilization)
