"""Read the service model's Java-style patterns in Python.

SageMaker checks ``pattern`` constraints with Java's ``String.matches``: the whole string must
match. Python's ``re`` cannot read ``\\p{L}``-style classes, so patterns are compiled with the
``regex`` package, which can, after rewriting what Java spells or means differently:

- ``\\w``, ``\\d``, ``\\s`` and the POSIX classes ``\\p{Alnum}``, ``\\p{Alpha}``, ``\\p{Digit}``
  are ASCII-only in Java but Unicode in ``regex`` (whose ASCII flag would also make ``\\p{L}``
  ASCII), so they are spelled out as ASCII ranges; their negations likewise outside a class,
  and ``[\\S\\s]`` (any character) becomes ``(?s:.)``. A negation inside a larger class is left
  as it is: no pattern of the two operations we check has one.
- A UTF-16 surrogate-pair range, Java's way to say "any supplementary character", becomes
  ``\\U00010000-\\U0010FFFF``.
- ``.`` outside a class matches no Java line terminator (``\\n``, ``\\r``, U+0085, U+2028,
  U+2029), where Python's excludes only ``\\n``: so a value with a carriage return or a
  Unicode line separator fails ``.*`` as it does on SageMaker's side.
"""

from __future__ import annotations

import functools

import regex

_SPACE = r" \t\n\x0B\f\r"
# escape -> (ASCII members as class contents, negated?)
_CLASSES = {
    r"\w": ("a-zA-Z0-9_", False), r"\d": ("0-9", False), r"\s": (_SPACE, False),
    r"\W": ("a-zA-Z0-9_", True), r"\D": ("0-9", True), r"\S": (_SPACE, True),
    r"\p{Alnum}": ("a-zA-Z0-9", False), r"\p{Alpha}": ("a-zA-Z", False),
    r"\p{Digit}": ("0-9", False),
}
_DOT = "[^\\n\\r\\u0085\\u2028\\u2029]"  # Java's `.` without DOTALL
_WHOLE = {r"[\S\s]": "(?s:.)", r"[\s\S]": "(?s:.)", r"[\S]": rf"[^{_SPACE}]",
          r"\uD800\uDC00-\uDBFF\uDFFF": r"\U00010000-\U0010FFFF"}


def translate(pattern: str) -> str:
    """The Java pattern rewritten for the ``regex`` package, with the same meaning."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        whole = next((w for w in _WHOLE if pattern.startswith(w, i)), None)
        if whole is not None:
            out.append(_WHOLE[whole])
            i += len(whole)
            continue
        escape = next((e for e in _CLASSES if pattern.startswith(e, i)), None)
        if escape is not None:
            members, negated = _CLASSES[escape]
            if not in_class:
                out.append(f"[{'^' if negated else ''}{members}]")
            else:
                out.append(escape if negated else members)
            i += len(escape)
            continue
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if char == "." and not in_class:
            out.append(_DOT)
            i += 1
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=None)
def compile_java(pattern: str) -> "regex.Pattern[str]":
    """A compiled pattern; use ``fullmatch`` as Java's ``String.matches`` does."""
    return regex.compile(translate(pattern))


@functools.lru_cache(maxsize=65536)  # manifests repeat values (metric regexes, S3 prefixes)
def matches(pattern: str, value: str) -> bool:
    """Whether the whole of ``value`` matches the Java ``pattern``."""
    return compile_java(pattern).fullmatch(value) is not None
