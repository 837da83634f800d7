"""The tool protocol and the one place tool calls are executed.

A tool is anything with a ``name``, a ``description`` (what the model reads), a JSON-schema
``parameters`` object and ``__call__(**kwargs) -> str`` (or an awaitable of it: the public task
API, :mod:`mtgrpo.task`, documents the contract). :func:`execute_tool_call` runs a parsed
call and never raises: every failure (a parse error, an unknown tool, bad arguments, an exception
inside the tool, an empty result) comes back as ``"Error: ..."`` text with ``ok=False``, so one
bad call can never end a rollout. That includes ``SystemExit`` and a ``KeyboardInterrupt`` a
tool raises itself; only the run's own stop (:mod:`mtgrpo.stopping`: a signal, a cancelled
``async`` call) passes through. The time bound of a call is the environment's
(``tool_timeout_s``).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from typing import Any, Mapping, Protocol, runtime_checkable

import jsonschema

from mtgrpo.trainer.types import ParsedTurn

# Error texts are cut to this many characters: a huge exception message must not flood the
# model's context (the tool result is what the next turn reads).
MAX_ERROR_CHARS = 300


@runtime_checkable
class Tool(Protocol):
    """A callable tool the model can use. ``parameters`` is a JSON schema of type object.

    ``__call__`` returns the result text, or an awaitable of it (an ``async`` tool).
    """

    name: str
    description: str
    parameters: Mapping[str, Any]

    def __call__(self, **kwargs: Any) -> str: ...


def error_text(message: str) -> str:
    """The tool-result text of a failure: ``Error: <message>`` on one bounded line."""
    message = " ".join(str(message).split())
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    return f"Error: {message}"


def check_arguments(tool: Tool, args: Mapping[str, Any]) -> str | None:
    """Why ``args`` do not fit ``tool.parameters`` (one line), or None when they do."""
    validator = jsonschema.Draft202012Validator(tool.parameters)
    errors = sorted(validator.iter_errors(dict(args)), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path)
    # jsonschema's messages repeat the whole instance for some validators ("... is not valid
    # under ..."); keep the short ones and name the argument instead.
    if first.validator == "required":
        return first.message.replace("is a required property", "is required")
    if first.validator == "additionalProperties":
        allowed = ", ".join(sorted(tool.parameters.get("properties", {})))
        return f"{first.message} (allowed: {allowed})"
    return f"argument '{where}': {first.message}" if where else first.message


def _checked_call(tools: Mapping[str, Tool], parsed: ParsedTurn) -> tuple[Tool | None, str]:
    """The tool to run for a parsed turn, or None and the error text of why not."""
    if parsed.tool_error is not None:
        return None, error_text(parsed.tool_error)
    call = parsed.tool_call
    if call is None:
        return None, error_text("no tool call found in the turn")
    tool = tools.get(call.name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return None, error_text(f"unknown tool '{call.name}' (available: {available})")
    if not isinstance(call.args, Mapping):
        return None, error_text(f"arguments of {call.name} must be a JSON object")
    problem = check_arguments(tool, call.args)
    if problem is not None:
        return None, error_text(f"invalid arguments for {call.name}: {problem}")
    return tool, ""


def _result(name: str, result: Any) -> tuple[str, bool]:
    if not isinstance(result, str):
        result = str(result)
    if not result.strip():
        return error_text(f"{name} returned empty output"), False
    return result, True


def _failure(parsed: ParsedTurn, exc: BaseException) -> tuple[str, bool]:
    name = parsed.tool_call.name if parsed.tool_call is not None else "tool"
    return error_text(f"{name} failed: {type(exc).__name__}: {exc}"), False


def _is_the_runs_own(exc: BaseException) -> bool:
    """Whether a BaseException out of a tool call is the run stopping, not the tool failing.

    A stop signal (``Interrupted``), a cancelled task (an async call's time-out) and generator
    clean-up pass through. ``KeyboardInterrupt`` is the run's own Ctrl-C only in the main
    thread while Python's default SIGINT handler is installed (under ``RunStop`` a Ctrl-C
    never raises it); anywhere else a tool raised it, and it is that call's failure.
    """
    from mtgrpo.stopping import Interrupted

    if isinstance(exc, (Interrupted, asyncio.CancelledError, GeneratorExit)):
        return True
    if isinstance(exc, KeyboardInterrupt):
        return (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    return False


def execute_tool_call(tools: Mapping[str, Tool], parsed: ParsedTurn) -> tuple[str, bool]:
    """Run the tool call of one parsed turn. Returns ``(result_text, ok)``; never raises.

    A tool that returns an awaitable (an ``async`` tool called from a thread) is run to its end
    on a private event loop; the environment awaits async tools on its own loop instead
    (:func:`execute_tool_call_async`).
    """
    try:
        tool, error = _checked_call(tools, parsed)
        if tool is None:
            return error, False
        result = tool(**parsed.tool_call.args)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return _result(parsed.tool_call.name, result)
    except BaseException as exc:  # noqa: BLE001 - a tool failure must become text, whatever
        if _is_the_runs_own(exc):
            raise
        return _failure(parsed, exc)


async def execute_tool_call_async(tools: Mapping[str, Tool],
                                  parsed: ParsedTurn) -> tuple[str, bool]:
    """:func:`execute_tool_call` for an ``async`` tool, awaited on the running loop."""
    try:
        tool, error = _checked_call(tools, parsed)
        if tool is None:
            return error, False
        result = tool(**parsed.tool_call.args)
        if inspect.isawaitable(result):
            result = await result
        return _result(parsed.tool_call.name, result)
    except BaseException as exc:  # noqa: BLE001 - a tool failure must become text, whatever
        if _is_the_runs_own(exc):
            raise
        return _failure(parsed, exc)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
