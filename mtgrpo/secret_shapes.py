"""The shapes of credentials, for refusing them in recipes and keeping them out of messages.

Each :class:`Shape` is one kind of credential found by its form alone (docs/security.md lists
them). :func:`redact` replaces every match in a text by its first characters, which is what
every user-facing error line does (:class:`mtgrpo.errors.Problem`): a message that repeats a bad
value never repeats a secret.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable


def _mixed(token: str) -> bool:
    """Random keys mix upper case, lower case and digits; words, paths and hex digests don't."""
    return bool(re.search(r"[A-Z]", token) and re.search(r"[a-z]", token)
                and re.search(r"[0-9]", token))


def _letters_and_digits(token: str) -> bool:
    return bool(re.search(r"[A-Za-z]", token) and re.search(r"[0-9]", token))


def _not_a_reference(token: str) -> bool:
    """``https://user:${PASSWORD}@host``: the password is read at run time, not written here."""
    password = token.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    return not re.fullmatch(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\$\([A-Za-z_][A-Za-z0-9_]*\)",
                            password)


@dataclass(frozen=True)
class Shape:
    kind: str        # what the message says the value looks like
    example: str     # the shape, as docs/security.md lists it
    pattern: re.Pattern
    keep: Callable[[str], bool] = lambda token: True  # a second look at the match
    s3_too: bool = True  # also inside s3:// URIs (whose keys can line up as a random string)


_B = r"(?<![A-Za-z0-9_])"  # a token starts at a word boundary (not inside a longer name)
SHAPES: tuple[Shape, ...] = (
    Shape("an AWS access key id", "AKIA/ASIA/ABIA/ACCA + 16 base32 characters",
          re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}(?![A-Z0-9])")),
    Shape("an AWS secret access key", "40 characters of base64 mixing cases and digits",
          re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"), _mixed,
          s3_too=False),
    Shape("a Hugging Face token", "hf_ + 30 or more letters and digits",
          re.compile(_B + r"hf_[A-Za-z0-9]{30,}"), _letters_and_digits),
    Shape("a GitHub token", "ghp_/gho_/ghu_/ghs_/ghr_ + 36 or more letters and digits",
          re.compile(_B + r"gh[pousr]_[A-Za-z0-9]{36,}")),
    Shape("a GitHub fine-grained token", "github_pat_ + 22 or more letters, digits, '_'",
          re.compile(_B + r"github_pat_[A-Za-z0-9_]{22,}")),
    Shape("an OpenAI or Anthropic API key", "sk-proj-/sk-ant-/sk-svcacct-/sk-admin- + 20 or "
          "more characters, or sk- + 20 or more letters and digits",
          re.compile(_B + r"sk-(?:(?:proj|ant|svcacct|admin)-[A-Za-z0-9_-]{20,}"
                     r"|[A-Za-z0-9]{20,})"), _letters_and_digits),
    Shape("a Slack token", "xoxb-/xoxp-/xoxa-/xoxo-/xoxs-/xoxr- + 10 or more characters",
          re.compile(_B + r"xox[abposr]-[A-Za-z0-9-]{10,}")),
    Shape("a GitLab token", "glpat- + 20 or more characters",
          re.compile(_B + r"glpat-[A-Za-z0-9_-]{20,}")),
    Shape("a Google API key", "AIza + 35 characters",
          re.compile(_B + r"AIza[0-9A-Za-z_-]{35}")),
    Shape("a Stripe secret key", "sk_live_/rk_live_ + 20 or more characters",
          re.compile(_B + r"[sr]k_live_[A-Za-z0-9]{20,}")),
    Shape("an npm token", "npm_ + 36 letters and digits",
          re.compile(_B + r"npm_[A-Za-z0-9]{36}")),
    Shape("a JSON Web Token", "eyJ<header>.eyJ<payload>.<signature> (base64url)",
          re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
    Shape("a private key (PEM block)", "-----BEGIN ... PRIVATE KEY-----",
          re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"
                     # the body too (a repr'd value shows its newlines as \\n)
                     r"[A-Za-z0-9+/=\s\\:,-]*?(?:-----END[A-Z0-9 ]*-----|$|(?=['\"]))")),
    Shape("a URL with a password", "scheme://user:password@host (a ${VAR} password is "
          "allowed)", re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
          _not_a_reference),
    Shape("an HTTP bearer token", "Bearer + 20 or more token characters",
          re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*")),
)



def find_shape(value: str) -> tuple["Shape", re.Match] | None:
    s3 = value.startswith("s3://")
    for shape in SHAPES:
        if s3 and not shape.s3_too:
            continue
        for match in shape.pattern.finditer(value):
            if shape.keep(match.group(0)):
                return shape, match
    return None


@functools.lru_cache(maxsize=4096)
def redact(text: str) -> str:
    """``text`` with every credential-shaped part cut to its first 4 characters."""
    if len(text) < 20:
        return text
    for shape in SHAPES:
        text = shape.pattern.sub(
            lambda m, keep=shape.keep: m.group(0)[:4] + "...[redacted]" if keep(m.group(0))
            else m.group(0), text)
    return text
