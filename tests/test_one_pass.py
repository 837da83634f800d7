"""Every problem of every recipe in one run: sorted by file and key, one line each, a note for
checks that could not run, and a last line counting the problems."""

from __future__ import annotations

from mtgrpo.cli import main
from tests.renderkit import copy_project, snapshot

TUNE = "recipes/qwen2-5-1-5b-tune.yaml"
G5 = "recipes/qwen2-5-1-5b-g5.yaml"


def _err(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), lines
    return [line[len("error: "):] for line in lines]


def test_three_unrelated_mistakes_in_one_run(tmp_path, capsys):
    """A rule (environment on a tuning recipe), a rule on another key (region) and a service
    model check (a misspelt instance type): three stages, three lines, one run."""
    root = copy_project(tmp_path)
    path = root / TUNE
    path.write_text(path.read_text().replace(
        "job:\n  max_run: 21600\n",
        "job:\n  max_run: 21600\n  environment: {NCCL_DEBUG: WARN}\n"
        "  region: us-west-3\n  instance_type: ml.g5.2xlarg\n"))
    before = snapshot(root)
    assert main(["validate", "--root", str(root)]) == 1
    lines = _err(capsys)
    assert len(lines) == 4, lines
    assert [line.split(": ")[1] for line in lines[:3]] == [
        "job.environment", "job.instance_type", "job.region"]
    assert all(line.startswith(f"{TUNE}: ") for line in lines[:3])
    assert "did you mean 'ml.g5.2xlarge'" in lines[1] and "us-west-2" in lines[2]
    assert lines[3] == "3 problems in 1 file; nothing written"
    assert snapshot(root) == before


def test_a_stage_that_cannot_run_says_so_once(tmp_path, capsys):
    root = copy_project(tmp_path)
    (root / TUNE).write_text((root / TUNE).read_text().replace("max_run: 21600",
                                                               "max_run: soon"))
    (root / G5).write_text((root / G5).read_text().replace("trainer:", "trainer:\n  seeed: 1"))
    (root / "recipes/_project.yaml").write_text(
        (root / "recipes/_project.yaml").read_text() + "colour: blue\n")
    assert main(["render", "--root", str(root)]) == 1
    lines = _err(capsys)
    keys = [tuple(line.split(": ")[:2]) for line in lines[:-2]]
    assert keys == sorted(keys) and len(keys) == 3, lines
    assert {k[0] for k in keys} == {G5, TUNE, "recipes/_project.yaml"}
    assert lines[-2].startswith("not rendered, so their resources were not checked: ")
    assert sum(line.startswith("not rendered") for line in lines) == 1
    assert lines[-1] == "3 problems in 3 files; nothing written"


def test_a_schema_mistake_a_rule_and_an_instance_type_are_three_lines(tmp_path, capsys):
    """A misspelt trainer key (schema), max_wait below max_run (a rule) and an instance type
    that does not exist (the service model's enum): the enum is checked with the recipe's
    values, so it is not held back until the schema mistake is fixed."""
    root = copy_project(tmp_path)
    path = root / G5
    text = path.read_text().replace("  learning_rate: 1.0e-6", "  lerning_rate: 1.0e-6")
    path.write_text(text.replace("  max_run: 43200", "  max_run: 43200\n  max_wait: 3600\n"
                                 "  use_spot_instances: true\n"
                                 "  checkpoint_s3_uri: s3://acme-ml/ckpt\n"
                                 "  instance_type: ml.g5.3xlarge"))
    assert main(["validate", "--root", str(root), str(root / G5)]) == 1
    lines = _err(capsys)
    keys = [line.split(": ")[1] for line in lines if line.startswith(f"{G5}: ")]
    assert keys == ["job.instance_type", "job.max_wait", "trainer.lerning_rate"], lines
    assert lines[-1] == "3 problems in 1 file; nothing written"


def test_the_fit_check_runs_beside_other_problems_and_each_is_said_once(tmp_path, capsys):
    """A recipe that does not fit and has an unrelated rule problem: both lines. A value that
    a rule and the resource check both refuse (the instance type) is one line."""
    root = copy_project(tmp_path)
    path = root / G5
    text = path.read_text().replace("  max_steps: 200", "  max_steps: 200\n"
                                    "  per_device_train_batch_size: 64\n"
                                    "  gradient_checkpointing: false")
    path.write_text(text.replace("  max_run: 43200", "  max_run: 43200\n  max_wait: 3600\n"
                                 "  use_spot_instances: true\n"
                                 "  checkpoint_s3_uri: s3://acme-ml/ckpt"))
    assert main(["validate", "--root", str(root), str(root / G5)]) == 1
    lines = _err(capsys)
    assert any("does not fit on one A10G" in line for line in lines), lines
    assert any(line.startswith(f"{G5}: job.max_wait: ") for line in lines), lines
    path.write_text(text.replace("  max_run: 43200",
                                 "  max_run: 43200\n  instance_type: ml.g5.3xlarge"))
    assert main(["validate", "--root", str(root), str(root / G5)]) == 1
    lines = _err(capsys)
    assert [line.split(": ")[1] for line in lines[:-1]] == ["job.instance_type"], lines
