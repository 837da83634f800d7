"""User-facing errors: one line each, naming the file, the key, what is wrong and what is allowed.

Every mistake a user can make (a bad recipe, a bad hyperparameter, a missing channel) is raised
as a ``UserError`` (or collected as ``Problem``s and raised together), and the CLI's single error
boundary prints them one per line without a traceback.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


MAX_LINE = 2000  # characters of one problem line


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with one value: rendered as ``file: key: message (allowed: ...)``."""

    file: str
    key: str
    message: str
    allowed: str = ""

    def __str__(self) -> str:
        parts = [self.file or "<input>"]
        if self.key:
            parts.append(self.key)
        text = ": ".join(parts) + ": " + self.message
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        # One line, always: newlines inside messages would break the one-error-per-line promise.
        text = " ".join(text.split())
        if len(text) > MAX_LINE:  # a huge value echoed back: keep the start and the allowed
            text = f"{text[:MAX_LINE - 420]} [... {len(text) - MAX_LINE + 20} characters ...] " \
                   f"{text[-400:]}"
        return text


# Exit codes of the CLI's error boundary (mtgrpo/cli.py); docs/operate.md lists them.
EXIT_USER_ERROR = 1
EXIT_UNREACHABLE = 69  # sysexits' EX_UNAVAILABLE: a service (the cluster, AWS) could not be reached


class UserError(Exception):
    """A mistake in user input. Carries one or more ``Problem``s; never shown with a traceback."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, problems: Problem | Sequence[Problem] | str, *,
                 notes: Sequence[str] = (), counted: bool = False):
        if isinstance(problems, str):
            problems = [Problem("", "", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        # Lines after the problems: checks that could not run (``notes``), and with
        # ``counted`` a last line counting the problems (a whole-project report).
        self.notes: list[str] = list(notes)
        self.counted = counted
        super().__init__("\n".join(str(p) for p in self.problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]

    def report(self) -> list[str]:
        """What the CLI prints: one line per problem, the notes, then the count if asked."""
        out = self.lines() + [" ".join(n.split()) for n in self.notes]
        if self.counted:
            files = len({p.file for p in self.problems})
            out.append(f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)} in "
                       f"{files} file{'s' * (files != 1)}; nothing written")
        return out


class Unreachable(UserError):
    """A service the command needs (the Kubernetes API, an AWS endpoint) did not answer: not a
    failed job, so CI can tell the two apart by the exit code."""

    exit_code = EXIT_UNREACHABLE


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ``did you mean 'x'?`` suffix for an unknown key, or an empty string."""
    matches = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""
