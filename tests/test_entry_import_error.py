"""The container's entry point in an image that lacks one of the trainer's packages: the reason
reaches ``/opt/ml/output/failure`` (SageMaker's FailureReason), one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

# PyYAML is imported by the job's modules at load time (the backend registry's recipe code);
# None in sys.modules makes its import raise ModuleNotFoundError as a missing package would.
BLOCKED = """
import sys
sys.modules["yaml"] = None
from mtgrpo.sagemaker.__main__ import main
sys.exit(main(["train"]))
"""


def test_missing_package_writes_failure_file(tmp_path):
    env = dict(os.environ, MTGRPO_OPT_ML=str(tmp_path / "opt_ml"))
    proc = subprocess.run([sys.executable, "-c", BLOCKED], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: mtgrpo could not start: the image lacks the Python package 'yaml' (build the "
        "image from the project's Dockerfile, or install mtgrpo[trainer] in it)"]
    failure = (tmp_path / "opt_ml" / "output" / "failure").read_text()
    assert failure.startswith("mtgrpo could not start: the image lacks the Python package "
                              "'yaml'")
    assert failure.count("\n") == 1


def test_usage_is_unchanged(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mtgrpo.sagemaker", "serve"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MTGRPO_OPT_ML=str(tmp_path)))
    assert proc.returncode == 2
    assert "the container's only command" in proc.stderr
    assert not (tmp_path / "output" / "failure").exists()
