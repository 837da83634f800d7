"""Render-time check of the ``task_*`` plug-in paths against the recipes' repository.

A ``package.module:object`` path whose top-level package lives in the repository (``pkg/`` or
``pkg.py`` at its root or under ``src/``) must name a module file there that defines the object
at module level. The check reads the source with :mod:`ast` and imports nothing: rendering never
runs user code. A package that is not in the repository (it comes from the image or from a code
channel built elsewhere) is not checked here; the job checks it before vLLM starts.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping

from mtgrpo.contract.task_spec import KINDS, parse_refs
from mtgrpo.errors import Problem


def _package_root(repo: Path, top: str) -> Path | None:
    for base in (repo, repo / "src"):
        if (base / top).is_dir() or (base / f"{top}.py").is_file():
            return base
    return None


def _module_file(base: Path, module: str) -> Path | None:
    parts = module.split(".")
    stem = base.joinpath(*parts)
    for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(tree: ast.Module, name: str) -> bool:
    """Whether ``name`` is bound at module level (or may be: a star import, __getattr__)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in (name, "__getattr__"):
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*" or (alias.asname or alias.name.split(".")[0]) == name:
                    return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target)):
                    return True
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            # Conditional definitions (try/except ImportError, if TYPE_CHECKING): look inside.
            children = list(node.body) + list(getattr(node, "orelse", [])) + list(
                getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                children += handler.body
            if _defines(ast.Module(body=children, type_ignores=[]), name):
                return True
    return False


def check_task_paths(trainer: Mapping[str, Any], repo: Path, source: str,
                     prefix: str = "trainer") -> list[Problem]:
    """Problems with the paths a recipe's ``trainer:`` values name, as far as ``repo`` holds
    their code."""
    problems: list[Problem] = []
    parsed: dict[Path, ast.Module | None] = {}
    for key in KINDS:
        value = trainer.get(key)
        if not isinstance(value, str):
            continue
        refs, _ = parse_refs(key, value)  # shape problems are the config schema's to report
        where = f"{prefix}.{key}" if prefix else key
        for ref in refs:
            if not ref.is_path:
                continue
            base = _package_root(repo, ref.module.split(".")[0])
            if base is None:
                continue
            path = _module_file(base, ref.module)
            if path is None:
                stem = (base / ref.module.replace(".", "/")).relative_to(repo)
                problems.append(Problem(source, where, f"{ref.text!r}: module {ref.module} not "
                                        f"found ({stem}.py or {stem}/__init__.py)",
                                        "a module of the repository's package, or a package "
                                        "the image or code channel holds"))
                continue
            if path not in parsed:
                try:
                    parsed[path] = ast.parse(path.read_bytes(), filename=str(path))
                except SyntaxError as err:
                    parsed[path] = None
                    problems.append(Problem(source, where, f"{ref.text!r}: {path} does not "
                                            f"parse (line {err.lineno}: {err.msg})",
                                            "valid Python"))
                    continue
            tree = parsed[path]
            if tree is not None and not _defines(tree, ref.attr):
                problems.append(Problem(source, where, f"{ref.text!r}: {path.relative_to(repo)} "
                                        f"defines no {ref.attr!r} at module level",
                                        f"a module-level name of {ref.module}"))
    return problems
