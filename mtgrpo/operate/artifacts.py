"""``mtgrpo artifacts``: where a job's model is, and fetching it.

A training job's ``status.modelArtifacts.s3ModelArtifacts`` names its ``model.tar.gz``. A tuning
job has none of its own: its model is the best trial's, at
``<trainingJobDefinition.outputDataConfig.s3OutputPath>/<best trial>/output/model.tar.gz``.
A download goes to a temporary directory beside the destination and is renamed into place
once unpacked, so an interrupted download leaves nothing half-written.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mtgrpo.errors import Problem, UserError
from mtgrpo.operate.jobs import DONE, JobView
from mtgrpo.operate.kube import TUNING
from mtgrpo.safepath import extract_tar


def artifact_uri(job: JobView) -> str:
    if job.model_artifact:
        return job.model_artifact
    if job.kind == TUNING and not job.best.get("name"):
        why = "the tuning job has no best training job yet"
    elif job.status != DONE:
        why = f"the job is {job.status or 'not yet started'}, not Completed"
    else:
        why = "the job's status names no model artifact"
    raise UserError(Problem(f"{job.kind} {job.name}", "modelArtifacts", f"no model artifact: {why}",
                            "a Completed job"))


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise UserError(Problem("", uri, "not an S3 object URI", "s3://bucket/key"))
    return parsed.netloc, parsed.path.lstrip("/")


def download(uri: str, dest: Path, s3: Any, *, progress: bool = True) -> list[Path]:
    """Download ``uri`` (a .tar.gz) and unpack it into ``dest``; the unpacked files, sorted."""
    from botocore.exceptions import ClientError
    from tqdm import tqdm

    bucket, key = split_s3(uri)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(Problem(str(dest), "--download", "exists and is not an empty directory",
                                "a new or empty directory"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        try:
            size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
            archive = work / "model.tar.gz"
            with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=Path(key).name, disable=not progress) as bar:
                s3.download_file(bucket, key, str(archive), Callback=bar.update)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            raise UserError(Problem(uri, "", f"cannot download: {code or err}")) from None
        unpacked = work / "unpacked"
        try:
            unpacked.mkdir()
            extract_tar(archive, unpacked, source=uri)  # refuses paths escaping the directory
        except (tarfile.TarError, OSError) as err:
            raise UserError(Problem(uri, "", f"not a readable .tar.gz archive: {err}")) from None
        if dest.exists():
            dest.rmdir()
        unpacked.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def s3_client(region: str):
    from mtgrpo.operate.aws import client

    return client("s3", region)
