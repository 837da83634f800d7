"""The ``Backend`` protocol: everything a place that runs jobs (ACK SageMaker, Kubeflow Trainer,
...) contributes, so the shared commands can loop over :data:`mtgrpo.backends.all.BACKENDS`
instead of branching on a backend's name.

A backend lives in its own package (``mtgrpo/ack/``, ``mtgrpo/kubeflow/``) and is one object
with these members. The shared code owns what every backend has in common: reading and merging
recipes, the ``trainer:`` section, the shared ``job:`` rules, templating, naming by content hash
(:mod:`mtgrpo.render.objects`), the placement rule (:mod:`mtgrpo.contract.placement`), writing
``manifests/`` and the diff. The order of the members below is the order a recipe meets them:

1. recipe: ``check_job`` and ``check_section`` type the ``job:`` keys it accepts and its own
   section (``section``) with defaults; ``check_recipe`` adds its rules between values;
2. ``placement``: the GPU split of one node (:func:`mtgrpo.contract.placement.place`);
3. render: ``render`` returns its objects (each through
   :func:`mtgrpo.render.objects.render_object`); ``check_resources`` checks them against the
   schemas of its kinds (CRDs, service models) and may run the fit planner;
4. ``hardware``: what ``mtgrpo plan`` plans on (instance type or GPU model, nodes);
5. operate: ``selector_prefixes`` (``trainjob/NAME``) and ``status``/``wait``/``logs``;
6. ``health_checks``: the Argo CD Lua health check of each kind;
7. the image adapter: ``detect`` (does this pod run under this backend?) and ``run_job``.

A command that does not serve a backend (``mtgrpo pipeline`` on a Kubeflow recipe) refuses it
in one line: :func:`mtgrpo.backends.require`, which reads ``commands``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # the protocol itself imports nothing heavy
    from mtgrpo.contract.placement import Placement
    from mtgrpo.errors import Problem
    from mtgrpo.operate.kube import Kube
    from mtgrpo.recipes import Recipe
    from mtgrpo.recipes.schema import Checker, Key
    from mtgrpo.render.objects import Resource
    from mtgrpo.render.settings import Settings

# Optional commands a backend may serve (``Backend.commands``); render, validate, diff, plan,
# status, wait and logs are served by every backend.
OPTIONAL_COMMANDS = {"pipeline": "mtgrpo pipeline", "artifacts": "mtgrpo artifacts",
                     "metrics": "mtgrpo metrics",
                     "tuned-training-job": "a training job from a tuning job's best values"}


@dataclass(frozen=True)
class Hardware:
    """What one recipe asks to run on, as ``mtgrpo plan`` reads it: a catalogue instance type
    (``ml.p4d.24xlarge``; HyperPod and EKS node types map onto the same rows), or only a GPU
    model (``A100``) with a GPU count. ``unknown`` says why neither is known (nothing planned)."""

    nodes: int
    gpus_per_node: int | None = None  # None: the instance type's own count
    instance_type: str = ""
    gpu_model: str = ""
    region: str = ""
    unknown: str = ""
    price_type: str = ""  # the price table's row that prices a node ("": not priced)
    first_host: str = ""  # the first node's host name, where known (SageMaker: algo-1)
    spot: bool = False  # priced at the spot estimate


@dataclass(frozen=True)
class Target:
    """One object a selector or recipe file names in the cluster: kind, name, namespace ("":
    the connection's)."""

    kind: str
    name: str
    namespace: str = ""


@runtime_checkable
class Backend(Protocol):
    """A backend. Data members are read-only (a class attribute implements one)."""

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The recipe's ``backend:`` value and the folder ``manifests/<name>/``."""

    @property
    def title(self) -> str:
        """For people: "ACK SageMaker", "Kubeflow Trainer + Katib"."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """The Kubernetes kinds it renders."""

    @property
    def commands(self) -> frozenset[str]:
        """Which of ``OPTIONAL_COMMANDS`` it serves."""

    # -- recipe -----------------------------------------------------------------------------
    @property
    def section(self) -> str | None:
        """Its own top-level recipe section (``kubeflow:``); None for none."""

    @property
    def section_key(self) -> "Key | None":
        """The schema entry of that section (its help text)."""

    def check_job(self, checker: "Checker", value: Any) -> dict:
        """The ``job:`` section typed with defaults; keys it does not take are refused with
        what to use instead (never dropped)."""

    def check_section(self, checker: "Checker", value: Any) -> dict | None:
        """Its own section typed with defaults (``value`` None: all defaults); None when the
        backend has no section."""

    def check_recipe(self, recipe: "Recipe") -> list["Problem"]:
        """Its rules between values, beyond the shared ones of ``mtgrpo.validate``."""

    def placement(self, recipe: "Recipe") -> "tuple[Placement | None, list[Problem]]":
        """The GPU split of each node (the one rule, :func:`mtgrpo.contract.placement.place`),
        or the problems that make the recipe impossible to place."""

    # -- render -----------------------------------------------------------------------------
    def render(self, recipe: "Recipe", settings: "Settings") -> list["Resource"]:
        """The recipe's objects, named by content hash; raises ``UserError`` for a template's
        problem (file and line)."""

    def check_resources(self, resources: Sequence["Resource"], recipe: "Recipe", *,
                        crd_dir: Path, root: Path, found: Sequence["Problem"]) -> list["Problem"]:
        """The rendered objects against the schemas of its kinds; ``found`` are the problems
        the recipe's rules already reported (a check that would repeat them may be skipped).
        Problems already named by (file, key) in ``found`` are dropped by the caller."""

    def hardware(self, recipe: "Recipe") -> Hardware:
        """What ``mtgrpo plan`` plans on."""

    # -- operate ----------------------------------------------------------------------------
    @property
    def selector_prefixes(self) -> tuple[str, ...]:
        """Operate selectors it answers, such as ``trainjob/``."""

    @property
    def bare_names(self) -> bool:
        """Whether a bare job name (no prefix) is looked up among its kinds."""

    def targets(self, recipe: "Recipe") -> list[Target]:
        """The jobs ``status``/``wait``/``logs`` follow for a recipe file, as it renders now
        (in wait order)."""

    def status(self, kube: "Kube", selectors: Sequence[str], *, output: str,
               ask_cloud: bool) -> int:
        """Print the state of the jobs ``selectors`` name (job names, its prefixed names,
        recipe names or its recipe files; none: every job of its kinds). ``output``: table
        or json; ``ask_cloud``: whether a cloud API may be asked for more (trial counts)."""

    def wait(self, kube: "Kube", selector: str, *, timeout_s: float,
             heartbeat_s: float) -> int:
        """Wait for one job (a recipe file: its jobs, in order), printing progress on stderr:
        0 done, 1 failed, 2 the controller gave up, 124 timed out."""

    def logs(self, kube: "Kube", selector: str, *, follow: bool, trial: str | None,
             node: int, poll_s: float) -> int:
        """Print the job's log (a tuning job: ``trial`` or the best trial; ``node``: the
        node rank where the backend has one log per node)."""

    # -- Argo CD ----------------------------------------------------------------------------
    @property
    def health_checks(self) -> Mapping[str, str]:
        """``<group>_<Kind>`` -> its Argo CD Lua health check, a file under ``deploy/argocd/``."""

    # -- the image --------------------------------------------------------------------------
    def detect(self, environ: Mapping[str, str]) -> bool:
        """Whether this pod runs under this backend (the image's entry asks each in turn)."""

    def run_job(self) -> int:
        """Present the job to the one trainer launch (``mtgrpo.sagemaker.job.run_job``)."""
