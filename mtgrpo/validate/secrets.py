"""Refuse secrets in recipes: rendered manifests live in Git and in the cluster, readable by many.

Two signals, over every string a recipe renders (``trainer``, ``job`` with its environment and
tags, ``tuning``, the backend sections) and every rendered resource:

- a value shaped like a credential: one of :data:`SHAPES` (docs/security.md lists them), found
  anywhere inside the string;
- a key named like a password, token, secret or credential (any mapping key, an environment
  variable's name, a tag's key).

Messages name the key and the kind of secret and show at most the first characters of the
value (a prefix such as ``hf_`` that says which credential to revoke), never the value itself.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterator

from mtgrpo.errors import Problem
from mtgrpo.secret_shapes import SHAPES, find_shape  # noqa: F401 - SHAPES re-exported


# Words that make a key name a secret's name (matched per word: `max_tokens` is not `token`).
_SECRET_WORDS = {"password", "passwd", "pwd", "secret", "secrets", "token", "apikey",
                 "credential", "credentials", "passphrase", "privatekey", "accesskey",
                 "sessiontoken", "authtoken", "bearer", "pat", "cookie", "dsn"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("auth", "token"),
                 ("client", "secret"), ("secret", "key"), ("signing", "key")}
ALLOWED = ("no secrets in recipes: read them at run time from AWS Secrets Manager or SSM "
           "Parameter Store through the job's IAM role")


@functools.lru_cache(maxsize=65536)  # renders repeat values (metric regexes, S3 prefixes)
def looks_like_secret_value(value: str) -> str:
    """What kind of secret ``value`` looks like ('' when none)."""
    found = find_shape(value)
    return found[0].kind if found else ""


def looks_like_secret_name(key: str) -> bool:
    """Whether a key is named like a password, token, secret or credential."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


def value_problem(source: str, path: str, kind: str) -> Problem:
    return Problem(source, path, f"the value looks like {kind} (not shown)", ALLOWED)


def name_problem(source: str, path: str) -> Problem:
    return Problem(source, path, "a key named like a password, token or secret is refused "
                                 "(its value is not shown)", ALLOWED)


def _tag_key(item: Any) -> str | None:
    """The key of an SDK-style tag ``{Key: .., Value: ..}`` (a name, like a mapping key)."""
    if isinstance(item, dict) and set(item) <= {"Key", "Value", "key", "value"}:
        key = item.get("Key", item.get("key"))
        return key if isinstance(key, str) else None
    return None


def walk(value: Any, path: str) -> Iterator[tuple[str, str, str]]:
    """(``"value"`` or ``"name"``, path, text) for every string and every key name."""
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            yield "name", sub, str(k)
            yield from walk(v, sub)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            tag = _tag_key(v)
            if tag is not None:
                yield "name", f"{path}[{i}].Key", tag
            if isinstance(v, dict) and v.get("name") and isinstance(v.get("value"), str):
                yield "name", f"{path}[{i}].name", str(v["name"])  # a k8s env entry
            yield from walk(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield "value", path, value


def find_secrets(value: Any, source: str, path: str = "") -> list[Problem]:
    """Problems for every secret-shaped string and secret-named key under ``value``; one per
    key (a secret-named key whose value is also secret-shaped is named once)."""
    problems: dict[str, Problem] = {}
    for signal, where, text in walk(value, path):
        if signal == "value":
            kind = looks_like_secret_value(text)
            if kind:
                problems.setdefault(where, value_problem(source, where, kind))
        elif looks_like_secret_name(text):
            # The name's own path: a secret-named tag's Key is reported at the tag.
            at = where[:-len(".Key")] if where.endswith("].Key") else \
                where[:-len(".name")] if where.endswith("].name") else where
            problems.setdefault(at, name_problem(source, at))
    return list(problems.values())


def check_secrets(recipe: dict, source: str) -> list[Problem]:
    """Problems for secret-looking values and secret-named keys anywhere in the recipe."""
    return find_secrets(recipe, source)
