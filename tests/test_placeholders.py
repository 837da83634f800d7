"""Placeholders left in recipes: one warning per file and key from validate, plan, render and
diff; an error (everything else still reported, nothing written) with the project setting or
``--placeholders error``."""

from __future__ import annotations

import pytest

from mtgrpo.cli import main
from tests.renderkit import copy_project, snapshot

ACCOUNT = "recipes/base/account.yaml"
DIGEST = "0" * 64


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path / "repo")


def _own_values(root):
    """The user's first-day edit: every placeholder replaced (account file and recipes)."""
    for path in sorted((root / "recipes").rglob("*.yaml")):
        text = path.read_text()
        text = text.replace("111122223333", "444455556666").replace(
            "amzn-s3-demo-bucket", "acme-ml-data").replace(DIGEST, "ab" * 32)
        path.write_text(text)


def _lines(text, prefix):
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_shipped_recipes_warn_once_per_file_and_key(project, capsys):
    assert main(["validate", "--root", str(project)]) == 0
    captured = capsys.readouterr()
    warnings = _lines(captured.err, "warning: ")
    assert captured.out.startswith("ok: ")
    # the account file is extended by every SageMaker recipe, and named once per key
    account = [w for w in warnings if w.startswith(f"warning: {ACCOUNT}: ")]
    assert [w.split(": ")[2] for w in account] == [
        "job.image_uri", "job.inputs.corpus", "job.inputs.eval", "job.inputs.train",
        "job.output_path", "job.role"]
    assert "the all-zero image digest" in account[0] and "example account id" in account[0]
    assert len(warnings) == len(set(warnings))
    assert all("(allowed: your own value; docs/first-job.md, step 4)" in w for w in warnings)


@pytest.mark.parametrize("command", ["validate", "render", "diff", "plan"])
def test_no_warning_once_replaced(project, capsys, command):
    _own_values(project)
    if command == "diff":
        assert main(["render", "--root", str(project)]) == 0
        capsys.readouterr()
    assert main([command, "--root", str(project)]) == 0
    assert not _lines(capsys.readouterr().err, "warning: ")


def test_error_mode_refuses_with_every_other_problem_and_writes_nothing(project, capsys):
    spot = project / "recipes" / "qwen3-1-7b-p4d-spot.yaml"
    spot.write_text(spot.read_text().replace("job:\n", "job:\n  instance_typo: 1\n", 1))
    before = snapshot(project)
    assert main(["render", "--root", str(project), "--placeholders", "error"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert all(line.startswith("error: ") for line in err), err
    assert any("job.instance_typo" in line for line in err)
    assert any(line.startswith(f"error: {ACCOUNT}: job.role: still a placeholder") for line in err)
    assert err[-1].endswith("nothing written")
    assert snapshot(project) == before


def test_project_setting_makes_them_errors_and_the_flag_wins(project, capsys):
    settings = project / "recipes" / "_project.yaml"
    settings.write_text(settings.read_text() + "placeholders: error\n")
    assert main(["validate", "--root", str(project)]) == 1
    assert any("still a placeholder" in line for line in capsys.readouterr().err.splitlines())
    assert main(["plan", "--root", str(project)]) == 1
    assert "still a placeholder" in capsys.readouterr().err
    assert main(["validate", "--root", str(project), "--placeholders", "warn"]) == 0
    assert _lines(capsys.readouterr().err, "warning: ")


def test_plan_warns_too(project, capsys):
    assert main(["plan", "--root", str(project)]) == 0
    assert any(line.startswith(f"warning: {ACCOUNT}: job.role: still a placeholder: AWS's "
                               "example account id") for line in capsys.readouterr().err
               .splitlines())
