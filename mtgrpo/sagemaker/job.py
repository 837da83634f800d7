"""The container's launcher side: read the contract, prepare resume, run the plan, report.

Runs once per host. Any failure ends with a one-line reason in ``output/failure`` and a non-zero
exit; a SIGTERM stop ends with 143 after the training processes saved a checkpoint.
"""

from __future__ import annotations

import time

from mtgrpo.sagemaker.checkpoints import prepare_resume
from mtgrpo.sagemaker.code import activate_code
from mtgrpo.sagemaker.contract import (OptML, read_hyperparameters, read_resource_config,
                                       resolve_paths)
from mtgrpo.sagemaker.failure import JobFailed, clear_failure, report
from mtgrpo.sagemaker.launcher import (build_plan, describe_plan, detect_gpu_count,
                                       resolve_hosts, run_plan, visible_devices)
from mtgrpo.task.loading import check_task
from mtgrpo.trainer.train import check_batch_shape, check_record_files

METRICS_FILE = "metrics.jsonl"


def run_job(layout: OptML | None = None) -> int:
    layout = layout or OptML.from_env()
    clear_failure(layout.failure_file)
    try:
        for d in (layout.model_dir, layout.output_data_dir, layout.checkpoint_dir):
            d.mkdir(parents=True, exist_ok=True)
        config = read_hyperparameters(layout)
        resources = read_resource_config(layout)
        paths = resolve_paths(config, layout)
        # The task's plug-ins: their code first on the path, then every path imported, so a
        # missing or broken plug-in fails in seconds, before vLLM's start-up (docs/tasks.md).
        code = activate_code(layout)
        if code is not None:
            print(f"mtgrpo: task code from {code}", flush=True)
        check_task(config, source=str(layout.hyperparameters_file))
        check_record_files(config, paths)  # a malformed record file fails before vLLM starts
        master_addr = None
        if resources.num_hosts > 1:
            master_addr = resolve_hosts(resources.hosts)[resources.master_host]
        metrics = paths.output_dir / METRICS_FILE if resources.is_master else None
        resumed = prepare_resume(paths.checkpoint_dir, metrics)
        if resumed is not None:
            print(f"mtgrpo: resuming from {resumed}", flush=True)
        plan = build_plan(config, resources, layout, model=paths.model,
                          gpu_count=detect_gpu_count(), master_addr=master_addr,
                          visible_devices=visible_devices())
        print(f"mtgrpo: plan {describe_plan(plan)}", flush=True)
        # Fail before vLLM's minutes-long start-up on a batch the world size cannot split.
        check_batch_shape(config, plan.world_size, source=str(layout.hyperparameters_file))
        started = time.monotonic()
        exit_code = run_plan(plan)
        print(f"mtgrpo: exit {exit_code} after {time.monotonic() - started:.1f} s", flush=True)
        if exit_code == 0 and resources.is_master and \
                not (layout.model_dir / "config.json").is_file():
            raise JobFailed(f"training finished but wrote no model to {layout.model_dir}")
        return exit_code
    except Exception as err:  # every failure, expected or not, ends as output/failure
        return report(layout.failure_file, err)
