"""The instance catalogue: GPUs, GPU memory and host memory of the ml.* types recipes name."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

CATALOGUE_FILE = Path(__file__).with_name("instances.json")
MIB = 2 ** 20
GIB = 2 ** 30


@dataclass(frozen=True)
class Instance:
    name: str
    gpus: int
    gpu: str
    gpu_memory_mib: int
    host_memory_gib: int
    vcpus: int

    @property
    def gpu_memory_bytes(self) -> int:
        return self.gpu_memory_mib * MIB


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, Instance]:
    data = json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))
    return {name: Instance(name=name, **row) for name, row in data["instances"].items()}


def instance(name: str) -> Instance | None:
    return catalogue().get(name)

