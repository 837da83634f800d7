"""The image's entry on HyperPod pods: ``hyperpodrun ... -m mtgrpo.hyperpod train`` (one run
per pod).

It lays out the same ``/opt/ml`` tree SageMaker would and then runs the SageMaker path
unchanged (launch plan, vLLM supervision, workers, complete-only checkpoints):

1. the agent's variables -> topology (:mod:`mtgrpo.hyperpod.platform`);
2. the ConfigMap's ``hyperparameters.json`` -> ``input/config/hyperparameters.json``;
3. each channel of ``hyperpod.json``: an S3 URI downloaded into ``input/data/<channel>``, an
   FSx path linked there;
4. checkpoints: on S3, the newest complete one under ``<checkpoint_s3_uri>/<job>/`` downloaded
   and new ones uploaded as they complete; on FSx, ``/opt/ml/checkpoints`` is a link to
   ``<checkpoint_dir>/<job>/`` (shared by the nodes, nothing to copy); either way the operator's
   auto-resume restarts from the newest complete checkpoint;
5. at the end the first pod uploads the model to ``<output_path>/<job>/model/``;
6. a failure's one-line reason goes to ``output/failure`` and the pod's termination message.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Mapping

from mtgrpo.errors import Problem, UserError
from mtgrpo.hyperpod import contract as hc
from mtgrpo.hyperpod.platform import read_topology
from mtgrpo.sagemaker.checkpoints import prepare_resume
from mtgrpo.sagemaker.contract import OptML, read_hyperparameters, resolve_paths
from mtgrpo.sagemaker.failure import TERMINATION_LOG_ENV, JobFailed, run_pod
from mtgrpo.sagemaker.launcher import (build_plan, describe_plan, detect_gpu_count,
                                       resolve_hosts, run_plan, visible_devices)

METRICS_FILE = "metrics.jsonl"


def read_config(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(Problem(str(path), "", f"{what} is missing", "the rendered ConfigMap "
                                f"mounted at {hc.CONFIG_DIR}")) from None
    except json.JSONDecodeError as err:
        raise UserError(Problem(str(path), "", f"not valid JSON ({err.msg})",
                                "a JSON object")) from None
    if not isinstance(data, dict):
        raise UserError(Problem(str(path), "", "must be a JSON object", "a JSON object"))
    return data


def run_hyperpod_job(environ: Mapping[str, str] | None = None,
                     layout: OptML | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    layout = layout or OptML.from_env(env)
    config_dir = Path(env.get(hc.CONFIG_DIR_ENV) or hc.CONFIG_DIR)
    termination = Path(env.get(TERMINATION_LOG_ENV) or hc.TERMINATION_LOG)
    return run_pod(lambda: _run(env, layout, config_dir), layout.failure_file, termination)


def link_channel(target: Path, source: Path) -> None:
    """``input/data/<channel>`` as a link to an FSx directory (read in place)."""
    if not source.is_dir():
        raise UserError(Problem(str(source), "", "the channel's directory is missing",
                                "a directory on the mounted FSx volume"))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        if target.is_symlink() and Path(os.readlink(target)) == source:
            return
        raise JobFailed(f"{target} already exists; cannot link it to {source}")
    target.symlink_to(source, target_is_directory=True)


def _run(env: dict, layout: OptML, config_dir: Path) -> int:
    from mtgrpo.kubeflow import s3 as s3sync
    from mtgrpo.trainer.train import check_batch_shape

    topology = read_topology(env)
    job_name = env.get(hc.JOB_NAME_ENV, "")
    if not job_name:
        raise UserError(Problem("environment", hc.JOB_NAME_ENV, "is not set",
                                "the job's name (the rendered pod sets it from its "
                                f"{hc.JOB_NAME_LABEL} label)"))
    if topology.restart:
        print(f"mtgrpo: the operator's restart {topology.restart}", flush=True)
    platform = read_config(config_dir / hc.PLATFORM_KEY, hc.PLATFORM_KEY)
    for d in (layout.config_dir, layout.model_dir, layout.output_data_dir):
        d.mkdir(parents=True, exist_ok=True)
    layout.hyperparameters_file.write_text(json.dumps(
        read_config(config_dir / hc.HYPERPARAMETERS_KEY, hc.HYPERPARAMETERS_KEY),
        indent=1, sort_keys=True))
    config = read_hyperparameters(layout)  # a bad value fails here, before downloads

    s3 = None
    started = time.monotonic()
    for channel, uri in sorted((platform.get("channels") or {}).items()):
        if uri.startswith("s3://"):
            s3 = s3 or s3sync.client()
            count = s3sync.download_prefix(s3, uri, layout.channel_dir(channel))
            print(f"mtgrpo: channel {channel}: {count} files from {uri}", flush=True)
        else:
            link_channel(layout.channel_dir(channel), Path(uri))
            print(f"mtgrpo: channel {channel}: {uri} (FSx, read in place)", flush=True)
    print(f"mtgrpo: channels ready in {time.monotonic() - started:.1f} s", flush=True)
    checkpoints = platform.get("checkpoints") or {}
    remote = None
    done: set[int] = set()
    if checkpoints.get("dir"):
        shared = Path(checkpoints["dir"]) / job_name
        shared.mkdir(parents=True, exist_ok=True)
        if not layout.checkpoint_dir.is_symlink():
            if layout.checkpoint_dir.exists():
                layout.checkpoint_dir.rmdir()  # an empty leftover: the link replaces it
            layout.checkpoint_dir.symlink_to(shared, target_is_directory=True)
    else:
        layout.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if checkpoints.get("s3_uri"):
        s3 = s3 or s3sync.client()
        # One prefix per job: another job never resumes this one's checkpoints.
        remote = str(s3sync.S3Prefix.parse(checkpoints["s3_uri"]).join(job_name))
        step = s3sync.latest_complete_checkpoint(s3, remote)
        if step is not None:
            path = s3sync.download_checkpoint(s3, remote, step, layout.checkpoint_dir)
            print(f"mtgrpo: downloaded {path.name} from {remote}", flush=True)
            done.add(step)
    paths = resolve_paths(config, layout)
    resources = topology.resource_config()
    master_addr = None
    if topology.num_nodes > 1:
        master_addr = resolve_hosts([topology.master_addr])[topology.master_addr]
    metrics = paths.output_dir / METRICS_FILE if resources.is_master else None
    resumed = prepare_resume(paths.checkpoint_dir, metrics)
    if resumed is not None:
        print(f"mtgrpo: resuming from {resumed}", flush=True)
    plan = build_plan(config, resources, layout, model=paths.model,
                      gpu_count=detect_gpu_count(env), master_addr=master_addr,
                      master_port=topology.master_port, visible_devices=visible_devices(env))
    print(f"mtgrpo: plan {describe_plan(plan)}", flush=True)
    check_batch_shape(config, plan.world_size, source=str(layout.hyperparameters_file))
    uploader = None
    if remote:
        uploader = s3sync.CheckpointUploader(s3, layout.checkpoint_dir, remote,
                                             node=topology.node_rank, done=done,
                                             keep=config.save_total_limit).start()
    try:
        code = run_plan(plan)
    finally:
        if uploader is not None:
            uploader.flush()  # also the checkpoint a SIGTERM stop saved
    print(f"mtgrpo: exit {code}", flush=True)
    if uploader is not None and uploader.errors:
        raise JobFailed("checkpoint upload failed: " + "; ".join(uploader.errors[-3:]))
    if code == 0 and resources.is_master:
        if not (layout.model_dir / "config.json").is_file():
            raise JobFailed(f"training finished but wrote no model to {layout.model_dir}")
        s3 = s3 or s3sync.client()
        out = s3sync.S3Prefix.parse(platform["output_path"]).join(job_name)
        count = s3sync.upload_tree(s3, layout.model_dir, str(out.join("model")))
        s3sync.upload_tree(s3, layout.output_data_dir, str(out.join("output", "data")))
        print(f"mtgrpo: uploaded the model ({count} files) to {out.join('model')}", flush=True)
    return code
