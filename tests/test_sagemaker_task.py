"""A task of the user's own, brought by the ``code`` channel, in a simulated SageMaker job.

The channel holds a ``sourcedir.tar.gz`` (as the SageMaker SDK's ``source_dir`` uploads it) of a
package with a tool, a reward and a record loader; no corpus channel. The entry point unpacks it,
puts it on the path, checks the plug-ins before anything starts and trains with them. A plug-in
that cannot be imported, or raises when loaded, ends the job with one line in output/failure.
Rollouts use the transformers sampler, so no vLLM server is started.
"""

from __future__ import annotations

import json
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from opt_ml import lay_out
from test_sagemaker_job import rendered_hyperparameters, run_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent

USERTASK = '''
from mtgrpo.examples.arithmetic import load_problems  # a record loader of the user's choice
from mtgrpo.task import FunctionTool, reward

SCHEMA = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
shout = FunctionTool(lambda text: text.upper(), name="shout", description="Upper-cases text.",
                     parameters=SCHEMA)


@reward(level="outcome")
def answered(episode):
    return float(episode.answer is not None)


def broken(context):
    raise RuntimeError("license server unreachable")
'''


def code_tarball(directory: Path, modules: dict[str, str]) -> Path:
    package = directory / "src" / "usertask"
    package.mkdir(parents=True)
    for name, text in modules.items():
        (package / name).write_text(textwrap.dedent(text))
    chan = directory / "code"
    chan.mkdir()
    with tarfile.open(chan / "sourcedir.tar.gz", "w:gz") as tar:
        tar.add(package, arcname="usertask")
    return chan


def job(tmp_path: Path, tiny_model_dir: Path, **hp: str) -> Path:
    code = code_tarball(tmp_path, {"__init__.py": "", "task.py": USERTASK,
                                   "bad.py": "import a_dependency_the_image_lacks\n"})
    data = tmp_path / "data"
    data.mkdir()
    from mtgrpo.examples.arithmetic import main as write_problems

    write_problems([str(data), "--train", "8", "--eval", "2"])
    values = rendered_hyperparameters(**{
        "generation_backend": "transformers", "task_records": "usertask.task:load_problems",
        "task_tools": "usertask.task:shout", "task_rewards": "usertask.task:answered,format=0.2",
        "max_steps": "1", "save_steps": "10", **hp})
    return lay_out(tmp_path / "opt_ml", values, channels={
        "train": data / "train.jsonl", "eval": data / "eval.jsonl", "model": tiny_model_dir,
        "code": code})


def failure(root: Path) -> str:
    return (root / "output" / "failure").read_text().strip()


def test_code_channel_task_trains_with_its_own_plugins(tmp_path, tiny_model_dir):
    root = job(tmp_path, tiny_model_dir)
    log = tmp_path / "job.log"
    code = run_job(root, log, timeout=600)
    output = log.read_text(errors="replace")
    assert code == 0, output[-4000:]
    assert f"task code from {root / 'output' / 'mtgrpo-work' / 'code'}" in output
    (row,) = [json.loads(x) for x in (root / "output" / "data" / "metrics.jsonl").read_text()
              .splitlines()]
    assert row["step"] == 1
    rewards = {k for k in row if k.startswith("reward_")} - {"reward_turn", "reward_outcome",
                                                             "reward_std"}
    assert rewards == {"reward_answered", "reward_format"}  # the task's, not TriviaQA's
    assert (root / "model" / "model.safetensors").is_file()


def test_plugin_that_cannot_be_imported_fails_before_anything_starts(tmp_path, tiny_model_dir):
    root = job(tmp_path, tiny_model_dir, task_tools="usertask.bad:tool")
    started = time.monotonic()
    assert run_job(root, tmp_path / "log", timeout=120) == 1
    assert time.monotonic() - started < 60
    assert failure(root) == (
        f"{root}/input/config/hyperparameters.json: task_tools: 'usertask.bad:tool': cannot be "
        "imported (ModuleNotFoundError: No module named 'a_dependency_the_image_lacks') "
        "(allowed: a module importable in the job: the code channel or the image; locally: "
        "the config file's folder, the current directory or the Python path)")


def test_plugin_that_raises_at_load_ends_the_job_with_one_line(tmp_path, tiny_model_dir):
    root = job(tmp_path, tiny_model_dir, task_tools="usertask.task:broken")
    assert run_job(root, tmp_path / "log", timeout=300) == 1
    assert failure(root) == (f"{root}/input/config/hyperparameters.json: task_tools: "
                             "'usertask.task:broken': failed at load (RuntimeError: license "
                             "server unreachable)")
    assert not (root / "model" / "config.json").exists()
