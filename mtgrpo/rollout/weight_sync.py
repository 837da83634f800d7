"""Weight sync: push the trainer's current weights into the vLLM server after every step.

Rollouts are on-policy only if the server samples with the weights the trainer just produced.
``WeightSync.push(model)`` is called on the main process after every optimizer step and
returns the seconds it took (logged as ``weight_sync_seconds``).

- ``ReloadWeightSync`` (CPU, or any machine without NCCL): ``save_pretrained`` (a LoRA policy:
  merged, ``policy_weights.save_policy``) into a fresh directory, then ``POST /collective_rpc
  {"method": "mtgrpo_reload_weights"}`` so the server reloads from it (vLLM's
  ``reload_weights`` plus a fix for tied LM heads on CPU, see ``vllm_worker.py``); older
  directories are deleted. Needs the server started with
  ``VLLM_SERVER_DEV_MODE=1`` and the worker extension (``VLLMServer`` does both).
- ``NCCLWeightSync`` (GPUs): vLLM's own weight-transfer engine
  (``vllm.distributed.weight_transfer``): the trainer joins an NCCL group with the server's
  workers once, then broadcasts every parameter each step, packed into large buffers. Needs the
  server started with ``--weight-transfer-config '{"backend": "nccl"}'``
  (``VLLMServer(..., weight_transfer="nccl")``).
- ``NoopWeightSync``: the ``TransformersSampler`` reads the live model; nothing to push.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mtgrpo.rollout.client import SamplerError, VLLMClient
from mtgrpo.rollout.policy_weights import policy_parameters, policy_tensors, save_policy
from mtgrpo.rollout.server import WORKER_EXTENSION

log = logging.getLogger(__name__)


class WeightSyncError(SamplerError):
    """New weights could not be pushed to the generation server."""


@runtime_checkable
class WeightSync(Protocol):
    def push(self, model) -> float:
        """Make the sampler use ``model``'s current weights; return the seconds spent."""
        ...

    def close(self) -> None:
        ...


