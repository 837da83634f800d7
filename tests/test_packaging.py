"""One copy of each template in git (``templates/``), and the installed package still has them.

``mtgrpo/render/templates`` is a symlink to ``../../templates``: a source checkout (editable
install, ``PYTHONPATH``) reads the top-level files through it, and setuptools follows it when it
builds a wheel, so the wheel holds real copies (docs/recipes.md, "Templates").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mtgrpo.render.templating import PACKAGED_TEMPLATES
from tests.renderkit import REPO, copy_project

CRDS = REPO / "mtgrpo" / "validate" / "crds"


def test_the_packaged_templates_are_the_top_level_ones():
    assert PACKAGED_TEMPLATES.is_symlink()
    assert os.readlink(PACKAGED_TEMPLATES) == "../../templates"
    assert PACKAGED_TEMPLATES.resolve() == (REPO / "templates").resolve()


def _templates() -> dict[str, bytes]:
    root = REPO / "templates"
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*.j2"))}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the source tree (the build writes egg-info and build/ beside
    its input), offline: no index, no build isolation."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "templates", src / "templates", ignore=ignore)
    shutil.copytree(REPO / "mtgrpo", src / "mtgrpo", symlinks=True, ignore=ignore)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                           "--no-build-isolation", "-w", str(base / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = (base / "dist").glob("mtgrpo-*.whl")
    return path


@pytest.mark.slow  # builds a wheel
def test_the_wheel_holds_the_templates_the_crds_and_the_demo_model(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        templates = {name: archive.read(f"mtgrpo/render/templates/{name}")
                     for name in _templates()}
        crds = {p.relative_to(CRDS).as_posix() for p in CRDS.rglob("*")
                if p.is_file() and p.suffix in (".yaml", ".json", ".md")}
        assert {f"mtgrpo/validate/crds/{name}" for name in crds} <= names
        warm = REPO / "mtgrpo" / "testing" / "warm_model"  # the local demo's model
        assert {f"mtgrpo/testing/warm_model/{p.name}" for p in warm.iterdir()} <= names
    assert templates == _templates() and len(templates) >= 6


@pytest.mark.slow  # builds a wheel, renders in a child interpreter
def test_an_installed_wheel_renders_from_its_own_templates(wheel, tmp_path):
    """A project without templates/ renders through the wheel's copies, outside the source tree,
    and gets the committed manifests byte for byte."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    project = copy_project(tmp_path / "project", rendered=False)
    shutil.rmtree(project / "templates")
    child = ("import sys, mtgrpo.render.templating as t; from mtgrpo.cli import main; "
             "print(t.PACKAGED_TEMPLATES); sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MTGRPO_CRD_DIR", None)
    done = subprocess.run([sys.executable, "-c", child, "render", "--root", str(project)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    packaged = Path(done.stdout.splitlines()[0])
    assert packaged == site / "mtgrpo" / "render" / "templates" and not packaged.is_symlink()
    rendered = {p.relative_to(project).as_posix(): p.read_bytes()
                for p in (project / "manifests").rglob("*.yaml")}
    committed = {p.relative_to(REPO).as_posix(): p.read_bytes()
                 for p in (REPO / "manifests").rglob("*.yaml")}
    assert rendered == committed
