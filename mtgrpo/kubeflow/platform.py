"""Which platform runs the image, and Kubeflow's ``PET_*`` variables as the launcher's topology.

SageMaker writes ``/opt/ml/input/config/*.json`` before the container starts; Kubeflow
Trainer's torch runtime sets ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``,
``PET_MASTER_PORT`` and ``PET_NPROC_PER_NODE`` in the ``node`` container. ``accelerate
launch`` ignores ``PET_*`` and would silently run at world size 1 (kubeflow/trainer#3930), so
they are translated into the same :class:`~mtgrpo.sagemaker.contract.ResourceConfig` and
rendezvous address the SageMaker path builds its launch plan from. Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from mtgrpo.errors import Problem, UserError
from mtgrpo.kubeflow import contract as kc
from mtgrpo.sagemaker.contract import OptML, ResourceConfig

SAGEMAKER = "sagemaker"
KUBEFLOW = "kubeflow"


def detect(environ: Mapping[str, str] | None = None, layout: OptML | None = None) -> str:
    """``sagemaker`` when SageMaker's config files are there (or no ``PET_*`` is set: a local
    run on a laid-out ``/opt/ml``), ``kubeflow`` when the torch runtime's variables are."""
    env = os.environ if environ is None else environ
    layout = layout or OptML.from_env(env)
    if layout.hyperparameters_file.is_file() or layout.resource_config_file.is_file():
        return SAGEMAKER
    return KUBEFLOW if kc.PET_NNODES in env else SAGEMAKER


@dataclass(frozen=True)
class Topology:
    """What ``PET_*`` say about this pod. ``nproc_per_node`` is None for ``auto``."""

    num_nodes: int
    node_rank: int
    master_addr: str
    master_port: int
    nproc_per_node: int | None

    def resource_config(self) -> ResourceConfig:
        """The SageMaker-shaped view the launcher plans with: the first host is the master
        (its address is what other pods dial), the others only need distinct names."""
        hosts = (self.master_addr,) + tuple(f"node-rank-{i}" for i in range(1, self.num_nodes))
        return ResourceConfig(hosts[self.node_rank], hosts, None)


def read_topology(environ: Mapping[str, str] | None = None) -> Topology:
    """Parse ``PET_*``; every problem is reported at once, naming the variable."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def integer(name: str, low: int, *, auto: bool = False) -> int | None:
        text = env.get(name, "")
        if auto and text == "auto":
            return None
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            allowed = f"an integer >= {low}" + (" or auto" if auto else "")
            problems.append(Problem("environment", name, f"invalid value {text!r}", allowed))
            return None
        return value

    nodes = integer(kc.PET_NNODES, 1)
    rank = integer(kc.PET_NODE_RANK, 0)
    port = integer(kc.PET_MASTER_PORT, 1)
    procs = integer(kc.PET_NPROC_PER_NODE, 1, auto=True) if kc.PET_NPROC_PER_NODE in env \
        else None
    master = env.get(kc.PET_MASTER_ADDR, "")
    if not master:
        problems.append(Problem("environment", kc.PET_MASTER_ADDR, "is not set",
                                "the first pod's address (set by Kubeflow's torch runtime)"))
    if nodes is not None and rank is not None and rank >= nodes:
        problems.append(Problem("environment", kc.PET_NODE_RANK, f"{rank} is not below "
                                f"PET_NNODES {nodes}", f"0 to {nodes - 1}"))
    if problems:
        raise UserError(problems)
    assert nodes is not None and rank is not None and port is not None  # else a problem above
    return Topology(nodes, rank, master, port, procs)
