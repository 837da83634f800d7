"""The shape of the ``task_*`` hyperparameters: which plug-ins a recipe names (docs/tasks.md).

Each value is a string (SageMaker hyperparameters are strings):

``task_tools``    comma-separated tools: built-in names or ``package.module:object`` paths
``task_rewards``  comma-separated ``NAME[=WEIGHT]``: built-in reward names, ``triviaqa`` (the
                  seven built-ins with their ``reward_*`` weights) or paths; empty = ``triviaqa``
``task_parser``   one parser: empty (``tool_format``'s), a built-in name or a path
``task_records``  one record loader: a built-in name or a path

Standard library only (the renderer and the config schema import it). The built-in names here
are the ones :mod:`mtgrpo.task.builtin` implements; a test keeps the two lists equal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mtgrpo.errors import Problem, did_you_mean

BUILTIN_TOOLS = ("wiki_search",)
BUILTIN_REWARDS = ("tool_execution", "answer_in_result", "answer_contains", "exact_match",
                   "format", "xml_count", "f1")
REWARD_GROUPS = {"triviaqa": BUILTIN_REWARDS}
BUILTIN_PARSERS = ("xml", "qwen")
BUILTIN_RECORDS = ("triviaqa",)
CORPUS_TOOLS = ("wiki_search",)  # built-in tools that read the `corpus` channel

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = re.compile(rf"^(?P<module>{_IDENT}(?:\.{_IDENT})*):(?P<attr>{_IDENT})$")
PATH_HELP = "package.module:object"


@dataclass(frozen=True)
class Ref:
    """One named plug-in: a built-in name, or a ``module:attr`` path (``is_path``)."""

    text: str
    weight: float | None = None  # rewards only: None = the default weight

    @property
    def is_path(self) -> bool:
        return ":" in self.text

    @property
    def module(self) -> str:
        return self.text.partition(":")[0]

    @property
    def attr(self) -> str:
        return self.text.partition(":")[2]


KINDS = {
    "task_tools": ("tool", BUILTIN_TOOLS),
    "task_rewards": ("reward", BUILTIN_REWARDS + tuple(REWARD_GROUPS)),
    "task_parser": ("parser", BUILTIN_PARSERS),
    "task_records": ("record loader", BUILTIN_RECORDS),
}


def _ref(text: str, key: str, source: str, *, weighted: bool) -> tuple[Ref | None, list[Problem]]:
    kind, names = KINDS[key]
    allowed = f"built-in {kind}s {', '.join(names)}, or a {PATH_HELP} path"
    if weighted:
        allowed = f"NAME or NAME=WEIGHT, NAME one of {allowed[len('built-in '):]}"
    weight = None
    if weighted and "=" in text:
        text, _, raw = text.partition("=")
        text = text.strip()
        try:
            weight = float(raw.strip())
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight):
            return None, [Problem(source, key, f"invalid weight {raw.strip()!r} for {text!r}",
                                  "a finite number, e.g. exact_match=1.0")]
    if ":" in text:
        if not PATH.match(text):
            return None, [Problem(source, key, f"{text!r} is not a valid {PATH_HELP} path",
                                  allowed)]
    elif text not in names:
        return None, [Problem(source, key, f"unknown {kind} {text!r}"
                              + did_you_mean(text, names), allowed)]
    return Ref(text, weight), []


def parse_refs(key: str, value: str, source: str = "") -> tuple[list[Ref], list[Problem]]:
    """The plug-ins one ``task_*`` value names, and every problem with its shape."""
    if key not in KINDS:
        raise KeyError(key)
    text = value.strip()
    if not text:
        return [], []
    single = key in ("task_parser", "task_records")
    items = [text] if single else [t.strip() for t in text.split(",")]
    refs: list[Ref] = []
    problems: list[Problem] = []
    for item in items:
        if not item:
            problems.append(Problem(source, key, "empty entry in the comma-separated list",
                                    "names separated by single commas"))
            continue
        if single and "," in item:
            problems.append(Problem(source, key, "names one plug-in, got a list",
                                    f"one built-in name or {PATH_HELP} path"))
            continue
        ref, found = _ref(item, key, source, weighted=key == "task_rewards")
        problems += found
        if ref is not None:
            refs.append(ref)
    seen: set[str] = set()
    for ref in refs:
        members = REWARD_GROUPS.get(ref.text, (ref.text,)) if key == "task_rewards" else (
            ref.text,)
        if ref.text in REWARD_GROUPS and ref.weight is not None:
            problems.append(Problem(source, key, f"{ref.text!r} takes no weight (its rewards "
                                    "are weighted by their reward_* keys)",
                                    f"{ref.text}, or its rewards one by one with weights"))
        twice = sorted(set(members) & seen)
        if twice:
            problems.append(Problem(source, key, f"{', '.join(repr(t) for t in twice)} "
                                    "named twice", "each plug-in once"))
        seen.update(members)
    return refs, problems


def task_problems(values: dict[str, str], source: str = "", prefix: str = "") -> list[Problem]:
    """Shape problems of the ``task_*`` values (key paths under ``prefix``)."""
    problems = []
    for key in KINDS:
        if key not in values:
            continue
        _, found = parse_refs(key, values[key], source)
        for p in found:
            problems.append(Problem(p.file, f"{prefix}.{key}" if prefix else key, p.message,
                                    p.allowed))
    return problems


def uses_corpus(task_tools: str) -> bool:
    """Whether these tools need the ``corpus`` channel (a built-in search tool among them)."""
    refs, _ = parse_refs("task_tools", task_tools)
    return any(r.text in CORPUS_TOOLS for r in refs)