def unwrap(model):
    """The bare ``PreTrainedModel`` inside DDP / DeepSpeed / compile wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            break
        model = inner
    return model


class NoopWeightSync:
    """For samplers that read the live model (``TransformersSampler``)."""

    def push(self, model) -> float:
        return 0.0

    def close(self) -> None:
        pass


def reset_prefix_cache(client: VLLMClient, *, attempts: int = 50, wait_s: float = 0.1) -> None:
    """Drop the server's cached KV blocks: they were computed with the old weights.

    vLLM keeps its prefix cache across a weight update, and every episode's prompt (and each
    later turn's history) is a cached prefix, so without this the next rollouts silently run
    on stale keys and values: measured on the tiny model, greedy tokens after a reload differ
    from the new weights' own greedy tokens until the cache is reset (tests/test_on_policy.py,
    tests/test_rollout_vllm.py). vLLM answers ``{"success": false}`` while blocks are still
    held (a request still running); that is retried, and an error if it never clears.
    """
    for _ in range(attempts):
        answer = client.post_sync("/reset_prefix_cache")
        if not isinstance(answer, dict) or answer.get("success", True):
            return  # older servers answer an empty 200
        time.sleep(wait_s)
    raise WeightSyncError(f"vLLM server at {client.base_url} refused to reset its prefix cache "
                          f"{attempts} times (requests still running?); its cached keys and "
                          "values would be stale after the weight update")


class ReloadWeightSync:
    """Save the weights to disk and ask the server to reload them (CPU path).

    Each push writes ``save_root/step-<n>/`` (a complete ``save_pretrained`` directory) and
    deletes the directories of earlier pushes once the server has loaded the new one, so at
    most ``keep`` copies stay on disk. ``save_root`` must be readable by the server (same host).
    """

    def __init__(self, base_url: str, *, save_root: str | Path | None = None,
                 timeout_s: float = 300.0, keep: int = 1,
                 method: str = "mtgrpo_reload_weights", remove_root: bool | None = None):
        self.client = VLLMClient(base_url, timeout_s=timeout_s)
        self.method = method
        # Deleted at close: a root made here, or one the caller hands over (remove_root=True).
        self._own_root = save_root is None if remove_root is None else remove_root
        self.save_root = Path(save_root) if save_root else Path(
            tempfile.mkdtemp(prefix="mtgrpo-weights-"))
        self.save_root.mkdir(parents=True, exist_ok=True)
        self.keep = max(1, keep)
        self.pushes = 0
        self._dirs: list[Path] = []

    def push(self, model) -> float:
        start = time.perf_counter()
        model = unwrap(model)
        target = self.save_root / f"step-{self.pushes:06d}"
        if target.exists():
            shutil.rmtree(target)
        save_policy(model, target)  # LoRA adapters merged in, checkpoint names
        answer = self._reload(target)
        if not isinstance(answer, dict) or "results" not in answer:
            raise WeightSyncError(f"vLLM server at {self.client.base_url} answered reload_weights "
                                  f"with {str(answer)[:200]}; start it with "
                                  "VLLM_SERVER_DEV_MODE=1")
        reset_prefix_cache(self.client)
        self.pushes += 1
        self._dirs.append(target)
        while len(self._dirs) > self.keep:
            shutil.rmtree(self._dirs.pop(0), ignore_errors=True)
        return time.perf_counter() - start

    def _reload(self, target: Path):
        body = {"method": self.method, "kwargs": {"weights_path": str(target)}}
        try:
            return self.client.post_sync("/collective_rpc", body)
        except SamplerError as err:
            text = str(err)
            missing = f"no attribute '{self.method}'" in text or "not implemented" in text
            if self.method == "reload_weights" or not missing:
                raise
        # A server started without mtgrpo's worker extension: vLLM's own reload still works,
        # except for tied LM heads on CPU (see mtgrpo/rollout/vllm_worker.py).
        log.warning("vLLM server at %s lacks the %s worker extension; using plain "
                    "reload_weights (on CPU, models with tied embeddings then keep a stale "
                    "LM head: start the server with VLLMServer)", self.client.base_url,
                    WORKER_EXTENSION)
        self.method = "reload_weights"
        return self._reload(target)

    def close(self) -> None:
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._dirs.clear()
        if self._own_root:
            shutil.rmtree(self.save_root, ignore_errors=True)


class VLLMWeightTransferClient:
    """vLLM's weight-sync control plane over HTTP (``/init_weight_transfer_engine``,
    ``/start_weight_update``, ``/update_weights``, ``/finish_weight_update``,
    ``/shutdown_weight_transfer_engine``), with bounded timeouts and ``SamplerError``s.

    Structurally the ``VLLMWeightSyncClient`` protocol of ``vllm.distributed.weight_transfer``.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 300.0):
        self.client = VLLMClient(base_url, timeout_s=timeout_s)

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self.client.post_sync("/init_weight_transfer_engine", {"init_info": init_info})

    def start_weight_update(self) -> None:
        self.client.post_sync("/start_weight_update")

    def update_weights(self, update_info: Any) -> None:
        self.client.post_sync("/update_weights", {"update_info": update_info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        body = {"weight_version": weight_version} if weight_version is not None else None
        self.client.post_sync("/finish_weight_update", body)

    def shutdown_weight_transfer_engine(self) -> None:
        self.client.post_sync("/shutdown_weight_transfer_engine")


def cast_source(module, dtype=None):
    """A vLLM ``WeightSource`` over the policy's tensors (``module.named_parameters()``; for a
    LoRA model the merged weights under the base checkpoint's names, ``policy_weights``), cast
    to ``dtype`` on the way (the server's dtype: sending fp32 master weights to a bf16 server
    would double the bytes)."""
    from vllm.distributed.weight_transfer.base import ModuleSource, ParamMeta

    class CastSource(ModuleSource):
        def metadata(self):
            return [ParamMeta(name, dtype or p.dtype, tuple(p.shape))
                    for name, p, _ in policy_parameters(module)]

        def __iter__(self):
            for name, tensor in policy_tensors(module):
                yield name, (tensor.to(dtype) if dtype is not None else tensor).contiguous()

    return CastSource(module)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NCCLWeightSync:
    """Broadcast weights to the vLLM workers over NCCL (GPUs; vLLM's weight-transfer engine).

    The NCCL group (this trainer process as rank 0, the server's ``vllm_world_size`` workers
    after it) is formed on the first push, when the model is known. ``master_address`` must be
    reachable from the server (same host: 127.0.0.1). Each push runs the transfer on a helper
    thread and waits at most ``timeout_s``: NCCL calls cannot be cancelled, so a server that dies
    mid-transfer ends training with ``WeightSyncError`` instead of hanging it.
    """

    def __init__(self, base_url: str, *, vllm_world_size: int = 1,
                 master_address: str = "127.0.0.1", master_port: int | None = None,
                 timeout_s: float = 300.0, dtype: str | None = "bfloat16", packed: bool = True):
        self.base_url = base_url.rstrip("/")
        self.client = VLLMWeightTransferClient(base_url, timeout_s=timeout_s)
        self.vllm_world_size = vllm_world_size
        self.master_address = master_address
        self.master_port = master_port
        self.timeout_s = timeout_s
        self.dtype = dtype
        self.packed = packed
        self.engine = None
        self.pushes = 0

    def init_info(self):
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        if self.master_port is None:
            self.master_port = free_port(self.master_address)
        return NCCLTrainerInitInfo(master_address=self.master_address,
                                   master_port=self.master_port,
                                   world_size=1 + self.vllm_world_size, packed=self.packed,
                                   rank=0)

    def _connect(self, model) -> None:
        import torch
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerWeightTransferEngine

        if not torch.cuda.is_available():
            raise WeightSyncError("weight_sync nccl needs CUDA GPUs; use weight_sync: reload "
                                  "on CPU machines")
        source = cast_source(model, getattr(torch, self.dtype) if self.dtype else None)
        self.engine = NCCLTrainerWeightTransferEngine.trainer_init(
            self.init_info(), client=self.client, source=source)

    def push(self, model) -> float:
        start = time.perf_counter()
        model = unwrap(model)
        _bounded(lambda: self._connect(model) if self.engine is None else None,
                 self.timeout_s, f"joining the NCCL weight-transfer group of {self.base_url}")
        _bounded(self.engine.send_weights, self.timeout_s,
                 f"broadcasting weights to {self.base_url}")
        reset_prefix_cache(self.client.client)
        self.pushes += 1
        return time.perf_counter() - start

    def close(self) -> None:
        if self.engine is not None:
            try:
                self.client.shutdown_weight_transfer_engine()
            except SamplerError:
                pass  # the server is gone already; nothing left to shut down there
            self.engine.shutdown()
            self.engine = None


def _bounded(fn, timeout_s: float, what: str) -> None:
    """Run ``fn`` on a daemon thread; raise ``WeightSyncError`` if it fails or outlives
    ``timeout_s`` (a stuck NCCL collective cannot be interrupted, only abandoned)."""
    box: dict[str, BaseException] = {}

    def target():
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
            box["err"] = err

    thread = threading.Thread(target=target, daemon=True, name="mtgrpo-weight-sync")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise WeightSyncError(f"{what} did not finish within {timeout_s:g}s "
                              "(vllm_request_timeout_s); the vLLM server is stuck or dead")
    if "err" in box:
        err = box["err"]
        if isinstance(err, SamplerError):
            raise err
        raise WeightSyncError(f"{what} failed: {type(err).__name__}: {err}") from err


def resolve_weight_sync(cfg) -> str:
    """``none`` (transformers sampler), ``nccl`` or ``reload``; ``auto`` picks nccl with CUDA.

    The one rule, :func:`mtgrpo.contract.placement.weight_sync`: the launcher starts the server
    with ``weight_transfer="nccl"`` exactly when it says nccl.
    """
    from mtgrpo.contract.placement import weight_sync

    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    return weight_sync(cfg, gpus=cuda)


def make_weight_sync(cfg, *, base_url: str | None = None, save_root: str | Path | None = None,
                     vllm_world_size: int | None = None, master_address: str = "127.0.0.1",
                     master_port: int | None = None) -> WeightSync:
    """The weight sync a ``TrainerConfig`` asks for (see ``resolve_weight_sync``)."""
    kind = resolve_weight_sync(cfg)
    url = base_url or cfg.vllm_server_url
    if kind == "none":
        return NoopWeightSync()
    if kind == "reload":
        remove_root = save_root is None
        if save_root is None and cfg.generation_backend == "vllm_shared":
            from mtgrpo.rollout.shared_gpu import shm_weights_root

            save_root = shm_weights_root()  # RAM, not disk: a push every step
            if save_root is None:
                log.warning("/dev/shm is not writable; vllm_shared pushes weights through a "
                            "temporary directory on disk")
        return ReloadWeightSync(url, save_root=save_root, timeout_s=cfg.vllm_request_timeout_s,
                                remove_root=remove_root)
    if vllm_world_size is None:
        gpus = [g for g in cfg.vllm_gpus.split(",") if g.strip()]
        vllm_world_size = max(1, len(gpus))
    return NCCLWeightSync(url, vllm_world_size=vllm_world_size, master_address=master_address,
                          master_port=master_port, timeout_s=cfg.vllm_request_timeout_s,
                          dtype="bfloat16" if cfg.bf16 else None)
