"""The agent a config names: ``agent`` (a ``package.module:object`` path) or ``agent_command``.

``agent``: an async callable ``agent(base_url, record, make_client)`` (a plain function runs in
a thread); a class is a factory, instantiated once at start-up (with the
:class:`~mtgrpo.task.api.TaskContext` when its constructor takes an argument), whose instances
are the callable. ``agent_command``: a command line (split like a shell, no shell run) started
once per episode. Every problem is a ``UserError`` naming the key and the path.
"""

from __future__ import annotations

import importlib
import inspect
import shlex
from dataclasses import dataclass
from typing import Any

from mtgrpo.contract.task_spec import PATH, PATH_HELP
from mtgrpo.errors import Problem, UserError

WHERE = "in the job: the code channel or the image; locally: the Python path"


@dataclass(frozen=True)
class AgentSpec:
    """The loaded agent: ``call`` (a Python agent) or ``command`` (argv), exactly one set."""

    name: str
    call: Any = None
    command: tuple[str, ...] = ()


def agent_problems(config, source: str = "") -> list[Problem]:
    """The shapes of ``agent`` and ``agent_command`` (no import): for the config's checks."""
    problems = []
    if config.agent and config.agent_command:
        problems.append(Problem(source, "agent_command", "is set together with agent",
                                "one of agent (a Python agent) or agent_command"))
    if config.agent and not PATH.match(config.agent):
        problems.append(Problem(source, "agent", f"invalid value {config.agent!r}",
                                f"a {PATH_HELP} path"))
    if config.agent_command:
        try:
            if not shlex.split(config.agent_command):
                raise ValueError("empty")
        except ValueError as err:
            problems.append(Problem(source, "agent_command", f"cannot be split into a command "
                                    f"line ({err})", "a command line, e.g. node agent.js"))
    return problems


def load_agent(config, context=None, *, source: str = "", check_only: bool = False
               ) -> AgentSpec | None:
    """The config's agent (None when it names none). ``check_only``: import, call no factory."""
    problems = agent_problems(config, source)
    if problems:
        raise UserError(problems)
    if config.agent_command:
        argv = tuple(shlex.split(config.agent_command))
        return AgentSpec(argv[0], command=argv)
    if not config.agent:
        return None
    module_name, _, attr = config.agent.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import-time failure is the plug-in's
        raise UserError(Problem(source, "agent", f"{config.agent!r}: cannot be imported "
                                f"({_one_line(err)})", f"a module importable {WHERE}")) from None
    if not hasattr(module, attr):
        raise UserError(Problem(source, "agent", f"{config.agent!r}: module {module_name} has "
                                f"no attribute {attr!r}", f"a module-level name of {module_name}"))
    obj: Any = getattr(module, attr)
    if not callable(obj):
        raise UserError(Problem(source, "agent", f"{config.agent!r}: is a {type(obj).__name__}, "
                                "not callable", "an async function agent(base_url, record, "
                                "make_client), or a class whose instances are one"))
    if inspect.isclass(obj):
        if check_only:
            return AgentSpec(config.agent, call=obj)
        factory: Any = obj
        try:
            obj = factory(context) if _takes_argument(factory) else factory()
        except Exception as err:  # noqa: BLE001 - a factory raising at load ends the run
            raise UserError(Problem(source, "agent", f"{config.agent!r}: failed at load "
                                    f"({_one_line(err)})")) from None
        if not callable(obj):
            raise UserError(Problem(source, "agent", f"{config.agent!r}: gave a "
                                    f"{type(obj).__name__}, not a callable agent"))
    return AgentSpec(config.agent, call=obj)


def _takes_argument(factory: Any) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in params)


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())
