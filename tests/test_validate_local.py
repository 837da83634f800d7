"""``mtgrpo validate`` on local ``mtgrpo train`` configs: the checks ``train`` runs before it
starts anything, plug-ins imported the way ``train`` imports them (the config file's folder,
then the current directory), every problem of every file in one run."""

from __future__ import annotations

import pytest

from mtgrpo.cli import main
from tests.renderkit import REPO

TOOL = '''from mtgrpo.task import FunctionTool


def _lookup(sku: str, shop: str, limit: int) -> str:
    return f"{sku} in {shop}: {limit}"


lookup = FunctionTool(
    _lookup, name="lookup", description="Finds an item.",
    parameters={"type": "object", "required": ["sku", "shop", "limit"],
                "properties": {"sku": {"type": "string"}, "shop": {"type": "string"},
                               "limit": {"type": "integer"}}})
'''


def _config(folder, tools, **extra):
    values = {"model_name_or_path": "some/model", "train_file": "train.jsonl",
              "task_tools": tools, "num_generations": 2, "per_device_train_batch_size": 2,
              "gradient_accumulation_steps": 1, **extra}
    lines = ["trainer:"] + [f"  {k}: {v}" for k, v in values.items()]
    path = folder / "local.yaml"
    path.write_text("\n".join(lines) + "\n")
    (folder / "train.jsonl").write_text('{"question": "q?", "aliases": ["a"]}\n')
    return path


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a directory that is not the plug-in's: `train` and `validate` still find it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    return tmp_path


def test_shipped_local_configs_are_valid(capsys):
    assert main(["validate", str(REPO / "recipes/local/tiny-cpu.yaml"),
                 str(REPO / "recipes/local/arithmetic-cpu.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("local trainer config valid" in line for line in out)


def test_plugin_beside_the_config_is_found_from_another_directory(elsewhere, capsys):
    task = elsewhere / "task"
    task.mkdir()
    (task / "shop_tools_a.py").write_text(TOOL)
    config = _config(task, "shop_tools_a:lookup")
    assert main(["validate", str(config)]) == 0
    assert "local trainer config valid" in capsys.readouterr().out


def test_every_problem_of_every_file_in_one_run(elsewhere, capsys):
    task = elsewhere / "task"
    task.mkdir()
    (task / "shop_tools_b.py").write_text(TOOL)
    config = _config(task, "shop_tools_b:lookupp", num_generations=3, lerning_rate="1e-6")
    recipe = REPO / "recipes" / "qwen2-5-1-5b-g5.yaml"
    assert main(["validate", "--root", str(REPO), str(config), str(recipe)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("warning: ")]  # the shipped recipe's placeholders
    assert all(line.startswith("error: ") for line in err), err
    assert any("lerning_rate" in line and "learning_rate" in line for line in err), err
    assert len(err) == 1  # an unknown key stops the config's other checks, as in `train`
    config = _config(task, "shop_tools_b:lookupp", num_generations=3)
    assert main(["validate", "--root", str(REPO), str(config), str(recipe)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("warning: ")]
    assert len(err) == 2, err
    assert "trainer.num_generations: 3 does not divide" in err[0]
    assert "task_tools: 'shop_tools_b:lookupp': module shop_tools_b has no attribute " \
           "'lookupp'" in err[1]
