"""``mtgrpo status``, ``wait`` and ``logs`` for HyperPod: ``hyperpodpytorchjob/NAME`` selectors
and ``backend: hyperpod`` recipe files (the job they render to now). The readers are in
:mod:`mtgrpo.hyperpod.operate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from mtgrpo.errors import Problem, UserError
from mtgrpo.hyperpod import contract as hc
from mtgrpo.hyperpod import operate


def recipe_target(selector: str) -> tuple[str, str] | None:
    """(name, namespace) of the job a ``backend: hyperpod`` recipe file renders to now; None
    when ``selector`` is not such a file."""
    from mtgrpo.hyperpod.render import BACKEND, build_hyperpod_resources
    from mtgrpo.recipes import find_root, load_recipe
    from mtgrpo.render.settings import load_settings

    path = Path(selector)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    recipe = load_recipe(path)
    if recipe.backend != BACKEND:
        return None
    for resource in build_hyperpod_resources(recipe, load_settings(find_root(path))):
        if resource.kind == hc.KIND:
            return resource.name, resource.body["metadata"].get("namespace") or ""
    return None


def _target(kube: Any, selector: str) -> tuple[Any, str, str]:
    """(connection in the job's namespace, job name, recipe file or "") of a selector."""
    name = operate.job_name(selector)
    if name is not None:
        return kube, name, ""
    found = recipe_target(selector)
    if found is None:
        raise UserError(Problem(selector, "", "not a hyperpodpytorchjob/NAME nor a backend: "
                                "hyperpod recipe file",
                                "hyperpodpytorchjob/NAME or a recipe file"))
    return operate.in_namespace(kube, found[1]), found[0], selector


def status(kube: Any, selectors: Sequence[str], *, output: str = "table",
           ask_cloud: bool = False) -> int:
    for selector in selectors:
        where, name, recipe = _target(kube, selector)
        print(operate.status_line(where, name, recipe=recipe))
    return 0


def wait(kube: Any, selector: str, *, timeout_s: float, heartbeat_s: float) -> int:
    where, name, recipe = _target(kube, selector)
    if recipe and operate.get(where, name) is None:
        raise UserError(Problem(recipe, hc.KIND, f"{name} is not in namespace "
                                f"{where.namespace}", "an applied recipe: kubectl apply -k . "
                                "(or let Argo CD sync)"))
    code, message = operate.wait(where, name, timeout_s=timeout_s,
                                 poll_s=min(heartbeat_s, 10.0),
                                 progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(message, flush=True)
    return code


def logs(kube: Any, selector: str, *, follow: bool = False, trial: str | None = None,
         node: int = 0, poll_s: float = 5.0) -> int:
    where, name, _ = _target(kube, selector)
    if trial:
        raise UserError(Problem(selector, "--trial", "a HyperPod job has no trials",
                                "no --trial"))
    if follow:
        raise UserError(Problem(selector, "--follow", "not served for HyperPod jobs yet",
                                f"kubectl logs -f -n {where.namespace} "
                                f"{name}-{hc.REPLICA_SPEC}-{node} -c {hc.CONTAINER}"))
    print(operate.logs(where, name, node=node), end="", flush=True)
    return 0
