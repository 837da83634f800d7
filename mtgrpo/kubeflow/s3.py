"""S3 for the Kubeflow mode: what SageMaker did for the container and Kubeflow does not.

- :func:`download_prefix`: an input channel (every object under the prefix) into its
  directory, before training starts.
- :class:`CheckpointUploader`: uploads each checkpoint this node has committed (the marker
  protocol of :mod:`mtgrpo.sagemaker.checkpoints`): the files the node's marker lists first,
  the marker last, so a half-uploaded checkpoint never counts as complete.
- :func:`latest_complete_checkpoint` / :func:`download_checkpoint`: after a pod restart, the
  newest checkpoint whose every node marker and every listed file (with its size) is in S3.
- :func:`prune_checkpoints`: the first node keeps ``save_total_limit`` complete checkpoints in
  S3, as the Trainer does on disk.
- :func:`upload_tree`: the final model and the output data.

The client is boto3's: credentials from the pod's service account (IRSA or Pod Identity), the
endpoint from ``AWS_ENDPOINT_URL`` when set (tests use moto's server).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from mtgrpo.contract.checkpoints import MARKER_DIR, is_complete
from mtgrpo.sagemaker.checkpoints import list_checkpoints
from mtgrpo.sagemaker.failure import JobFailed

_S3 = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def client():
    import boto3

    return boto3.client("s3")


@dataclass(frozen=True)
class S3Prefix:
    bucket: str
    key: str  # no leading or trailing '/'

    @classmethod
    def parse(cls, uri: str) -> "S3Prefix":
        match = _S3.match(uri)
        if not match:
            raise JobFailed(f"{uri!r} is not an s3:// URI")
        return cls(match.group("bucket"), match.group("key").strip("/"))

    def join(self, *parts: str) -> "S3Prefix":
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Prefix(self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _objects(s3: Any, prefix: S3Prefix) -> Iterator[dict]:
    """Objects under ``prefix`` as a directory (``key/...``), or the one object ``key``."""
    paginator = s3.get_paginator("list_objects_v2")
    wanted = prefix.key + "/" if prefix.key else ""
    for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key == prefix.key or key.startswith(wanted):
                yield item


def _download(s3: Any, bucket: str, key: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    s3.download_file(bucket, key, str(partial))
    os.replace(partial, target)


def download_prefix(s3: Any, uri: str, dest: Path) -> int:
    """Every object under ``uri`` into ``dest`` (relative keys kept); returns the file count.
    An S3 URI naming one object downloads that object into ``dest``."""
    prefix = S3Prefix.parse(uri)
    count = 0
    for item in _objects(s3, prefix):
        key = item["Key"]
        if key.endswith("/"):
            continue  # a console "folder"
        relative = key[len(prefix.key):].lstrip("/") if key != prefix.key \
            else key.rsplit("/", 1)[-1]
        _download(s3, prefix.bucket, key, dest / relative)
        count += 1
    if count == 0:
        raise JobFailed(f"no objects under {uri}")
    return count


def upload_tree(s3: Any, local: Path, uri: str) -> int:
    """Every file under ``local`` to ``uri``/<relative path>; returns the file count."""
    prefix = S3Prefix.parse(uri)
    count = 0
    for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
        s3.upload_file(str(path), prefix.bucket, prefix.join(path.relative_to(local).as_posix()).key)
        count += 1
    return count


# -- checkpoints --------------------------------------------------------------------------------

def _remote_checkpoints(s3: Any, prefix: S3Prefix) -> dict[int, dict[str, int]]:
    """step -> {relative file: size} of every ``checkpoint-<step>/`` under ``prefix``."""
    found: dict[int, dict[str, int]] = {}
    for item in _objects(s3, prefix):
        relative = item["Key"][len(prefix.key):].lstrip("/")
        head, _, rest = relative.partition("/")
        match = _CHECKPOINT.match(head)
        if match and rest:
            found.setdefault(int(match.group(1)), {})[rest] = item["Size"]
    return found


def latest_complete_checkpoint(s3: Any, uri: str) -> int | None:
    """The newest step whose checkpoint is complete in S3: a marker for every node, and every
    file a marker lists there with its size (the local rule, applied to S3)."""
    prefix = S3Prefix.parse(uri)
    remote = _remote_checkpoints(s3, prefix)
    for step in sorted(remote, reverse=True):
        if _complete(s3, prefix, step, remote[step]):
            return step
    return None


def _complete(s3: Any, prefix: S3Prefix, step: int, files: dict[str, int]) -> bool:
    """The one rule (:func:`mtgrpo.contract.checkpoints.is_complete`) over the S3 listing."""
    def read(name: str) -> bytes:
        return s3.get_object(Bucket=prefix.bucket,
                             Key=prefix.join(f"checkpoint-{step}", name).key)["Body"].read()

    return is_complete(files, read)


def prune_checkpoints(s3: Any, uri: str, keep: int) -> list[int]:
    """Delete every checkpoint older than the ``keep`` newest complete ones (an older
    incomplete one too); newer ones, complete or still uploading, stay. The steps deleted."""
    prefix = S3Prefix.parse(uri)
    remote = _remote_checkpoints(s3, prefix)
    complete = [step for step in sorted(remote) if _complete(s3, prefix, step, remote[step])]
    if keep < 1 or len(complete) <= keep:
        return []
    oldest_kept = complete[-keep]
    gone = [step for step in sorted(remote) if step < oldest_kept]
    for step in gone:
        keys = [{"Key": prefix.join(f"checkpoint-{step}", name).key} for name in remote[step]]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            s3.delete_objects(Bucket=prefix.bucket, Delete={"Objects": keys[i:i + 1000],
                                                            "Quiet": True})
    return gone


def download_checkpoint(s3: Any, uri: str, step: int, checkpoint_dir: Path) -> Path:
    """``checkpoint-<step>`` (every node's files and markers) into ``checkpoint_dir``."""
    prefix = S3Prefix.parse(uri).join(f"checkpoint-{step}")
    target = Path(checkpoint_dir) / f"checkpoint-{step}"
    for item in _objects(s3, prefix):
        _download(s3, prefix.bucket, item["Key"],
                  target / item["Key"][len(prefix.key):].lstrip("/"))
    return target


class CheckpointUploader:
    """Uploads this node's committed checkpoints in a background thread while training runs.

    ``flush()`` (after training ended, before the pod exits) uploads what is left, such as the
    checkpoint a SIGTERM stop saved."""

    def __init__(self, s3: Any, checkpoint_dir: Path, uri: str, *, node: int,
                 interval_s: float = 15.0, done: set[int] | None = None, keep: int = 0):
        self.s3 = s3
        self.checkpoint_dir = Path(checkpoint_dir)
        self.prefix = S3Prefix.parse(uri)
        self.node = node
        self.keep = keep  # node 0 prunes S3 to this many complete checkpoints (0: never)
        self.interval_s = interval_s
        self.uploaded: set[int] = set(done or ())
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-uploader",
                                        daemon=True)

    def start(self) -> "CheckpointUploader":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sync()

    def sync(self) -> list[int]:
        """Upload every committed, not yet uploaded checkpoint of this node; the steps done."""
        done = []
        with self._lock:
            for step, path in list_checkpoints(self.checkpoint_dir):
                marker = path / MARKER_DIR / f"node-{self.node:05d}.json"
                if step in self.uploaded or not marker.is_file():
                    continue
                try:
                    self._upload(step, path, marker)
                except FileNotFoundError:
                    continue  # rotated away by the Trainer meanwhile; a newer one follows
                except Exception as err:  # noqa: BLE001 - retried on the next pass
                    self.errors.append(f"checkpoint-{step}: {type(err).__name__}: {err}")
                    continue
                self.uploaded.add(step)
                done.append(step)
                print(f"mtgrpo: uploaded checkpoint-{step} to "
                      f"{self.prefix.join(f'checkpoint-{step}')}", flush=True)
            if done and self.node == 0 and self.keep:
                try:
                    gone = prune_checkpoints(self.s3, str(self.prefix), self.keep)
                except Exception as err:  # noqa: BLE001 - pruning again after the next upload
                    print(f"mtgrpo: pruning old S3 checkpoints failed: {err}", flush=True)
                else:
                    if gone:
                        print(f"mtgrpo: deleted S3 checkpoints {gone} (save_total_limit "
                              f"{self.keep})", flush=True)
        return done

    def _upload(self, step: int, path: Path, marker: Path) -> None:
        listed = json.loads(marker.read_text()).get("files", {})
        base = self.prefix.join(f"checkpoint-{step}")
        for name in sorted(listed):
            self.s3.upload_file(str(path / name), base.bucket, base.join(name).key)
        self.s3.upload_file(str(marker), base.bucket,
                            base.join(MARKER_DIR, marker.name).key)  # last: commits it

    def flush(self) -> list[int]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.sync()
