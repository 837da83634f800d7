"""The Kubeflow mode of ``python -m mtgrpo.sagemaker train`` (one run per pod): the Kubeflow
backend's image adapter.

It lays out the same ``/opt/ml`` tree SageMaker would and then runs the one sequence every
backend runs, :func:`mtgrpo.sagemaker.job.run_steps` (launch plan, vLLM supervision, workers,
complete-only checkpoints), presented with the pods' topology:

1. ``PET_*`` -> topology (:mod:`mtgrpo.kubeflow.platform`);
2. the ConfigMap's ``hyperparameters.json`` plus a Katib trial's ``MTGRPO_HP_<name>`` values
   -> ``input/config/hyperparameters.json`` (checked by the trainer's schema);
3. every channel of ``kubeflow.json`` downloaded from S3 into ``input/data/<channel>``;
4. the newest complete checkpoint under ``<checkpoint_s3_uri>/<job>/`` downloaded, so the
   Trainer resumes from it after a pod restart;
5. the plan runs while committed checkpoints are uploaded; at the end the first pod uploads
   the model to ``<output_path>/<job>/model/`` and ``output/data`` beside it;
6. a failure's one-line reason goes to ``output/failure`` and the pod's termination message.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterator, Mapping

from mtgrpo.errors import Problem, UserError
from mtgrpo.kubeflow import contract as kc
from mtgrpo.kubeflow.platform import read_topology
from mtgrpo.sagemaker.contract import OptML, ResourceConfig, read_hyperparameters
from mtgrpo.sagemaker.failure import TERMINATION_LOG_ENV, JobFailed, run_pod

METRICS_FILE = "metrics.jsonl"


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(Problem(str(path), "", f"{what} is missing", "the rendered ConfigMap "
                                f"mounted at {kc.CONFIG_DIR}")) from None
    except json.JSONDecodeError as err:
        raise UserError(Problem(str(path), "", f"not valid JSON ({err.msg})",
                                "a JSON object")) from None
    if not isinstance(data, dict):
        raise UserError(Problem(str(path), "", "must be a JSON object", "a JSON object"))
    return data


def hyperparameters(config_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The ConfigMap's static hyperparameters with a Katib trial's tuned values on top."""
    values = _read_json(config_dir / kc.HYPERPARAMETERS_KEY, kc.HYPERPARAMETERS_KEY)
    for name, value in sorted(environ.items()):
        if name.startswith(kc.TUNED_ENV_PREFIX):
            values[name[len(kc.TUNED_ENV_PREFIX):]] = value
    return values


def run_kubeflow_job(environ: Mapping[str, str] | None = None,
                     layout: OptML | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    layout = layout or OptML.from_env(env)
    config_dir = Path(env.get(kc.CONFIG_DIR_ENV) or kc.CONFIG_DIR)
    termination = Path(env.get(TERMINATION_LOG_ENV) or kc.TERMINATION_LOG)
    return run_pod(lambda: _run(env, layout, config_dir), layout.failure_file, termination)


def _run(env: dict, layout: OptML, config_dir: Path) -> int:
    from mtgrpo.kubeflow import s3 as s3sync
    from mtgrpo.sagemaker.job import Presentation, run_steps

    topology = read_topology(env)
    job_name = env.get(kc.JOB_NAME_ENV, "")
    if not job_name:
        raise UserError(Problem("environment", kc.JOB_NAME_ENV, "is not set",
                                "the TrainJob's name (the rendered runtime sets it)"))
    platform = _read_json(config_dir / kc.PLATFORM_KEY, kc.PLATFORM_KEY)
    for d in (layout.config_dir, layout.model_dir, layout.output_data_dir,
              layout.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    layout.hyperparameters_file.write_text(json.dumps(hyperparameters(config_dir, env),
                                                      indent=1, sort_keys=True))
    config = read_hyperparameters(layout)  # a bad tuned value fails here, before downloads

    s3 = s3sync.client()
    started = time.monotonic()
    for channel, uri in sorted((platform.get("channels") or {}).items()):
        count = s3sync.download_prefix(s3, uri, layout.channel_dir(channel))
        print(f"mtgrpo: channel {channel}: {count} files from {uri}", flush=True)
    print(f"mtgrpo: channels downloaded in {time.monotonic() - started:.1f} s", flush=True)
    checkpoints = None
    done: set[int] = set()
    if platform.get("checkpoint_s3_uri"):
        # One prefix per TrainJob (and per Katib trial): trials never resume each other.
        checkpoints = str(s3sync.S3Prefix.parse(platform["checkpoint_s3_uri"]).join(job_name))
        step = s3sync.latest_complete_checkpoint(s3, checkpoints)
        if step is not None:
            path = s3sync.download_checkpoint(s3, checkpoints, step, layout.checkpoint_dir)
            print(f"mtgrpo: downloaded {path.name} from {checkpoints}", flush=True)
            done.add(step)
    uploader = None
    if checkpoints:
        uploader = s3sync.CheckpointUploader(s3, layout.checkpoint_dir, checkpoints,
                                             node=topology.node_rank, done=done,
                                             keep=config.save_total_limit)

    @contextlib.contextmanager
    def uploading() -> Iterator[None]:
        if uploader is not None:
            uploader.start()
        try:
            yield
        finally:
            if uploader is not None:
                uploader.flush()  # also the checkpoint a SIGTERM stop saved

    def finished(code: int, resources: ResourceConfig) -> None:
        if uploader is not None and uploader.errors:
            raise JobFailed("checkpoint upload failed: " + "; ".join(uploader.errors[-3:]))
        if code == 0 and resources.is_master:
            out = s3sync.S3Prefix.parse(platform["output_path"]).join(job_name)
            count = s3sync.upload_tree(s3, layout.model_dir, str(out.join("model")))
            s3sync.upload_tree(s3, layout.output_data_dir, str(out.join("output", "data")))
            print(f"mtgrpo: uploaded the model ({count} files) to {out.join('model')}",
                  flush=True)

    # The one sequence every backend runs (mtgrpo.sagemaker.job.run_steps), presented with
    # the pods' topology: only the first pod's address is resolvable by name.
    return run_steps(layout, Presentation(
        resources=topology.resource_config(), resolve=[topology.master_addr],
        master_port=topology.master_port, environ=env, running=uploading, finished=finished))
