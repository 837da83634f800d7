"""A real MLflow tracking server for the tests: ``mlflow server`` on 127.0.0.1 (a free port),
a SQLite backend store and a local artifact store, read back through ``MlflowClient``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def mlflow_server(root: Path, timeout_s: float = 300) -> Iterator[str]:
    from tests.conftest import free_port

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("w")
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'store.db'}",
         "--artifacts-destination", (root / "artifacts").as_uri()],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}: "
                                   f"{(root / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start in time")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)  # the server and its worker processes
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(30)
        log.close()


def metric_table(client, run_id: str) -> dict[int, dict[str, float]]:
    """step -> {metric: value} of a run, failing on a step logged twice for one metric."""
    table: dict[int, dict[str, float]] = {}
    for key in client.get_run(run_id).data.metrics:
        for point in client.get_metric_history(run_id, key):
            row = table.setdefault(point.step, {})
            assert key not in row, f"{key} logged twice at step {point.step}"
            row[key] = point.value
    return table
