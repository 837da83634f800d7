"""HyperPod node types: GPUs, EFA interfaces, vCPUs and memory of the ml.* instance types.

The counts are the HyperPod SDK's own table (vendor/instance_resources.json, refreshed by
vendor/refresh.py); GPU memory comes from the planner's catalogue (mtgrpo/plan/instances.json)
where it knows the type. What a pod may request is the instance less the SDK's reservation for
the kubelet, the system and HyperPod's agents (``_calculate_cpu_reservation`` and
``_calculate_memory_reservation`` of ``sagemaker.hyperpod.training.quota_allocation_util``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

TABLE_FILE = Path(__file__).parent / "vendor" / "instance_resources.json"


@dataclass(frozen=True)
class NodeType:
    name: str
    gpus: int
    efa: int
    vcpus: int
    memory_gib: int
    gpu_memory_bytes: int  # 0 when the planner's catalogue does not know the type

    @property
    def allocatable_cpu(self) -> int:
        return int(self.vcpus - cpu_reservation(self.vcpus))

    @property
    def allocatable_memory_gib(self) -> int:
        return int(self.memory_gib - memory_reservation(self.memory_gib))


def cpu_reservation(cpus: int) -> float:
    """Cores HyperPod keeps for itself: 0.1, then 30 % of the first core, 15 % of the second,
    10 % of the next two and 6 % of the rest."""
    reserved = 0.1
    if cpus >= 1:
        reserved += 0.3
    if cpus >= 2:
        reserved += 0.15
    reserved += 0.1 * min(2, max(0, cpus - 2))
    if cpus > 4:
        reserved += (cpus - 4) * 0.06
    return reserved


def memory_reservation(gib: float) -> float:
    """GiB HyperPod keeps: 0.5, then 30 % of the first 4, 25 % of the next 4, 20 % of the next
    8, 17 % of the next 112 and 7 % of the rest."""
    reserved, rest = 0.5, gib
    for size, share in ((4, 0.3), (4, 0.25), (8, 0.2), (112, 0.17)):
        part = min(size, rest)
        reserved += part * share
        rest -= part
        if rest <= 0:
            return reserved
    return reserved + rest * 0.07


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, NodeType]:
    from mtgrpo.plan.instances import instance

    rows = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    out = {}
    for name, row in rows.items():
        known = instance(name)
        out[name] = NodeType(name=name, gpus=row["gpus"], efa=row["efa"], vcpus=row["vcpus"],
                             memory_gib=row["memory_gib"],
                             gpu_memory_bytes=known.gpu_memory_bytes if known else 0)
    return out


def node_type(name: str) -> NodeType | None:
    return _table().get(name)


def known_types() -> list[str]:
    """The GPU types (the only ones a recipe's trainer can use), sorted."""
    return sorted(n for n, t in _table().items() if t.gpus > 0)
