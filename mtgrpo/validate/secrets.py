"""Refuse secrets in recipes: rendered manifests live in Git and in the cluster, readable by many.

Two signals: a value that looks like an AWS access key id or secret access key (anywhere in the
recipe), and a key named like a password, token, secret or credential (in ``job.environment``
and ``trainer``). Messages never repeat the value.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterator

from mtgrpo.errors import Problem

# Access key ids: a 4-letter type prefix and 16 base32 characters (IAM's documented id prefixes).
_ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}"
                            r"(?![A-Z0-9])")
# Secret access keys: 40 characters of base64 alphabet, standing alone as a value or token.
_SECRET_KEY = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
# Words that make a key name a secret's name (matched per word: `max_tokens` is not `token`).
_SECRET_WORDS = {"password", "passwd", "pwd", "secret", "secrets", "token", "apikey",
                 "credential", "credentials", "passphrase", "privatekey", "accesskey",
                 "sessiontoken", "authtoken", "bearer"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("auth", "token"),
                 ("client", "secret"), ("secret", "key")}
ALLOWED = ("no secrets in recipes: read them at run time from AWS Secrets Manager or SSM "
           "Parameter Store through the job's IAM role")


@functools.lru_cache(maxsize=65536)  # renders repeat values (metric regexes, S3 prefixes)
def looks_like_secret_value(value: str) -> str:
    """What kind of secret ``value`` looks like ('' when none)."""
    if _ACCESS_KEY_ID.search(value):
        return "an AWS access key id"
    if value.startswith("s3://"):
        return ""  # S3 keys are '/'-joined words that can line up to 40 such characters
    for match in _SECRET_KEY.finditer(value):
        token = match.group(0)
        # Real secret keys mix cases and digits; paths and hex digests of that length do not.
        if (re.search(r"[A-Z]", token) and re.search(r"[a-z]", token)
                and re.search(r"[0-9]", token)):
            return "an AWS secret access key"
    return ""


def looks_like_secret_name(key: str) -> bool:
    """Whether a key is named like a password, token, secret or credential."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def check_secrets(recipe: dict, source: str) -> list[Problem]:
    """Problems for secret-looking values anywhere and secret-named keys in environment/trainer."""
    problems = []
    for path, value in _walk(recipe, ""):
        kind = looks_like_secret_value(value)
        if kind:
            problems.append(Problem(source, path, f"the value looks like {kind} (not shown)",
                                    ALLOWED))
    job = recipe["job"] if isinstance(recipe.get("job"), dict) else {}
    for section, mapping in (("job.environment", job.get("environment")),
                             ("trainer", recipe.get("trainer"))):
        if not isinstance(mapping, dict):
            continue
        for key in mapping:
            path = f"{section}.{key}"
            if looks_like_secret_name(str(key)) and not any(p.key == path for p in problems):
                problems.append(Problem(source, path, "a key named like a password, token or "
                                        "secret is refused (its value is not shown)", ALLOWED))
    return problems
