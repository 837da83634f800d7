"""The trainer image: Dockerfile entry point, the GPU lock file, the build/push script.

Docker has no engine on our machines, so the image itself is not built here. The lock's
resolution against PyPI needs network: it runs when MTGRPO_NETWORK_TESTS=1 (CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mtgrpo.render.project import DIGEST

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "docker" / "requirements-gpu.lock"
SCRIPT = REPO / "docker" / "build_and_push.sh"
PLATFORMS = [f"manylinux_2_{v}_x86_64" for v in range(39, 16, -1)] + [
    "manylinux2014_x86_64", "linux_x86_64"]
SDISTS = {"deepspeed"}  # no wheels on PyPI: installed last in the Dockerfile


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions (keyword, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), line
        Version(version)  # a plain version, nothing looser
        assert canonicalize_name(name) not in pins, f"{name} pinned twice"
        pins[canonicalize_name(name)] = version
    return pins


def test_entrypoint_is_the_sagemaker_module():
    steps = instructions((REPO / "Dockerfile").read_text())
    entrypoints = [args for kw, args in steps if kw == "ENTRYPOINT"]
    # Exec form (a JSON array): SageMaker's `train` argument is appended to it unchanged.
    assert json.loads(entrypoints[-1]) == ["python", "-m", "mtgrpo.sagemaker"]
    assert not [args for kw, args in steps if kw == "CMD"]
    out = subprocess.run([sys.executable, "-m", "mtgrpo.sagemaker", "serve"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "python -m mtgrpo.sagemaker train" in out.stderr


def test_image_environment_runs_offline():
    """Network isolation is the recipes' default: the image must not try the hub, report
    usage or send telemetry (huggingface_hub, transformers, datasets, vLLM, W&B)."""
    import shlex

    env = {}
    for keyword, args in instructions((REPO / "Dockerfile").read_text()):
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args) if "=" in item)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                 "HF_HUB_DISABLE_TELEMETRY", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        assert env.get(name) == "1", name
    assert env.get("WANDB_MODE") == "disabled"


def test_update_lock_help_leaves_the_lock_alone():
    before = LOCK.read_bytes()
    out = subprocess.run([sys.executable, str(REPO / "docker" / "update_lock.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage:" in out.stdout
    assert LOCK.read_bytes() == before


def test_dockerfile_copies_what_dockerignore_lets_through():
    steps = instructions((REPO / "Dockerfile").read_text())
    copied = [args.split()[:-1] for kw, args in steps if kw == "COPY"]
    sources = [s for group in copied for s in group]
    assert sources == ["docker/requirements-gpu.lock", "pyproject.toml", "README.md", "templates",
                       "mtgrpo"]
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    assert sorted(sources) == sorted(allowed)
    assert all((REPO / s).exists() for s in sources)
    assert any(kw == "FROM" for kw, _ in steps)


def test_lock_pins_the_trainer_stack_compatibly():
    pins = lock()
    for name in ("torch", "vllm", "trl", "transformers", "accelerate", "deepspeed"):
        assert name in pins, f"{name} missing from the lock"
    # TRL's own vllm extra says which vLLM it supports (installed trl metadata).
    from importlib.metadata import requires, version

    assert pins["trl"] == version("trl")
    vllm_spec = next(Requirement(r) for r in requires("trl")
                     if r.startswith("vllm") and "extra" in r)
    assert Version(pins["vllm"]) in vllm_spec.specifier, (pins["vllm"], str(vllm_spec))


def test_lock_matches_its_top_level_pins():
    pins = lock()
    for line in (REPO / "docker" / "requirements-gpu.in").read_text().splitlines():
        text = line.split("#")[0].strip()
        if text:
            req = Requirement(text)
            assert Version(pins[canonicalize_name(req.name)]) in req.specifier, (
                f"{text} in requirements-gpu.in but the lock has "
                f"{pins.get(canonicalize_name(req.name))}: run python docker/update_lock.py")


def test_lock_satisfies_the_package_and_its_trainer_extra():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = lock()
    needed = project["dependencies"] + project["optional-dependencies"]["trainer"]
    for text in needed:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not in the lock"
        assert Version(pins[name]) in req.specifier, f"lock {name}=={pins[name]} vs {text}"


def test_build_script_dry_run_prints_commands_and_a_digest_uri(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--account", "111122223333",
                          "--region", "eu-west-1", "--tag", "t1", "--build-arg",
                          "FLASH_ATTN=2.8.3"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    image = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/mtgrpo-trainer"
    assert any(line.startswith("aws ecr get-login-password --region eu-west-1") for line in lines)
    assert (f"docker build --platform linux/amd64 --build-arg FLASH_ATTN=2.8.3 -f Dockerfile "
            f"-t {image}:t1 .") in [line.strip() for line in lines]
    assert f"docker push {image}:t1" in [line.strip() for line in lines]
    assert lines[-1].startswith(f"image_uri: {image}@sha256:")
    # What the real run prints has the form the renderer's require_image_digest rule accepts.
    printed = lines[-1].removeprefix("image_uri: ").split("@")[0] + "@sha256:" + "ab" * 32
    assert DIGEST.search(printed)
    bad = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--nope"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument --nope" in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MTGRPO_NETWORK_TESTS") != "1",
                    reason="resolves the lock against PyPI: set MTGRPO_NETWORK_TESTS=1")
def test_lock_resolves_on_pypi_as_a_closed_set(tmp_path):
    """pip resolves the lock's wheels for CPython 3.12 / manylinux x86_64 to exactly the lock
    (nothing missing, nothing conflicting), and DeepSpeed's sdist needs only locked packages."""
    pins = lock()
    wheels = tmp_path / "wheels.lock"
    wheels.write_text("".join(f"{n}=={v}\n" for n, v in pins.items() if n not in SDISTS))
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--quiet",
           "--ignore-installed", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--target", str(tmp_path / "t"), "--report", str(report),
           "-r", str(wheels)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    assert resolved == {n: v for n, v in pins.items() if n not in SDISTS}
    for name in SDISTS:
        dest = tmp_path / name
        got = subprocess.run([sys.executable, "-m", "pip", "--isolated", "download", "--no-deps",
                              "--no-binary", ":all:", "-d", str(dest), f"{name}=={pins[name]}"],
                             capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-2000:]
        (sdist,) = dest.glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers()
                          if m.name.endswith("requirements/requirements.txt"))
            reqs = tar.extractfile(member).read().decode().splitlines()
        for text in reqs:
            if text.strip() and not text.startswith("#"):
                req = Requirement(text)
                assert Version(pins[canonicalize_name(req.name)]) in req.specifier, text
