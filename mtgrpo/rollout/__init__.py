"""Rollout generation: the vLLM client and server, samplers and weight sync.

Importing this package is cheap: its names load on first use (PEP 562), so a light install
(no torch, no httpx) can still import its torch-free modules, such as ``decode``'s memory rule,
which the fit planner reads at render time.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Sample": "client", "SamplerError": "client", "VLLMClient": "client", "run_sync": "client",
    "Sampler": "sampler", "TransformersSampler": "sampler", "VLLMSampler": "sampler",
    "VLLMServer": "server", "VLLMServerError": "server",
    "NCCLWeightSync": "weight_sync", "NoopWeightSync": "weight_sync",
    "ReloadWeightSync": "weight_sync", "WeightSync": "weight_sync",
    "WeightSyncError": "weight_sync", "make_weight_sync": "weight_sync",
    "resolve_weight_sync": "weight_sync",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (sorted() gives a list)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
