"""Load the plug-ins a config's ``task_*`` keys name: built-in names or ``module:object`` paths.

:func:`load_task` builds the whole task at start-up (factories called with the
:class:`~mtgrpo.task.api.TaskContext`); :func:`check_task` only imports every path and checks
what it names, so a SageMaker job fails in seconds, before vLLM starts, when a plug-in is
missing. Every failure is a ``UserError`` naming the key and the path: an import error, an
object of the wrong kind, a factory that raised.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from mtgrpo.contract.task_spec import REWARD_GROUPS, Ref, parse_refs
from mtgrpo.errors import Problem, UserError
from mtgrpo.task import builtin
from mtgrpo.task.api import Parser, RewardFunction, Rubric, TaskContext, reward

WHERE = ("in the job: the code channel or the image; locally: the config file's folder, the "
         "current directory or the Python path")


@dataclass
class Task:
    """A loaded task: its tools by name, its parser, its rubric and its record loader."""

    tools: dict[str, Any]
    parser: Any
    rubric: Rubric
    load_records: Any

    def score(self, episode):
        return self.rubric.score(episode, self.parser)

    def close(self) -> None:
        for tool in self.tools.values():
            if hasattr(tool, "close"):
                tool.close()


class _Loader:
    def __init__(self, config, context: TaskContext, source: str, check_only: bool):
        self.config = config
        self.context = context
        self.source = source
        self.check_only = check_only
        self.problems: list[Problem] = []

    def fail(self, key: str, ref: Ref | None, message: str, allowed: str = "") -> None:
        named = f"{ref.text!r}: " if ref is not None else ""
        self.problems.append(Problem(self.source, key, named + message, allowed))

    def refs(self, key: str) -> list[Ref]:
        refs, problems = parse_refs(key, getattr(self.config, key), self.source)
        self.problems += problems
        return refs

    def imported(self, key: str, ref: Ref) -> Any:
        try:
            module = importlib.import_module(ref.module)
        except Exception as err:  # noqa: BLE001 - any import-time failure is the plug-in's
            self.fail(key, ref, f"cannot be imported ({_one_line(err)})",
                      f"a module importable {WHERE}")
            return None
        if not hasattr(module, ref.attr):
            self.fail(key, ref, f"module {ref.module} has no attribute {ref.attr!r}",
                      f"a module-level name of {ref.module}")
            return None
        return getattr(module, ref.attr)

    def built(self, key: str, ref: Ref, factory: Any) -> Any:
        """Call a factory (class or function) once, with the context when it takes one."""
        if self.check_only:
            return None
        try:
            return factory(self.context) if _takes_argument(factory) else factory()
        except UserError as err:
            self.fail(key, ref, "failed at load: " + "; ".join(err.lines()))
        except Exception as err:  # noqa: BLE001 - a plug-in raising at load ends the run
            self.fail(key, ref, f"failed at load ({_one_line(err)})")
        return None

    # -- the four kinds --------------------------------------------------------------------
    def tools(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for ref in self.refs("task_tools"):
            obj = builtin.TOOLS[ref.text] if not ref.is_path else self.imported("task_tools", ref)
            if obj is None:
                continue
            if not _is_tool(obj) and not callable(obj):
                self.fail("task_tools", ref, f"is a {type(obj).__name__}, not a tool or a "
                          "factory", "an object with name, description, parameters and "
                          "__call__, or a class or function returning one (or a list of them)")
                continue
            made = obj if _is_tool(obj) else self.built("task_tools", ref, obj)
            if made is None:
                continue
            for tool in made if isinstance(made, (list, tuple)) else [made]:
                if not _is_tool(tool):
                    self.fail("task_tools", ref, f"gave a {type(tool).__name__}, not a tool",
                              "an object with name, description, parameters (a JSON schema "
                              "of type object) and __call__")
                elif tool.name in out:
                    self.fail("task_tools", ref, f"tool name {tool.name!r} is already taken",
                              "tools with distinct names")
                else:
                    out[tool.name] = tool
        return out

    def parser(self) -> Any:
        refs = self.refs("task_parser")
        ref = refs[0] if refs else Ref(self.config.tool_format)
        obj = builtin.PARSERS[ref.text] if not ref.is_path else self.imported("task_parser", ref)
        if obj is None:
            return None
        if not inspect.isclass(obj) and isinstance(obj, Parser):
            return obj
        if not callable(obj):
            self.fail("task_parser", ref, f"is a {type(obj).__name__}, not a parser",
                      "a Parser (stop, system_prompt, parse, format_tool_result, "
                      "extract_tool_result, final_answer) or a class or function returning one")
            return None
        made = self.built("task_parser", ref, obj)
        if made is not None and not isinstance(made, Parser):
            self.fail("task_parser", ref, f"gave a {type(made).__name__}, not a parser",
                      "an object with stop, system_prompt, parse, format_tool_result, "
                      "extract_tool_result and final_answer")
            return None
        return made

    def rubric(self, parser: Any) -> Rubric | None:
        from mtgrpo.trainer.rewards import PARSER_METHODS

        refs = self.refs("task_rewards") or [Ref("triviaqa")]
        rewards: list[RewardFunction] = []
        for ref in refs:
            if not ref.is_path:
                for name in REWARD_GROUPS.get(ref.text, (ref.text,)):
                    weight = ref.weight if ref.weight is not None else float(
                        getattr(self.config, f"reward_{name}"))
                    method = PARSER_METHODS.get(name)
                    if method and parser is not None and not hasattr(parser, method):
                        self.fail("task_rewards", ref, f"reward {name} needs a parser with "
                                  f"{method}(); {type(parser).__name__} has none",
                                  "the xml or qwen parser (a TagParser), or leave it out")
                        continue
                    rewards.append(builtin.reward(name, weight))
                continue
            obj = self.imported("task_rewards", ref)
            if obj is None:
                continue
            if not isinstance(obj, RewardFunction):
                if not callable(obj) or inspect.isclass(obj):
                    self.fail("task_rewards", ref, f"is a {type(obj).__name__}, not a reward",
                              "a RewardFunction (@reward) or a function episode -> float")
                    continue
                try:
                    obj = reward(obj)  # a plain function: an outcome reward of weight 1
                except ValueError as err:
                    self.fail("task_rewards", ref, str(err))
                    continue
            rewards.append(obj if ref.weight is None else obj.with_weight(ref.weight))
        try:
            return Rubric(tuple(rewards))
        except ValueError as err:
            self.fail("task_rewards", None, str(err), "reward functions with distinct names")
            return None

    def records(self) -> Any:
        refs = self.refs("task_records")
        ref = refs[0] if refs else Ref("triviaqa")
        if not ref.is_path:
            return self.built("task_records", ref, builtin.RECORDS[ref.text])
        obj = self.imported("task_records", ref)
        if obj is None:
            return None
        if inspect.isclass(obj):
            return self.built("task_records", ref, obj)
        if not callable(obj):
            self.fail("task_records", ref, f"is a {type(obj).__name__}, not a record loader",
                      "a function path -> records, or a class whose instances are one")
            return None
        return obj


def load_task(config, paths=None, tokenizer=None, *, parser: Any = None,
              source: str = "") -> Task:
    """Every plug-in of ``config``, built. Raises one ``UserError`` listing every problem."""
    loader = _Loader(config, TaskContext(config, paths, tokenizer), source, check_only=False)
    tools = loader.tools()
    parser = parser if parser is not None else loader.parser()
    rubric = loader.rubric(parser)
    records = loader.records()
    if loader.problems:
        for tool in tools.values():
            if hasattr(tool, "close"):
                tool.close()
        raise UserError(loader.problems)
    return Task(tools=tools, parser=parser, rubric=rubric, load_records=records)


def check_task(config, *, source: str = "") -> None:
    """Import every path the ``task_*`` keys name and check its kind; call no factory."""
    loader = _Loader(config, TaskContext(config), source, check_only=True)
    loader.tools()
    loader.parser()
    loader.rubric(None)
    loader.records()
    if loader.problems:
        raise UserError(loader.problems)


def _is_tool(obj: Any) -> bool:
    return (not inspect.isclass(obj) and isinstance(getattr(obj, "name", None), str)
            and isinstance(getattr(obj, "description", None), str)
            and isinstance(getattr(obj, "parameters", None), Mapping) and callable(obj))


def _takes_argument(factory: Any) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in params)


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())
