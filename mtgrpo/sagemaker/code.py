"""The ``code`` channel: the user's task package, put on ``sys.path`` before plug-ins load.

Like the SageMaker Python SDK's ``source_dir``, the channel holds either the code itself (an S3
prefix copied as a directory) or one ``.tar.gz`` of it (unpacked once into the container's work
directory). Nothing is installed: under network isolation there is no package index, so the
task's dependencies must be in the image (docs/tasks.md: a derived image) or vendored in the
channel. The directory goes first on ``sys.path`` and on ``PYTHONPATH``, so the launcher's
check and every training process (started by the launcher) import the same code.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path

from mtgrpo.contract.channels import CODE
from mtgrpo.errors import Problem, UserError
from mtgrpo.safepath import extract_tar
from mtgrpo.sagemaker.contract import OptML


def code_dir(layout: OptML) -> Path | None:
    """The directory of the task code (unpacking a tarball once), or None without a channel."""
    chan = layout.channel_dir(CODE)
    entries = sorted(p for p in chan.iterdir() if not p.name.startswith(".")) \
        if chan.is_dir() else []
    if not entries:
        return None
    archives = [p for p in entries if p.is_file() and p.name.endswith((".tar.gz", ".tgz"))]
    if not archives:
        return chan
    if len(entries) > 1:
        names = ", ".join(p.name for p in entries[:5])
        raise UserError(Problem(str(chan), "", f"a code archive must be alone in the channel "
                                f"(found {names})", "one .tar.gz, or a directory of code"))
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


def activate_code(layout: OptML) -> Path | None:
    """Put the code channel first on ``sys.path`` and ``PYTHONPATH``; its directory or None."""
    directory = code_dir(layout)
    if directory is None:
        return None
    text = str(directory)
    if text not in sys.path:
        sys.path.insert(0, text)
    current = os.environ.get("PYTHONPATH", "")
    if text not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = text + (os.pathsep + current if current else "")
    return directory
