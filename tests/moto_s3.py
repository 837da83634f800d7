"""moto's S3 server on a free port, for the Kubeflow mode's tests (boto3 reaches it through
AWS_ENDPOINT_URL, in this process and in the job's subprocesses)."""

from __future__ import annotations

import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BUCKET = "amzn-s3-demo-bucket"


@contextmanager
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its state per process, across servers: start each test from nothing
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"),
                           timeout=30).close()
    try:
        yield endpoint
    finally:
        server.stop()


def put_tree(s3, local: Path, key_prefix: str, bucket: str = BUCKET) -> None:
    local = Path(local)
    paths = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for path in paths:
        name = path.name if local.is_file() else path.relative_to(local).as_posix()
        s3.upload_file(str(path), bucket, f"{key_prefix}/{name}")


def keys(s3, prefix: str, bucket: str = BUCKET) -> dict[str, int]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out
