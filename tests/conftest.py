"""Shared fixtures: the tiny local model and one real vLLM CPU server for the whole session.

The server takes about a minute to start on a 2-core machine, so every test that needs one
shares this session-scoped server. A test that changes the server's weights (a weight sync)
must not assume other tests' weights: reload what it needs first.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch):
    """No test may reach real AWS: fake credentials, a fixed region, no instance metadata."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    path = Path(os.environ.get("MTGRPO_CRD_DIR", SHARED / "crds"))
    assert (path / "sagemaker.services.k8s.aws_trainingjobs.yaml").is_file(), path
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A two-layer Qwen2 model with a local BPE tokenizer (built once per session)."""
    from mtgrpo.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


class VLLMTestServer:
    def __init__(self, model_dir: Path, port: int, log: Path):
        self.model_dir = model_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_SERVER_DEV_MODE="1",
                   VLLM_LOGGING_LEVEL="WARNING")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
             str(model_dir), "--dtype", "bfloat16", "--gpu-memory-utilization", "0.3",
             "--port", str(port), "--host", "127.0.0.1", "--seed", "0"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_healthy(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({self.proc.returncode}); log: "
                                   + self.log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"vLLM server not healthy after {timeout}s; log: "
                           + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, tmp_path_factory):
    """One real vllm-cpu server on the tiny model, shared by the whole test session."""
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = VLLMTestServer(tiny_model_dir, free_port(), log)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()
