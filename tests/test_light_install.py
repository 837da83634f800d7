"""The light install (no extras): `mtgrpo pipeline` and `mtgrpo train` say in one line which
extra to install, and exit 1.

Each runs in a child Python whose import system hides the extras' modules (a meta path finder
that refuses them, as a missing package would), so CI needs no second virtual environment and
the rest of the environment stays exactly the one the suite uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.renderkit import REPO

_CHILD = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1].split(","))

class Missing(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from mtgrpo.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run(blocked: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _CHILD, blocked, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_pipeline_without_kfp(tmp_path):
    done = _run("kfp", "pipeline", str(REPO / "recipes" / "qwen2-5-1-5b-tune.yaml"),
                "-o", str(tmp_path / "p.yaml"), cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == [
        "error: mtgrpo pipeline: needs kfp, which is not installed "
        "(allowed: pip install 'mtgrpo[pipelines]')"]
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("blocked", ["torch,httpx", "torch", "httpx"])
def test_train_without_the_trainer_extra(tmp_path, blocked):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "train.jsonl").write_text('{"question": "q", "aliases": ["a"]}\n')
    (tmp_path / "c.yaml").write_text("trainer:\n  model_name_or_path: m\n"
                                     "  train_file: train.jsonl\n  corpus_dir: corpus\n"
                                     "  learning_rate: 1e-6\n")
    done = _run(blocked, "train", "c.yaml", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 1, done
    missing = ", ".join(blocked.split(","))
    assert done.stderr.splitlines() == [
        f"error: mtgrpo train: needs {missing}, which {'are' if ',' in blocked else 'is'} not "
        "installed (allowed: pip install 'mtgrpo[trainer]')"]
    assert not (tmp_path / "out").exists()


def test_a_module_missing_mid_command_is_named_too(tmp_path):
    """The error boundary's fallback: an extra's module imported past the up-front check."""
    from mtgrpo.commands._extras import missing_extra

    assert missing_extra("torch.cuda") == "trainer" and missing_extra("kfp.dsl") == "pipelines"
    assert missing_extra("yaml") is None


# Every module of the extras: the README's first command installs none of them.
_EXTRAS = "torch,httpx,transformers,trl,vllm,accelerate,peft,deepspeed,datasets,bm25s,kfp"


@pytest.mark.parametrize("command", [["validate"], ["plan", "--output", "json"]])
def test_the_light_install_validates_and_plans_the_shipped_recipes_as_the_full_one(command):
    """`pip install -e . && mtgrpo render` (the README's first command) must accept the shipped
    recipes: the fit planner's rollout rule (mtgrpo.rollout.decode) imports without torch or
    httpx, so the light install counts the same memory as a full one."""
    light = _run(_EXTRAS, *command, "--root", str(REPO), cwd=REPO)
    full = _run("", *command, "--root", str(REPO), cwd=REPO)
    assert light.returncode == 0, light.stderr
    assert light.stdout == full.stdout


def test_the_task_api_imports_on_the_light_install(tmp_path):
    """docs/tasks.md: writing a task needs only the light install (no numpy, torch, bm25s)."""
    script = _CHILD.replace("from mtgrpo.cli import main\nsys.exit(main(sys.argv[2:]))",
                            "from mtgrpo.task import FunctionTool, Record, reward\n"
                            "print(FunctionTool.__name__, Record.__name__, reward.__name__)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script, _EXTRAS + ",numpy,pyarrow"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["FunctionTool", "QARecord", "reward"]  # Record is an alias
