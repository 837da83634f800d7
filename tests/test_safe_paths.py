"""Fetched names stay inside their folder: hostile S3 keys (the Kubeflow channels and
checkpoints, against moto's S3 server) and hostile archive members (the ``code`` channel, the
``model`` channel, ``mtgrpo artifacts --download``) are refused in one line naming the key,
and nothing is written outside the destination."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from mtgrpo.errors import UserError
from mtgrpo.kubeflow import s3 as s3sync
from mtgrpo.safepath import extract_tar, safe_join
from tests.moto_s3 import BUCKET, s3_server

HOSTILE_KEYS = [
    "../../../outside.py",          # climbs out
    "sub/../../outside.py",         # climbs out from a subfolder
    "/outside.py",                  # prefix//outside.py: an absolute path after the prefix
    "sub//file.py",                 # empty segment: two keys, one file
    "./file.py",                    # a '.' segment
    "sub/..",                       # ends in '..'
]


@pytest.fixture(scope="module")
def s3():
    import boto3

    with s3_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        yield client


def put(s3, key: str, body: bytes = b"x = 1\n") -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=key)["Contents"]]
    assert key in listed, listed  # the server kept the key as written, dots and all


def clear(s3) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("relative", HOSTILE_KEYS)
def test_a_channel_key_outside_its_folder_is_refused(s3, tmp_path, relative):
    clear(s3)
    put(s3, "in/train/good.jsonl")
    put(s3, f"in/train/{relative}")
    dest = tmp_path / "job" / "input" / "data" / "train"
    with pytest.raises(UserError) as err:
        s3sync.download_prefix(s3, f"s3://{BUCKET}/in/train", dest)
    (line,) = err.value.lines()
    assert line.startswith(f"s3://{BUCKET}/in/train: key {relative!r}: "), line
    assert files(tmp_path) == []  # refused before the first download, the good file too


def test_a_channel_of_plain_keys_downloads(s3, tmp_path):
    clear(s3)
    put(s3, "in/train/a.jsonl")
    put(s3, "in/train/sub/b..c.jsonl")  # dots inside a name are a name
    put(s3, "in/train-other/not-mine.jsonl")  # a sibling prefix is not under in/train
    assert s3sync.download_prefix(s3, f"s3://{BUCKET}/in/train", tmp_path / "d") == 2
    assert files(tmp_path / "d") == ["a.jsonl", "sub/b..c.jsonl"]


def test_a_symlink_already_in_the_folder_is_not_followed(s3, tmp_path):
    clear(s3)
    put(s3, "in/code/pkg/mod.py")
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", dest / "pkg")
    with pytest.raises(UserError, match="resolves outside"):
        s3sync.download_prefix(s3, f"s3://{BUCKET}/in/code", dest)
    assert files(tmp_path / "elsewhere") == []


@pytest.mark.parametrize("relative", HOSTILE_KEYS)
def test_a_checkpoint_key_outside_its_folder_is_refused(s3, tmp_path, relative):
    clear(s3)
    put(s3, "ckpt/job/checkpoint-5/model.safetensors")
    put(s3, f"ckpt/job/checkpoint-5/{relative}")
    with pytest.raises(UserError) as err:
        s3sync.download_checkpoint(s3, f"s3://{BUCKET}/ckpt/job", 5, tmp_path / "checkpoints")
    (line,) = err.value.lines()
    assert f": key {relative!r}: " in line, line
    assert files(tmp_path) == []


def test_a_checkpoint_downloads_into_its_folder(s3, tmp_path):
    clear(s3)
    put(s3, "ckpt/job/checkpoint-5/model.safetensors")
    put(s3, "ckpt/job/checkpoint-5/.mtgrpo/node-00000.json", b"{}")
    path = s3sync.download_checkpoint(s3, f"s3://{BUCKET}/ckpt/job", 5, tmp_path)
    assert files(path) == [".mtgrpo/node-00000.json", "model.safetensors"]


# -- archives ------------------------------------------------------------------------------------

def archive(path: Path, *members: tarfile.TarInfo | tuple[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return path


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


HOSTILE_MEMBERS = {
    "dotdot": ("../outside.py", "empty, '.' or '..' segment"),
    "absolute": ("/tmp/outside.py", "is absolute"),
    "empty segment": ("pkg//mod.py", "empty, '.' or '..' segment"),
    "symlink": (link("pkg/json", "/usr/lib/python3/json", tarfile.SYMTYPE), "is a symlink"),
    "inner symlink": (link("pkg/alias", "mod.py", tarfile.SYMTYPE), "is a symlink"),
    "hard link": (link("pkg/passwd", "/etc/passwd", tarfile.LNKTYPE), "is a hard link"),
    "device": (link("pkg/null", "", tarfile.CHRTYPE), "is a device or FIFO"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MEMBERS))
def test_a_hostile_archive_member_is_refused_before_anything_is_written(tmp_path, case):
    member, message = HOSTILE_MEMBERS[case]
    path = archive(tmp_path / "code.tar.gz", ("pkg/mod.py", b"x = 1\n"),
                   member if isinstance(member, tarfile.TarInfo) else (member, b"bad\n"))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UserError) as err:
        extract_tar(path, dest)
    (line,) = err.value.lines()
    assert line.startswith(f"{path}: member "), line
    assert message in line
    assert files(dest) == [] and not (tmp_path / "outside.py").exists()


def test_an_archive_made_by_tar_of_a_folder_unpacks(tmp_path):
    path = archive(tmp_path / "code.tar.gz", link(".", "", tarfile.DIRTYPE),
                   ("./pkg/__init__.py", b""), ("./pkg/mod.py", b"x = 1\n"))
    (tmp_path / "out").mkdir()
    assert extract_tar(path, tmp_path / "out") == 2
    assert files(tmp_path / "out") == ["pkg/__init__.py", "pkg/mod.py"]


def test_the_code_channel_refuses_a_hostile_archive(tmp_path):
    from mtgrpo.sagemaker.code import code_dir
    from mtgrpo.sagemaker.contract import OptML

    layout = OptML(tmp_path / "opt_ml")
    chan = layout.channel_dir("code")
    chan.mkdir(parents=True)
    archive(chan / "code.tar.gz", ("task/__init__.py", b""),
            link("task/sitecustomize.py", "../../../../etc/passwd", tarfile.SYMTYPE))
    with pytest.raises(UserError, match=r"member 'task/sitecustomize.py': is a symlink"):
        code_dir(layout)
    assert not (layout.work_dir / "code").exists()
    assert not list(layout.work_dir.glob("code*"))  # the partial folder is gone too


def test_safe_join_names_the_key_without_echoing_a_huge_one(tmp_path):
    with pytest.raises(UserError) as err:
        safe_join(tmp_path, "../" * 5000 + "x", source="s3://b/p")
    assert len(err.value.lines()[0]) < 600


# -- the image's user ----------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root")
def test_root_gives_the_job_dirs_to_the_image_user_and_drops_for_good():
    """As SageMaker starts it: root, /opt/ml owned by root. The entry point's first step
    leaves a process that cannot become root again and can write the model and checkpoints."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="mtgrpo-drop-", dir="/tmp"))  # traversable by 10001
    try:
        _drop_root_in_a_child(top)
    finally:
        shutil.rmtree(top)


