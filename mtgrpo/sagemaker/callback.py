"""The Trainer callback that commits checkpoints and turns a stop request into "save, then stop".

See :mod:`mtgrpo.sagemaker.checkpoints` for the commit protocol. This module imports
transformers; the launcher imports only ``checkpoints`` so it starts fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainerCallback

from mtgrpo.sagemaker.checkpoints import (METRICS_COPY, NODE_RANK_ENV, NUM_NODES_ENV, StopRequest,
                                          TrainingInterrupted, _copy_atomic, commit, rotate)


def _agree(flag: bool) -> bool:
    """True on every rank if any rank saw the stop request (all ranks must save the same step)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is always there in a worker
        return flag
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CheckpointCallback(TrainerCallback):
    """Commits each checkpoint, keeps a metrics copy in it, and turns a stop request into
    "save this step, then stop"."""

    commits_checkpoints = True  # mtgrpo.trainer.train.run adds one when none is given

    def __init__(self, stop: StopRequest | None = None, metrics_file: Path | None = None, *,
                 node_rank: int | None = None, num_nodes: int | None = None):
        self.stop = stop or StopRequest.from_env()
        self.metrics_file = metrics_file
        self.node_rank = int(os.environ.get(NODE_RANK_ENV, 0)) if node_rank is None else node_rank
        self.num_nodes = int(os.environ.get(NUM_NODES_ENV, 1)) if num_nodes is None else num_nodes
        self.stopping = False

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stopping and _agree(self.stop.requested()):
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        _barrier()  # every rank of every node has written its part
        if args.process_index == 0 and self.metrics_file is not None \
                and self.metrics_file.is_file():
            _copy_atomic(self.metrics_file, checkpoint / METRICS_COPY)
        _barrier()
        if args.local_process_index == 0:  # every node commits, even one that wrote nothing
            commit(checkpoint, node=self.node_rank, num_nodes=self.num_nodes,
                   step=state.global_step)
            if self.node_rank > 0:  # the Trainer rotates only on the main node
                rotate(Path(args.output_dir), args.save_total_limit)
        _barrier()
        if self.stopping:
            raise TrainingInterrupted(state.global_step)
        return control
