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
PIPELINES_LOCK = REPO / "docker" / "requirements-pipelines.lock"
SCRIPT = REPO / "docker" / "build_and_push.sh"
PLATFORMS = [f"manylinux_2_{v}_x86_64" for v in range(39, 16, -1)] + [
    "manylinux2014_x86_64", "linux_x86_64"]
SDISTS = {"deepspeed", "kfp-server-api"}  # no wheels on PyPI: installed last in the Dockerfile
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) --hash=sha256:([0-9a-f]{64})$")


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


def lock(path: Path = LOCK) -> dict[str, str]:
    """name -> version; every line one exact pin with the sha256 --require-hashes checks."""
    pins = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _PIN.match(line)
        assert match, f"{path.name}: {line!r} is not `name==version --hash=sha256:<64 hex>`"
        name, version = match.group(1), match.group(2)
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


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions, by its `AS` name (the unnamed last one: "final")."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in instructions(text):
        if keyword == "FROM":
            parts = args.split()
            current = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else "final"
            out[current] = []
        if current is not None:
            out[current].append((keyword, args))
    return out


def test_dockerfile_copies_what_dockerignore_lets_through():
    steps = instructions((REPO / "Dockerfile").read_text())
    copied = [args.split()[:-1] for kw, args in steps
              if kw == "COPY" and not args.startswith("--from=")]
    sources = sorted({s for group in copied for s in group})
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    assert sources == sorted(allowed)
    assert all((REPO / s).exists() for s in sources)
    assert any(kw == "FROM" for kw, _ in steps)


def test_base_is_pinned_by_digest_and_the_build_refuses_a_tag():
    text = (REPO / "Dockerfile").read_text()
    steps = instructions(text)
    assert ("ARG", "BASE_IMAGE") in steps  # no default: no build from a moving tag
    assert all(args.split()[0] == "${BASE_IMAGE}" for kw, args in steps if kw == "FROM")
    pinned = [line for line in (REPO / "docker" / "base-image.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")][-1]
    assert pinned.startswith("nvidia/cuda:13.0.1-devel-ubuntu24.04")
    if not re.search(r"@sha256:[0-9a-f]{64}$", pinned):  # not pinned yet: the build refuses
        out = subprocess.run(["bash", str(SCRIPT), "--account", "1", "--region", "eu-west-1",
                              "--tag", "t"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "is not pinned by digest" in out.stderr


def test_stages_keep_build_tools_out_and_run_as_a_user():
    by_stage = stages((REPO / "Dockerfile").read_text())
    assert list(by_stage) == ["build", "pipelines", "trainer"]  # the trainer is the default
    for name in ("pipelines", "trainer"):
        runs = " ".join(args for kw, args in by_stage[name] if kw == "RUN")
        for tool in ("build-essential", "git", "make", "g++"):
            assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", runs), (name, tool)
        assert "pip uninstall -y pip" in runs or name == "trainer"
    build_runs = " ".join(args for kw, args in by_stage["build"] if kw == "RUN")
    assert "pip uninstall -y pip" in build_runs  # the venv the trainer copies has no pip
    # every lock installed with --require-hashes
    for name in ("build", "pipelines"):
        for _, args in by_stage[name]:
            if re.search(r"pip install .*-r /tmp/(wheels|sdists)\.lock", args):
                assert all("--require-hashes" in part for part in
                           re.findall(r"pip install [^&]*-r /tmp/\w+\.lock", args)), args
    users = {name: [args for kw, args in steps if kw == "USER"]
             for name, steps in by_stage.items()}
    assert users["pipelines"] == ["10001"]
    import shlex

    env = {}
    for keyword, args in by_stage["trainer"]:
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args) if "=" in item)
    # SageMaker starts it as root: the entry point drops to this user (privileges.py)
    assert env["MTGRPO_RUN_AS"] == "10001:10001" and env["HOME"] == "/home/mtgrpo"
    from mtgrpo.validate.pod_security import HOME_DIR, USER_ID

    assert env["MTGRPO_RUN_AS"] == f"{USER_ID}:{USER_ID}" and env["HOME"] == HOME_DIR
    assert any(kw == "COPY" and args.startswith("--from=build /opt/venv")
               for kw, args in by_stage["trainer"])


def test_kfp_is_in_the_pipelines_lock_not_the_trainers():
    pipelines = lock(PIPELINES_LOCK)
    assert pipelines["kfp"] == "2.17.3" and "kfp-server-api" in pipelines
    assert "kfp" not in lock() and "torch" not in pipelines


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
    build = next(line.strip() for line in lines if line.startswith("docker build"))
    # the base from docker/base-image.txt, always by digest
    assert re.fullmatch(r"docker build --platform linux/amd64 --build-arg "
                        r"BASE_IMAGE=nvidia/cuda:13\.0\.1-devel-ubuntu24\.04@sha256:\S+ "
                        rf"--build-arg FLASH_ATTN=2\.8\.3 -f Dockerfile -t {re.escape(image)}:t1 \.",
                        build), build
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
    for name in sorted(SDISTS & set(pins)):
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
