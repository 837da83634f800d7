"""Placeholders left in recipes: the example values the shipped recipes carry until a user
replaces them (AWS's documentation account ids and buckets, the all-zero image digest).

They are well formed, so every other check passes them; the first sign of one would be a failed
job. ``validate``, ``plan`` and ``render`` print one warning per placeholder (file and key); the
project setting ``placeholders: error`` (``recipes/_project.yaml``) or ``--placeholders error``
(for CI) makes them errors, and then nothing is written.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Iterable, Iterator

from mtgrpo.errors import Problem

MODES = ("warn", "error")
FIX = "your own value; docs/first-job.md, step 4"

# (pattern, what it is): AWS's documentation placeholders and the shipped all-zero digest.
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"@sha256:0{64}\b"), "the all-zero image digest"),
    (re.compile(r"(?<!\d)(111122223333|123456789012)(?!\d)"), "AWS's example account id"),
    (re.compile(r"amzn-s3-demo-[a-z0-9.-]*|doc-example-bucket", re.IGNORECASE),
     "AWS's example bucket"),
    (re.compile(r"\b(subnet|sg)-0123456789abcdef0\b"), "AWS's example VPC id"),
)


def _strings(value: Any, key: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            yield from _strings(value[k], f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, f"{key}[{i}]")


def _provenance_key(key: str) -> str:
    """``job.inputs.train`` for ``job.inputs.train[0]``: where() knows mapping keys."""
    return re.sub(r"\[\d+\]", "", key)


def find(recipe) -> list[Problem]:
    """One problem per (file, key) of ``recipe`` that still holds a placeholder."""
    out = []
    for key, text in _strings(recipe.data, ""):
        found = [what for pattern, what in PATTERNS if pattern.search(text)]
        if found:
            out.append(Problem(recipe.where(_provenance_key(key)), key,
                               f"still a placeholder: {', '.join(dict.fromkeys(found))}", FIX))
    return out


def find_all(recipes: Iterable) -> list[Problem]:
    """Every placeholder of every recipe, each (file, key) once: a base file that many recipes
    extend is reported once, not once per recipe."""
    seen: dict[tuple[str, str], Problem] = {}
    for recipe in recipes:
        for problem in find(recipe):
            seen.setdefault((problem.file, problem.key), problem)
    return sorted(seen.values())


def warn(problems: Iterable[Problem]) -> None:
    """The warning lines (stderr): they never change the exit code."""
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