def _drop_root_in_a_child(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "opt_ml"
    (root / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (root / "checkpoints" / "checkpoint-5" / "w.bin").write_bytes(b"x")
    (root / "input" / "data" / "train").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    code = ("import os; from mtgrpo.sagemaker.privileges import drop_root; "
            f"from pathlib import Path; print(drop_root(Path({str(root)!r}))); "
            f"open({str(root / 'model' / 'config.json')!r}, 'w').write('{{}}'); "
            f"open({str(root / 'checkpoints' / 'checkpoint-5' / 'w.bin')!r}, 'ab').write(b'y'); "
            "print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())\n"
            "try:\n    os.setuid(0)\nexcept PermissionError:\n    print('no way back')\n"
            "try:\n    open('/etc/mtgrpo-test-root-only', 'w')\n"
            "except PermissionError:\n    print('root files closed')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "MTGRPO_RUN_AS": "10001:10001"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["(10001, 10001)", "10001 10001 10001 []",
                                        "no way back", "root files closed"]
    assert (root / "model" / "config.json").stat().st_uid == 10001
    assert not Path("/etc/mtgrpo-test-root-only").exists()


def test_no_user_named_or_not_root_changes_nothing(tmp_path):
    from mtgrpo.sagemaker.contract import OptML
    from mtgrpo.sagemaker.privileges import BadUser, drop_root, writable_dirs

    assert drop_root(tmp_path, environ={}) is None
    assert not (tmp_path / "model").exists()
    if os.geteuid() == 0:
        with pytest.raises(BadUser, match="is not a non-root user"):
            drop_root(tmp_path, environ={"MTGRPO_RUN_AS": "0:0"})
    # the same checkpoint directory the job uses, with or without SageMaker's LocalPath
    layout = OptML(tmp_path)
    assert writable_dirs(tmp_path)[2] == layout.checkpoint_dir
    layout.config_dir.mkdir(parents=True)
    layout.checkpoint_config_file.write_text('{"LocalPath": "/opt/ml/ckpt"}')
    assert writable_dirs(tmp_path)[2] == layout.checkpoint_dir == tmp_path / "ckpt"
