"""The HyperPod elastic agent's variables as the launcher's topology (standard library only).

On a HyperPod pod the operator's agent (``hyperpodrun --nproc-per-node=1``) starts the image's
HyperPod entry once per pod, with torchelastic's variables: ``GROUP_RANK`` (the pod's node
rank), ``GROUP_WORLD_SIZE`` (the pods), ``MASTER_ADDR`` and ``MASTER_PORT`` (the first pod's
rendezvous address, which the operator assigns), ``LOCAL_WORLD_SIZE`` (1). They are translated
into the same :class:`~mtgrpo.sagemaker.contract.ResourceConfig` and rendezvous address the
SageMaker path builds its launch plan from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from mtgrpo.errors import Problem, UserError
from mtgrpo.hyperpod import contract as hc
from mtgrpo.sagemaker.contract import ResourceConfig


def detect(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs under the HyperPod agent of a rendered HyperPod job."""
    env = os.environ if environ is None else environ
    return hc.GROUP_RANK in env and hc.NNODES_ENV in env and hc.JOB_NAME_ENV in env


@dataclass(frozen=True)
class Topology:
    num_nodes: int
    node_rank: int
    master_addr: str
    master_port: int
    restart: int

    def resource_config(self) -> ResourceConfig:
        """The SageMaker-shaped view the launcher plans with: the first host is the master
        (its address is what other pods dial), the others only need distinct names."""
        hosts = (self.master_addr,) + tuple(f"node-rank-{i}" for i in range(1, self.num_nodes))
        return ResourceConfig(hosts[self.node_rank], hosts, None)


def read_topology(environ: Mapping[str, str] | None = None) -> Topology:
    """Parse the agent's variables; every problem is reported at once, naming the variable."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def integer(name: str, low: int, default: str | None = None) -> int | None:
        text = env.get(name, default or "")
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            problems.append(Problem("environment", name, f"invalid value {text!r}",
                                    f"an integer >= {low} (set by hyperpodrun)"))
            return None
        return value

    nodes = integer(hc.GROUP_WORLD_SIZE, 1, env.get(hc.NNODES_ENV))
    rank = integer(hc.GROUP_RANK, 0)
    port = integer(hc.MASTER_PORT, 1)
    local = integer(hc.LOCAL_WORLD_SIZE, 1, "1")
    restart = integer(hc.RESTART_COUNT, 0, "0")
    master = env.get(hc.MASTER_ADDR, "")
    if not master:
        problems.append(Problem("environment", hc.MASTER_ADDR, "is not set",
                                "the first pod's address (set by hyperpodrun)"))
    if local is not None and local != 1:
        problems.append(Problem("environment", hc.LOCAL_WORLD_SIZE, f"{local} processes per "
                                "pod", "1: hyperpodrun --nproc-per-node=1 starts the launcher, "
                                "which starts the ranks (render the recipe again)"))
    if nodes is not None and rank is not None and rank >= nodes:
        problems.append(Problem("environment", hc.GROUP_RANK, f"{rank} is not below "
                                f"{hc.GROUP_WORLD_SIZE} {nodes}", f"0 to {nodes - 1}"))
    if problems:
        raise UserError(problems)
    return Topology(nodes, rank, master, port, restart)  # type: ignore[arg-type]
