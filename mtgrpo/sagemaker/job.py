"""The container's launcher side: read the contract, prepare resume, run the plan, report.

Runs once per host. Any failure ends with a one-line reason in ``output/failure`` and a non-zero
exit; a SIGTERM stop ends with 143 after the training processes saved a checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Mapping, Sequence

from mtgrpo.sagemaker.checkpoints import prepare_resume
from mtgrpo.sagemaker.code import activate_code
from mtgrpo.sagemaker.contract import (OptML, ResourceConfig, read_hyperparameters,
                                       read_resource_config, resolve_paths)
from mtgrpo.sagemaker.failure import JobFailed, clear_failure, report
from mtgrpo.sagemaker.launcher import (MASTER_PORT, build_plan, describe_plan,
                                       detect_gpu_count, resolve_hosts, run_plan,
                                       visible_devices)
from mtgrpo.task.loading import check_task
from mtgrpo.trainer.train import check_batch_shape, check_record_files

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class Presentation:
    """How a backend's pod presents its job to :func:`run_steps` (the backend's image adapter
    lays out ``/opt/ml`` first). The defaults are SageMaker's own."""

    resources: ResourceConfig | None = None  # None: SageMaker's resourceconfig.json
    resolve: Sequence[str] | None = None  # host names to wait for (None: every host)
    master_port: int = MASTER_PORT
    environ: Mapping[str, str] | None = None  # the GPU count and CUDA_VISIBLE_DEVICES
    # around the training processes (Kubeflow: the checkpoint uploader), and after them with
    # the exit code (Kubeflow: upload errors, the model's upload)
    running: Callable[[], ContextManager] = field(default=contextlib.nullcontext)
    finished: Callable[[int, ResourceConfig], None] | None = None


def run_job(layout: OptML | None = None) -> int:
    layout = layout or OptML.from_env()
    clear_failure(layout.failure_file)
    try:
        return run_steps(layout)
    except Exception as err:  # every failure, expected or not, ends as output/failure
        return report(layout.failure_file, err)


def run_steps(layout: OptML, presentation: Presentation = Presentation()) -> int:
    """The one sequence every backend's pod runs once ``/opt/ml`` is laid out: read the
    contract, load the task's plug-ins, prepare resume, place and run the processes, check the
    model. Raises on failure (the caller reports)."""
    for d in (layout.model_dir, layout.output_data_dir, layout.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    config = read_hyperparameters(layout)
    resources = presentation.resources or read_resource_config(layout)
    paths = resolve_paths(config, layout)
    # The task's plug-ins: their code first on the path, then every path imported, so a
    # missing or broken plug-in fails in seconds, before vLLM's start-up (docs/tasks.md).
    code_dir = activate_code(layout)
    if code_dir is not None:
        print(f"mtgrpo: task code from {code_dir}", flush=True)
    check_task(config, source=str(layout.hyperparameters_file))
    check_record_files(config, paths)  # a malformed record file fails before vLLM starts
    master_addr = None
    if resources.num_hosts > 1:
        names = presentation.resolve or resources.hosts
        master_addr = resolve_hosts(names)[resources.master_host]
    metrics = paths.output_dir / METRICS_FILE if resources.is_master else None
    resumed = prepare_resume(paths.checkpoint_dir, metrics)
    if resumed is not None:
        print(f"mtgrpo: resuming from {resumed}", flush=True)
    environ = presentation.environ
    plan = build_plan(config, resources, layout, model=paths.model,
                      gpu_count=detect_gpu_count(environ), master_addr=master_addr,
                      master_port=presentation.master_port,
                      visible_devices=visible_devices(environ))
    print(f"mtgrpo: plan {describe_plan(plan)}", flush=True)
    # Fail before vLLM's minutes-long start-up on a batch the world size cannot split.
    check_batch_shape(config, plan.world_size, source=str(layout.hyperparameters_file))
    started = time.monotonic()
    with presentation.running():
        code = run_plan(plan)
    print(f"mtgrpo: exit {code} after {time.monotonic() - started:.1f} s", flush=True)
    if code == 0 and resources.is_master and not (layout.model_dir / "config.json").is_file():
        raise JobFailed(f"training finished but wrote no model to {layout.model_dir}")
    if presentation.finished is not None:
        presentation.finished(code, resources)
    return code
