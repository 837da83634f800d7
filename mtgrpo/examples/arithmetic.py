"""Example task: arithmetic with a calculator tool (not retrieval). A template for your own.

The recipe names its plug-ins by path (recipes/local/arithmetic-cpu.yaml)::

    task_tools: mtgrpo.examples.arithmetic:calculator
    task_rewards: mtgrpo.examples.arithmetic:correct=1.0,mtgrpo.examples.arithmetic:calculator_found=0.5,format=0.2
    task_records: mtgrpo.examples.arithmetic:load_problems

Records are JSON lines ``{"id": ..., "question": "What is 37 * 12?", "answer": 444}``; the loader
keeps the number in ``Record.info["answer"]``. ``correct`` (outcome) is 1 when the final answer is
that number; ``calculator_found`` (turn: MT-GRPO credits it to the calling turn) is 1 when a
calculator call that worked returned it; ``format`` is the built-in tag-format reward.

    python -m mtgrpo.examples.arithmetic DIR [--train 64 --eval 8 --seed 0]   # writes the data
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import random
import re
import sys
from pathlib import Path
from typing import Sequence

from mtgrpo.errors import Problem, UserError
from mtgrpo.task import Episode, FunctionTool, Record, reward

MAX_ABS = 1e12  # results beyond this are refused: 9**9**9 must not hang a rollout
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression (numbers, + - * / // % **, parentheses).

    >>> evaluate("(2 + 3) * 4")
    20
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None

    def value(node: ast.AST):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            result = _BINARY[type(node.op)](left, right)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            result = _UNARY[type(node.op)](value(node.operand))
        else:
            raise ValueError(f"unsupported element {type(node).__name__}: only numbers, "
                             "+ - * / // % ** and parentheses")
        if abs(result) > MAX_ABS:
            raise ValueError("result too large")
        return result

    return value(tree.body)


def _format(number: float) -> str:
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    return str(round(number, 6)) if isinstance(number, float) else str(number)


def _calculate(expression: str) -> str:
    return _format(evaluate(expression))  # a ValueError (or ZeroDivisionError) -> Error: ...


calculator = FunctionTool(
    _calculate, name="calculator",
    description="Evaluates an arithmetic expression and returns the number. Supports + - * / "
                "// % ** and parentheses.",
    parameters={"type": "object", "required": ["expression"], "additionalProperties": False,
                "properties": {"expression": {"type": "string", "minLength": 1,
                                              "description": "for example (37 * 12) + 5"}}},
    example_args={"expression": "37 * 12"})


def _number(text: str | None) -> float | None:
    if not text:
        return None
    found = _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def _is_answer(number: float | None, record: Record) -> bool:
    expected = record.info.get("answer")
    return number is not None and expected is not None and math.isclose(
        number, float(expected), rel_tol=1e-9, abs_tol=1e-6)


@reward(level="outcome")
def correct(episode: Episode, parser) -> float:
    """1 when the final answer's (last) number is the expected one."""
    return float(_is_answer(_number(parser.final_answer(episode)), episode.record))


@reward(level="turn")
def calculator_found(episode: Episode, parser) -> float:
    """1 when a calculator call that worked returned the expected number."""
    return float(any(_is_answer(_number(parser.extract_tool_result(t.text)), episode.record)
                     for t in episode.turns if t.role == "tool" and t.tool_ok))


def load_problems(path: Path) -> list[Record]:
    """``{"question": str, "answer": number, "id": optional}`` per line -> Records."""
    allowed = '{"question": str, "answer": number, "id": optional str}'
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(Problem(where, "", f"invalid JSON: {err.msg}", allowed)) from None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise UserError(Problem(where, "question", "must be a string", allowed))
            answer = row.get("answer")
            if isinstance(answer, bool) or not isinstance(answer, (int, float)):
                raise UserError(Problem(where, "answer", "must be a number", allowed))
            records.append(Record(id=str(row.get("id", f"{Path(path).stem}-{lineno}")),
                                  question=row["question"], aliases=(_format(answer),),
                                  info={"answer": answer}))
    if not records:
        raise UserError(Problem(str(path), "", "has no problems", allowed))
    return records


def make_problems(n: int, seed: int) -> list[dict]:
    """``n`` two-operand problems, deterministic for a seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice("+-*")
        out.append({"id": f"arith-{seed}-{i}", "question": f"What is {a} {op} {b}?",
                    "answer": evaluate(f"{a} {op} {b}")})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtgrpo.examples.arithmetic",
                                     description="Write train.jsonl and eval.jsonl of the "
                                                 "arithmetic example task.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--eval", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    problems = make_problems(args.train + args.eval, args.seed)
    for name, rows in (("train.jsonl", problems[:args.train]),
                       ("eval.jsonl", problems[args.train:])):
        (args.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows),
                                     encoding="utf-8")
    print(f"wrote {args.train} + {args.eval} problems to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
