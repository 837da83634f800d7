"""Rollout generation: the vLLM client and server, samplers and weight sync.

Importing this package is cheap (no torch, no vLLM); the heavy imports happen inside the
functions that need them.
"""

from mtgrpo.rollout.client import Sample, SamplerError, VLLMClient, run_sync
from mtgrpo.rollout.sampler import Sampler, TransformersSampler, VLLMSampler
from mtgrpo.rollout.server import VLLMServer, VLLMServerError
from mtgrpo.rollout.weight_sync import (NCCLWeightSync, NoopWeightSync, ReloadWeightSync,
                                        WeightSync, WeightSyncError, make_weight_sync,
                                        resolve_weight_sync)

__all__ = [
    "NCCLWeightSync", "NoopWeightSync", "ReloadWeightSync", "Sample", "Sampler", "SamplerError",
    "TransformersSampler", "VLLMClient", "VLLMSampler", "VLLMServer", "VLLMServerError",
    "WeightSync", "WeightSyncError", "make_weight_sync", "resolve_weight_sync", "run_sync",
]
