"""Optional dependencies: a command that needs an extra says which, in one line, and exits 1.

The light install (``pip install mtgrpo``) renders, validates and operates; ``mtgrpo train``
needs ``mtgrpo[trainer]`` and ``mtgrpo pipeline`` needs ``mtgrpo[pipelines]``
(pyproject.toml's optional dependencies; the import names here are the ones the code imports).
"""

from __future__ import annotations

import importlib.util

from mtgrpo.errors import Problem, UserError

EXTRAS: dict[str, tuple[str, ...]] = {
    "trainer": ("torch", "transformers", "trl", "accelerate", "bm25s", "datasets", "pyarrow",
                "httpx", "safetensors"),
    "pipelines": ("kfp",),
    # `mtgrpo track` and in-job tracking; a missing one is reported when it is reached (cli.py)
    "tracking": ("mlflow", "wandb", "sagemaker_mlflow"),
}


def missing_extra(module: str | None) -> str | None:
    """The extra that provides the top-level module ``module`` (``torch.cuda`` -> trainer)."""
    top = (module or "").split(".", 1)[0]
    return next((extra for extra, names in EXTRAS.items() if top in names), None)


def extra_problem(extra: str, command: str, missing: list[str]) -> UserError:
    return UserError(Problem(f"mtgrpo {command}", "", f"needs {', '.join(missing)}, which "
                             f"{'is' if len(missing) == 1 else 'are'} not installed",
                             f"pip install 'mtgrpo[{extra}]'"))


def require(extra: str, command: str) -> None:
    """Raise a one-line UserError when a module of ``extra`` cannot be found."""
    missing = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise extra_problem(extra, command, missing)
