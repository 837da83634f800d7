"""The one placement rule: where a job's processes go on its nodes.

Every place that needs to know uses :func:`place`: the launcher in the image
(:func:`mtgrpo.sagemaker.launcher.build_plan`), the planner (:mod:`mtgrpo.plan.placement`),
each backend's renderer (Kubeflow's ``numProcPerNode`` and the GPUs it requests) and
``mtgrpo train``. So what a renderer writes is what the launcher starts; no run-time check of
the one against the other is needed.

The rule:

- The job starts its own vLLM server (:func:`starts_vllm`) when ``generation_backend`` is
  ``vllm`` or ``vllm_shared`` and ``vllm_server_url`` names this machine (127.0.0.1,
  localhost, 0.0.0.0) or the job's first host; otherwise the server is outside (or there is
  none).
- That server runs on the first node only, on the GPUs ``vllm_gpus`` names (comma-separated
  indices; empty: the last GPU). With ``vllm`` those GPUs do not train and at least one GPU
  must be left; with ``vllm_shared`` every GPU trains, the server's too.
- Every node trains on the same GPU indices (``accelerate launch`` starts the same process
  count on every node), so vLLM's indices stay idle on the other nodes. Without GPUs a node
  runs one CPU process.
- Weights reach the server over NCCL (:func:`weight_sync`) with ``vllm`` when ``weight_sync``
  is ``nccl``, or ``auto`` on GPUs; else by reloading from disk (``vllm_shared`` always).

Standard library only: the trainer image and the renderers both import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mtgrpo.errors import Problem, UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0")
SOURCE = "hyperparameters.json"


@dataclass(frozen=True)
class Placement:
    """Where one job's processes go. GPU indices are positions among a node's GPUs."""

    num_nodes: int
    gpus_per_node: int
    vllm_gpus: tuple[int, ...]  # on the first node; () when the job starts no server
    train_gpus: tuple[int, ...]  # on every node
    starts_vllm: bool  # the job starts its own vLLM server (on the first node)
    shared: bool  # vllm_shared: the server's GPUs train too
    weight_sync: str  # none, nccl or reload

    @property
    def processes_per_node(self) -> int:
        return max(len(self.train_gpus), 1)

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.num_nodes

    @property
    def idle_gpus(self) -> int:
        """GPUs neither training nor serving: vLLM's indices on the other nodes."""
        if self.shared or self.gpus_per_node == 0:
            return 0
        return (self.num_nodes - 1) * (self.gpus_per_node - len(self.train_gpus))

    @property
    def vllm_gpus_text(self) -> str:
        """``vllm_gpus`` as the trainer's hyperparameter spells it (explicit indices)."""
        return ",".join(str(g) for g in self.vllm_gpus)


def uses_vllm(config: Any) -> bool:
    return config.generation_backend in ("vllm", "vllm_shared")


def server_location(config: Any, master_host: str = "", *, source: str = SOURCE,
                    key: str = "vllm_server_url") -> tuple[bool, int, str]:
    """(the job starts it, port, host) of ``vllm_server_url``; raises ``UserError`` for a URL
    that is not http(s) with a host."""
    parts = urlsplit(config.vllm_server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(Problem(source, key, f"invalid value {config.vllm_server_url!r}",
                                "an http:// URL such as http://127.0.0.1:8000"))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    managed = parts.hostname in LOCAL_HOSTS or bool(master_host) and \
        parts.hostname == master_host
    return managed, port, parts.hostname


def starts_vllm(config: Any, master_host: str = "") -> bool:
    """Whether the job starts its own vLLM server (the URL names this machine or the first
    host ``master_host``), as opposed to an outside server or none."""
    if not uses_vllm(config):
        return False
    try:
        return server_location(config, master_host)[0]
    except UserError:
        return False


def weight_sync(config: Any, *, gpus: bool) -> str:
    """``none`` (no server), ``nccl`` or ``reload``: how the trainer pushes weights, and so
    whether the server is started with NCCL weight transfer. ``gpus``: CUDA is there."""
    if not uses_vllm(config):
        return "none"
    if config.generation_backend == "vllm_shared":
        return "reload"  # NCCL cannot pair two processes on one GPU
    if config.weight_sync == "auto":
        return "nccl" if gpus else "reload"
    return config.weight_sync


def parse_vllm_gpus(text: str, gpu_count: int, *, shared: bool = False,
                    source: str = SOURCE, key: str = "vllm_gpus") -> tuple[int, ...]:
    """``vllm_gpus``: comma-separated indices on the first node; empty means the last GPU.
    ``shared`` (vllm_shared): the server's GPUs train too, so they may be all of them."""
    allowed = (f"comma-separated distinct GPU indices in [0, {gpu_count - 1}]"
               + (", or empty for the last GPU" if shared else
                  " leaving at least one GPU for training, or empty for the last GPU"))
    if not text.strip():
        return (gpu_count - 1,)
    try:
        gpus = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(Problem(source, key, f"invalid value {text!r}", allowed)) from None
    if (len(set(gpus)) != len(gpus) or any(g < 0 or g >= gpu_count for g in gpus)
            or (not shared and len(gpus) >= gpu_count)):
        raise UserError(Problem(source, key, f"invalid value {text!r} for {gpu_count} GPUs",
                                allowed))
    return gpus


def place(config: Any, *, num_nodes: int, gpus_per_node: int, master_host: str = "",
          source: str = SOURCE, key_prefix: str = "") -> Placement:
    """The placement of ``config`` (a :class:`~mtgrpo.contract.TrainerConfig`) on
    ``num_nodes`` nodes of ``gpus_per_node`` GPUs each. Raises ``UserError`` naming the trainer
    key (``key_prefix`` + ``vllm_gpus``, ``generation_backend``, ``vllm_server_url``) when the
    job cannot be placed."""
    shared = config.generation_backend == "vllm_shared"
    managed = uses_vllm(config) and server_location(
        config, master_host, source=source, key=key_prefix + "vllm_server_url")[0]
    if gpus_per_node > 0 and shared:
        vllm = parse_vllm_gpus(config.vllm_gpus, gpus_per_node, shared=True, source=source,
                               key=key_prefix + "vllm_gpus") if managed else ()
        train = tuple(range(gpus_per_node))
    elif gpus_per_node > 0:
        vllm = parse_vllm_gpus(config.vllm_gpus, gpus_per_node, source=source,
                               key=key_prefix + "vllm_gpus") if managed else ()
        if managed and gpus_per_node < 2:
            raise UserError(Problem(source, key_prefix + "generation_backend",
                                    "vllm needs its own GPU and this host has only 1",
                                    "an instance with 2 or more GPUs, or generation_backend "
                                    "transformers or vllm_shared"))
        train = tuple(g for g in range(gpus_per_node) if g not in vllm)
    else:
        vllm, train = (), ()
    return Placement(num_nodes=max(num_nodes, 1), gpus_per_node=gpus_per_node, vllm_gpus=vllm,
                     train_gpus=train, starts_vllm=managed, shared=shared,
                     weight_sync=weight_sync(config, gpus=gpus_per_node > 0))
