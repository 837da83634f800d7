"""Generate docs/hyperparameters.md from the trainer config schema (field types, defaults,
bounds and help in :class:`mtgrpo.contract.TrainerConfig`), so the page cannot go stale:
``tests/test_recipes.py`` fails when the committed page differs.

Regenerate: ``python -m mtgrpo.recipes.hyperparameters_doc --write``.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from mtgrpo.contract import TrainerConfig
from mtgrpo.contract.config import _allowed, field_type, format_value

DOC_PATH = Path("docs") / "hyperparameters.md"


def groups() -> list[tuple[str, list[str]]]:
    """The "Parameters that control ...:" groups of TrainerConfig's docstring, in order."""
    doc = inspect.getdoc(TrainerConfig) or ""
    out: list[tuple[str, list[str]]] = []
    for title, body in re.findall(r"Parameters that control ([^:]+):\n((?:[ \t]+.*\n?)+)", doc):
        names = [n.strip() for n in " ".join(body.split()).rstrip(".").split(",")]
        out.append((title.strip(), [n for n in names if n]))
    return out


def hyperparameters_markdown() -> str:
    specs = {f.name: f for f in fields(TrainerConfig)}
    lines = [
        "# Trainer hyperparameters",
        "",
        "<!-- Generated from mtgrpo/contract/config.py by "
        "`python -m mtgrpo.recipes.hyperparameters_doc --write`; do not edit. -->",
        "",
        "Set them in a recipe's `trainer:` section (typed YAML values) or in a local trainer "
        "config for `mtgrpo train`. The renderer checks them against this schema and renders "
        "**every** field as a SageMaker string hyperparameter (booleans `true`/`false`), so a "
        "job never depends on a default that could change between image versions; the "
        "container parses them back with the same schema.",
        "",
    ]
    listed: set[str] = set()
    for title, names in groups():
        lines += [f"## {title[0].upper()}{title[1:]}", "",
                  "| name | type | default | allowed | description |",
                  "| --- | --- | --- | --- | --- |"]
        for name in names:
            if name in specs:
                lines.append(_row(specs[name]))
                listed.add(name)
        lines.append("")
    rest = [name for name in specs if name not in listed]
    if rest:
        lines += ["## Other", "", "| name | type | default | allowed | description |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [_row(specs[name]) for name in rest]
        lines.append("")
    return "\n".join(lines)


def _row(f) -> str:
    default = "" if f.default is MISSING else format_value(f.default)
    required = " **required**" if f.metadata.get("required") else ""
    shown = f"`{default}`" if default else "(empty)"
    help_text = f.metadata.get("help", "").replace("|", "\\|")
    return (f"| `{f.name}` | {field_type(f).__name__} | {shown}{required} | "
            f"{_allowed(f).replace('|', chr(92) + '|')} | {help_text} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH}")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    text = hyperparameters_markdown()
    if args.write:
        (args.root / DOC_PATH).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
