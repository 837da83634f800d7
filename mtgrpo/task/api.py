"""The public task API: tools, reward functions, parsers and record loaders (docs/tasks.md).

A task is four plug-ins a recipe names in its ``trainer:`` section (``task_tools``,
``task_rewards``, ``task_parser``, ``task_records``); the built-in TriviaQA task is written with
the same API (:mod:`mtgrpo.task.builtin`). Importing this module never imports torch.

Tool
    ``name``, ``description`` and ``parameters`` (a JSON schema of type object: what the system
    prompt shows), and ``__call__(**arguments)`` returning text, plain or ``async``. Arguments
    are checked against ``parameters`` first; any exception, a wrong argument or an empty
    result becomes an ``Error: ...`` tool result, so a bad call never ends a rollout.
    :class:`FunctionTool` wraps a function.
RewardFunction
    ``episode -> float`` with a ``name``, a ``weight`` (0 = computed and logged, not optimised)
    and a ``level``: ``turn`` rewards are credited to the first turn by MT-GRPO, ``outcome``
    rewards to the whole episode. :func:`reward` makes one from a function.
Parser
    The tool-call format: the system prompt, stop strings, parsing one turn, framing a tool's
    result. The built-in ``xml`` and ``qwen`` parsers are :class:`TagParser`\\ s.
RecordLoader
    ``path -> records``: reads a train or eval file into :class:`Record`\\ s.

A path in a recipe names a module-level object. A tool or parser object is used as it is; a
class, or for tools and parsers any other callable, is a factory: called once at start-up (with
the :class:`TaskContext` when it takes an argument), it returns the object (a tool factory may
return a list of tools). For rewards and record loaders a function is the plug-in itself; a
record loader class is instantiated like a factory.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Any, Awaitable, Callable, Literal, Mapping, Protocol, Sequence,
                    runtime_checkable)

from mtgrpo.trainer.tools.base import Tool
from mtgrpo.trainer.types import Episode, ParsedTurn, QARecord, RewardBreakdown, ToolCall, Turn

Record = QARecord  # id, question, aliases (accepted answers; may be empty), info (anything else)
Level = Literal["turn", "outcome"]
LEVELS = ("turn", "outcome")
_REWARD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # the metric line's names (contract/metrics.py)
_RESERVED = ("turn", "outcome", "std")  # reward_turn, reward_outcome, reward_std are taken

__all__ = ["Episode", "FunctionTool", "Level", "Parser", "ParsedTurn", "Record", "RecordLoader",
           "RewardBreakdown", "RewardFunction", "Rubric", "TaskContext", "Tool", "ToolCall",
           "Turn", "is_async_tool", "reward"]


@dataclass(frozen=True)
class TaskContext:
    """What a plug-in factory gets at start-up: the run's config, paths and tokenizer.

    ``config`` is the TrainerConfig, ``paths`` the RunPaths (``corpus_dir``, ``train_file``,
    ...; None when only checking), ``tokenizer`` the policy's tokenizer (None when only
    checking), ``data_dir`` the directory of the training file (bundle a database next to it).
    """

    config: Any
    paths: Any = None
    tokenizer: Any = None

    @property
    def data_dir(self) -> Path | None:
        train = getattr(self.paths, "train_file", None)
        return Path(train).parent if train else None


def is_async_tool(tool: Any) -> bool:
    """Whether calling ``tool`` returns an awaitable (an ``async def __call__`` or function)."""
    flag = getattr(tool, "is_async", None)
    if isinstance(flag, bool):
        return flag
    return inspect.iscoroutinefunction(tool) or inspect.iscoroutinefunction(
        getattr(tool, "__call__", None))  # noqa: B004 (the method itself, not a callable test)


class FunctionTool:
    """A tool made of a function (plain or ``async``) and the schema of its arguments.

    >>> add = FunctionTool(lambda a, b: str(a + b), name="add", description="Adds a and b.",
    ...                    parameters={"type": "object", "required": ["a", "b"],
    ...                                "properties": {"a": {"type": "number"},
    ...                                               "b": {"type": "number"}}})
    >>> add(a=1, b=2)
    '3'
    """

    def __init__(self, fn: Callable[..., str | Awaitable[str]], *, name: str, description: str,
                 parameters: Mapping[str, Any], example_args: Mapping[str, Any] | None = None):
        if not name or not isinstance(name, str):
            raise ValueError("a tool needs a non-empty name")
        if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
            raise ValueError(f"tool {name}: parameters must be a JSON schema of type object")
        self.fn = fn
        self.name = name
        self.description = description
        self.parameters = dict(parameters)
        if example_args is not None:
            self.example_args = dict(example_args)
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, **kwargs: Any) -> Any:
        return self.fn(**kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r})"


@dataclass(frozen=True)
class RewardFunction:
    """One reward: ``fn(episode)`` (or ``fn(episode, parser=...)``) -> a finite float.

    ``weight`` scales it in the sum its ``level`` belongs to; weight 0 still computes and logs
    it (``reward_<name>`` in metrics.jsonl). A recipe may override the weight.
    """

    name: str
    fn: Callable[..., float]
    level: Level = "outcome"
    weight: float = 1.0
    wants_parser: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _REWARD_NAME.match(self.name):
            raise ValueError(f"reward name {self.name!r} must match {_REWARD_NAME.pattern} "
                             "(it is logged as reward_<name>)")
        if self.name in _RESERVED:
            raise ValueError(f"reward name {self.name!r} is taken by the metric "
                             f"reward_{self.name}")
        if self.level not in LEVELS:
            raise ValueError(f"reward {self.name}: level must be turn or outcome, "
                             f"got {self.level!r}")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ValueError(f"reward {self.name}: weight must be a finite number")
        if not callable(self.fn):
            raise ValueError(f"reward {self.name}: fn must be callable")
        object.__setattr__(self, "wants_parser", _takes(self.fn, "parser"))

    def with_weight(self, weight: float) -> "RewardFunction":
        return RewardFunction(self.name, self.fn, self.level, float(weight))

    def __call__(self, episode: Episode, parser: Any = None) -> float:
        value = self.fn(episode, parser=parser) if self.wants_parser else self.fn(episode)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"reward {self.name} returned {type(value).__name__}, not a "
                             "number") from None
        if not math.isfinite(number):
            raise ValueError(f"reward {self.name} returned {number}")
        return number


def reward(fn: Callable[..., float] | None = None, *, name: str | None = None,
           level: Level = "outcome", weight: float = 1.0):
    """Make a :class:`RewardFunction` of a function; usable as ``@reward`` or ``@reward(...)``.

    >>> @reward(level="outcome")
    ... def answered(episode):
    ...     return float(episode.answer is not None)
    >>> answered.name, answered.level, answered.weight
    ('answered', 'outcome', 1.0)
    """
    def make(f: Callable[..., float]) -> RewardFunction:
        return RewardFunction(name or f.__name__, f, level, weight)

    return make(fn) if fn is not None else make


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@dataclass(frozen=True)
class Rubric:
    """Weighted reward functions: an episode's turn and outcome sums and every component."""

    rewards: tuple[RewardFunction, ...]

    def __post_init__(self) -> None:
        names = [r.name for r in self.rewards]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"reward names must be unique, repeated: {', '.join(repeated)}")

    def score(self, episode: Episode, parser: Any = None) -> RewardBreakdown:
        components: dict[str, float] = {}
        turn = outcome = 0.0
        for r in self.rewards:
            value = r(episode, parser)
            components[r.name] = value
            if r.level == "turn":
                turn += r.weight * value
            else:
                outcome += r.weight * value
        return RewardBreakdown(turn=turn, outcome=outcome, components=components)

    @property
    def weights(self) -> dict[str, float]:
        return {r.name: r.weight for r in self.rewards}


@runtime_checkable
class Parser(Protocol):
    """A tool-call format. ``stop`` ends a turn; ``parse`` reads one assistant turn's text."""

    name: str

    @property
    def stop(self) -> list[str]: ...

    def system_prompt(self, tools: Sequence[Tool]) -> str: ...

    def parse(self, text: str) -> ParsedTurn: ...

    def format_tool_result(self, text: str) -> str: ...

    def extract_tool_result(self, text: str) -> str: ...

    def final_answer(self, episode: Episode) -> str | None: ...


@runtime_checkable
class RecordLoader(Protocol):
    """Reads one train or eval file into records (raise ``mtgrpo.errors.UserError`` for bad
    input: it is reported as one line naming the file)."""

    def __call__(self, path: Path) -> Sequence[Record]: ...
