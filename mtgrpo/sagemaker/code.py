"""The ``code`` channel: the user's task package, put on ``sys.path`` before plug-ins load.

Like the SageMaker Python SDK's ``source_dir``, the channel holds either the code itself (an S3
prefix copied as a directory) or one ``.tar.gz`` of it (unpacked once into the container's work
directory, every member checked by :func:`mtgrpo.safepath.extract_tar`). Nothing is installed:
under network isolation there is no package index, so the task's dependencies must be in the
image (docs/tasks.md: a derived image) or vendored in the channel.

The code is trusted: it runs with the job's role. Two guards keep it what the recipe meant:

- ``MTGRPO_CODE_SHA256`` (set in ``job.environment``): the archive's sha256, checked before it
  is unpacked, so a changed object under a mutable S3 prefix fails the job instead of running;
- a top-level name that another module already has (the standard library, ``mtgrpo``, an
  installed package such as ``torch``) is refused: ``PYTHONPATH`` comes before the standard
  library and site-packages in every process the launcher starts, so ``json/`` in the archive
  would replace the real ``json`` there. The folder is appended to ``sys.path`` in this process.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

from mtgrpo.contract.channels import CODE
from mtgrpo.errors import Problem, UserError
from mtgrpo.safepath import extract_tar
from mtgrpo.sagemaker.contract import OptML

SHA256_ENV = "MTGRPO_CODE_SHA256"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def expected_sha256(environ=None) -> str | None:
    """The archive digest the recipe pinned (lower-cased), None when unset."""
    value = (os.environ if environ is None else environ).get(SHA256_ENV, "").strip().lower()
    if not value:
        return None
    if not _SHA256.match(value):
        raise UserError(Problem("environment", SHA256_ENV, "is not a sha256 digest",
                                "64 hexadecimal characters (sha256sum sourcedir.tar.gz)"))
    return value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_dir(layout: OptML) -> Path | None:
    """The directory of the task code (unpacking a tarball once), or None without a channel."""
    chan = layout.channel_dir(CODE)
    entries = sorted(p for p in chan.iterdir() if not p.name.startswith(".")) \
        if chan.is_dir() else []
    pinned = expected_sha256()
    if not entries:
        return None
    archives = [p for p in entries if p.is_file() and p.name.endswith((".tar.gz", ".tgz"))]
    if not archives:
        if pinned:
            raise UserError(Problem(str(chan), SHA256_ENV, "is set but the channel holds a "
                                    "directory, not one archive", "one .tar.gz whose sha256 "
                                    f"is {SHA256_ENV}, or unset it"))
        return chan
    if len(entries) > 1:
        names = ", ".join(p.name for p in entries[:5])
        raise UserError(Problem(str(chan), "", f"a code archive must be alone in the channel "
                                f"(found {names})", "one .tar.gz, or a directory of code"))
    if pinned:
        actual = file_sha256(archives[0])
        if actual != pinned:
            raise UserError(Problem(str(archives[0]), SHA256_ENV, f"the archive's sha256 is "
                                    f"{actual}, not the pinned {pinned}",
                                    "the archive the recipe pinned (or update the pin)"))
    target = layout.work_dir / "code"
    if not target.is_dir():
        # Unpacked beside the target and renamed: no process sees half the code.
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            extract_tar(archives[0], partial)
        except UserError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        except (tarfile.TarError, OSError) as err:
            shutil.rmtree(partial, ignore_errors=True)
            raise UserError(Problem(str(archives[0]), "", f"cannot unpack the code archive "
                                    f"({type(err).__name__}: {err})",
                                    "a .tar.gz of the task's package")) from None
        os.replace(partial, target)
    return target


def shadowing(directory: Path) -> list[str]:
    """Top-level modules of ``directory`` that the image already has (found on the rest of
    ``sys.path``, or built in)."""
    others = [p for p in sys.path if os.path.abspath(p or ".") != str(directory)]
    found = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            name = entry.name
        elif entry.suffix in (".py", ".so", ".pyc") or entry.name.endswith(".pth"):
            name = entry.name.split(".", 1)[0]
        else:
            continue
        if not name.isidentifier():
            continue
        if name in sys.builtin_module_names or name in sys.stdlib_module_names or \
                name == "mtgrpo" or importlib.machinery.PathFinder.find_spec(name, others):
            found.append(entry.name)
    return found


def activate_code(layout: OptML) -> Path | None:
    """Put the code channel on ``sys.path`` (last) and ``PYTHONPATH``; its directory or None.
    Names that would shadow a module the image has are refused."""
    directory = code_dir(layout)
    if directory is None:
        return None
    clash = shadowing(directory)
    if clash:
        raise UserError(Problem(str(directory), "", f"top-level names {', '.join(clash[:5])} "
                                "would replace modules of the standard library, mtgrpo or the "
                                "image's packages", "a package with a name of its own "
                                "(mytask/, not json/ or torch/)"))
    text = str(directory)
    if text not in sys.path:
        sys.path.append(text)
    current = os.environ.get("PYTHONPATH", "")
    if text not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = text + (os.pathsep + current if current else "")
    return directory
