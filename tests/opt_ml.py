"""Lay out a temporary ``/opt/ml`` the way SageMaker does (for the sagemaker container tests)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def lay_out(root: Path, hyperparameters: Mapping[str, str], *,
            channels: Mapping[str, Path] | None = None,
            hosts: tuple[str, ...] = ("algo-1",), current_host: str = "algo-1",
            network_interface_name: str = "eth0") -> Path:
    """Write input/config/*.json and copy each channel's directory to input/data/<name>/.

    Default channels: the train/eval QA fixtures and the corpus fixture."""
    if channels is None:
        channels = {"train": FIXTURES / "qa" / "train.jsonl", "eval": FIXTURES / "qa" / "eval.jsonl",
                    "corpus": FIXTURES / "corpus"}
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(dict(hyperparameters), indent=1))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": current_host, "hosts": list(hosts),
         "network_interface_name": network_interface_name}))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None"} for name in sorted(channels)}))
    for name, source in channels.items():
        target = root / "input" / "data" / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / source.name)
    return root


# -- running the image's entry point --------------------------------------------------------------

def start_train(env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """``python -m mtgrpo.sagemaker train`` (the container's entry point) with ``env``, its
    output to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "mtgrpo.sagemaker", "train"], env=dict(env),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_then_kill(proc: subprocess.Popen, timeout: float) -> int:
    """``proc``'s exit code within ``timeout`` s (``TimeoutExpired`` after it); a process still
    running when this returns or raises is killed."""
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def metrics_steps(root: Path) -> list[int]:
    """The steps in the job's ``output/data/metrics.jsonl`` (under its /opt/ml ``root``)."""
    path = root / "output" / "data" / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def sigterm_after_first_step(proc: subprocess.Popen, steps: Callable[[], list], log: Path, *,
                             start_timeout: float, stop_timeout: float,
                             tail: int = 4000) -> tuple[int, float]:
    """Wait until ``steps()`` shows a logged step, SIGTERM ``proc`` (what SageMaker does to the
    container's PID 1, and Kubernetes to a deleted pod) and wait for its exit: (exit code,
    seconds from the signal to the exit). A process still running at the end is killed."""
    try:
        deadline = time.monotonic() + start_timeout
        while not steps() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert steps(), log.read_text(errors="replace")[-tail:]
        os.kill(proc.pid, signal.SIGTERM)
        stopped_at = time.monotonic()
        code = proc.wait(stop_timeout)
        return code, time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
