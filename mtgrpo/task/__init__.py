"""The public task API (docs/tasks.md): write a tool, a reward, a parser or a record loader.

    from mtgrpo.task import FunctionTool, reward, Episode

Importing it never imports torch. The loading of the plug-ins a recipe names lives in
:mod:`mtgrpo.task.loading`; the built-in TriviaQA task in :mod:`mtgrpo.task.builtin`.
"""

from mtgrpo.task.api import (Episode, FunctionTool, Level, Parser, ParsedTurn, Record,
                             RecordLoader, RewardBreakdown, RewardFunction, Rubric, TaskContext,
                             Tool, ToolCall, Turn, is_async_tool, reward)

__all__ = ["Episode", "FunctionTool", "Level", "Parser", "ParsedTurn", "Record", "RecordLoader",
           "RewardBreakdown", "RewardFunction", "Rubric", "TaskContext", "Tool", "ToolCall",
           "Turn", "is_async_tool", "reward"]
