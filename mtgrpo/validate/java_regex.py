"""Read the service model's Java-style patterns in Python.

SageMaker checks ``pattern`` constraints with Java's ``String.matches`` (the whole string must
match). Python's ``re`` cannot read ``\\p{L}``-style classes, so patterns are compiled with the
``regex`` package, which can, after rewriting the two Java-only spellings it does not share:
``\\p{Alnum}`` (ASCII in Java, Unicode in ``regex``) and a UTF-16 surrogate-pair range that
Java uses for "any supplementary character".
"""

from __future__ import annotations

import functools

import regex

_REWRITES = (
    # Java's POSIX classes are ASCII-only unless UNICODE_CHARACTER_CLASS is set.
    (r"\p{Alnum}", "a-zA-Z0-9"),
    (r"\p{Alpha}", "a-zA-Z"),
    (r"\p{Digit}", "0-9"),
    # U+10000..U+10FFFF written as UTF-16 surrogates inside a character class.
    (r"\uD800\uDC00-\uDBFF\uDFFF", r"\U00010000-\U0010FFFF"),
)


def translate(pattern: str) -> str:
    """The pattern rewritten for the ``regex`` package (``\\p{Alnum}`` outside a class gets one)."""
    out = pattern
    for java, python in _REWRITES:
        if java.startswith(r"\p{"):
            out = _replace_posix(out, java, python)
        else:
            out = out.replace(java, python)
    return out


def _replace_posix(pattern: str, java: str, python: str) -> str:
    pieces, i, in_class = [], 0, False
    while i < len(pattern):
        if pattern.startswith(java, i):
            pieces.append(python if in_class else f"[{python}]")
            i += len(java)
            continue
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            pieces.append(pattern[i:i + 2])
            i += 2
            continue
        if char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        pieces.append(char)
        i += 1
    return "".join(pieces)


@functools.lru_cache(maxsize=None)
def compile_java(pattern: str) -> "regex.Pattern[str]":
    """A compiled pattern; use ``fullmatch`` as Java's ``String.matches`` does."""
    return regex.compile(translate(pattern))


@functools.lru_cache(maxsize=65536)  # manifests repeat values (metric regexes, S3 prefixes)
def matches(pattern: str, value: str) -> bool:
    """Whether the whole of ``value`` matches the Java ``pattern``."""
    return compile_java(pattern).fullmatch(value) is not None
