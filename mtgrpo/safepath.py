"""Fetched names written to disk stay inside their destination.

An S3 key, a checkpoint file or an archive member is data from whoever can write the prefix or
the archive. Every place that turns such a name into a local path goes through :func:`safe_join`
(and archives through :func:`extract_tar`), which refuses, in one line naming the key:

- an empty name or an absolute one (``/etc/passwd``);
- ``..`` or ``.`` segments and empty segments (``a//b``: S3 keeps both slashes, a file system
  would merge two keys into one file);
- a NUL character;
- a path whose resolved location leaves the destination (a symlink already there);
- in archives, any member that is not a regular file or a directory (symlinks, hard links,
  devices, FIFOs): a link is how an archive writes outside its folder on a later member.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from mtgrpo.errors import Problem, UserError

ALLOWED = "a relative path of plain names (no '..', '.', empty segment or leading '/')"


def _shown(name: str) -> str:
    # A hostile key can be long or carry control characters: repr, bounded.
    text = repr(name)
    return text if len(text) <= 200 else text[:160] + "..." + text[-30:]


def check_relative(name: str, *, source: str, what: str = "key") -> list[str]:
    """The segments of ``name`` if it is a safe relative path, else a ``UserError``."""
    reason = ""
    if not name:
        reason = "is empty"
    elif "\x00" in name:
        reason = "contains a NUL character"
    elif name.startswith("/"):
        reason = "is absolute"
    else:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            reason = "has an empty, '.' or '..' segment"
    if reason:
        raise UserError(Problem(source, f"{what} {_shown(name)}",
                                f"{reason}: it would be written outside its folder", ALLOWED))
    return parts


def safe_join(dest: Path, name: str, *, source: str, what: str = "key") -> Path:
    """``dest / name`` when ``name`` is a safe relative path that resolves inside ``dest``."""
    parts = check_relative(name, source=source, what=what)
    dest = Path(dest)
    target = dest.joinpath(*parts)
    root = dest.resolve()
    if not target.resolve().is_relative_to(root):
        raise UserError(Problem(source, f"{what} {_shown(name)}",
                                f"resolves outside {str(dest)!r} (through a symlink)", ALLOWED))
    return target


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's name without the ``./`` prefixes ``tar -C dir .`` writes."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") if member.isdir() else name


def extract_tar(archive: Path, dest: Path, *, source: str | None = None) -> int:
    """Unpack ``archive`` into ``dest`` (which must exist) after checking every member; the
    number of files. Nothing is written when a member is refused."""
    source = source or str(archive)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        keep = []
        for member in members:
            name = _member_name(member)
            if member.isdir() and name in ("", "."):
                continue  # the archive's root directory itself
            if not (member.isfile() or member.isdir()):
                kind = ("a symlink" if member.issym() else "a hard link" if member.islnk()
                        else "a device or FIFO")
                raise UserError(Problem(source, f"member {_shown(member.name)}",
                                        f"is {kind}: it could point outside its folder",
                                        "regular files and directories"))
            safe_join(dest, name, source=source, what="member")
            member.name = name
            keep.append(member)
        # The "data" filter as a second guard (modes, owners, absolute names).
        tar.extractall(dest, members=keep, filter="data")
    return sum(1 for m in keep if m.isfile())
