"""The backend registry: every backend implements the protocol, a backend added to the table
is served by render and validate without touching the commands, no shared module branches on
a backend's name, and each backend's template errors are one-line user errors."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from mtgrpo import backends
from mtgrpo.backends.protocol import Backend, Hardware, Target
from mtgrpo.cli import main
from mtgrpo.errors import UserError
from mtgrpo.recipes.schema import Key
from mtgrpo.render import render_all
from tests.renderkit import REPO, SHARED_CRDS, copy_project

SHARED_PACKAGES = ("render", "validate", "commands", "operate", "recipes", "plan", "gitops",
                   "backends", "contract", "pipelines")


# -- the protocol ------------------------------------------------------------------------------

def _members() -> dict[str, Any]:
    """The protocol's members: methods (with their parameters) and data attributes."""
    out: dict[str, Any] = {}
    for name, value in vars(Backend).items():
        if name.startswith("_"):
            continue
        if inspect.isfunction(value):
            out[name] = list(inspect.signature(value).parameters)
        elif isinstance(value, property):
            out[name] = None
    return out


@pytest.mark.parametrize("name", backends.names())
def test_every_registered_backend_implements_the_protocol(name):
    backend = backends.get(name)
    assert isinstance(backend, Backend)
    assert backend.name == name
    members = _members()
    assert {"name", "kinds", "render", "check_resources", "status", "detect"} <= set(members)
    for member, params in members.items():
        assert hasattr(backend, member), f"{name} lacks {member}"
        if params is not None:  # same parameters, same names (keyword calls)
            assert list(inspect.signature(getattr(type(backend), member)).parameters) == \
                params, member
    assert set(backend.commands) <= set(backends.OPTIONAL_COMMANDS)
    for lua in backend.health_checks.values():  # its Argo CD health checks exist
        assert (REPO / "deploy" / "argocd" / lua).is_file(), lua
    assert backend.kinds and all(isinstance(k, str) for k in backend.kinds)


def test_the_registry_is_one_table_with_the_default_first():
    table = backends.registry()
    assert list(table)[:2] == ["sagemaker", "kubeflow"]  # then any added after them
    assert backends.default_name() == "sagemaker"
    owners = backends.section_owners()
    assert owners["kubeflow"] is table["kubeflow"] and "sagemaker" not in owners
    assert all(owner.section == name for name, owner in owners.items())
    assert backends.route("trainjob/x") is table["kubeflow"]
    assert backends.route("trainingjob/x") is table["sagemaker"]
    assert backends.route("some-job-name") is table["sagemaker"]
    assert backends.route(str(REPO / "recipes" / "qwen3-1-7b-kubeflow.yaml")) is \
        table["kubeflow"]


# -- a backend added to the table -------------------------------------------------------------

FAKE_TEMPLATE = """\
apiVersion: example.com/v1
kind: FakeJob
metadata:
  name: {{ name | json }}
  namespace: {{ namespace | json }}
spec:
  image: {{ job.image_uri | json }}
  learningRate: {{ trainer.learning_rate | json }}
  nodes: {{ fake.nodes | json }}
"""


class FakeBackend:
    """A minimal third backend: one FakeJob per recipe, from templates/fake/fakejob.yaml.j2."""

    name = "fake"
    title = "Fake"
    kinds = ("FakeJob",)
    commands: frozenset[str] = frozenset()
    section = "fake"
    section_key = Key("mapping", "Fake-only settings.", default=None)
    selector_prefixes = ("fakejob/",)
    bare_names = False
    health_checks: dict[str, str] = {}

    def check_job(self, checker, value):
        return checker.section(value, {"image_uri": Key("str", "Image.", required=True),
                                       "max_run": Key("int", "Seconds.", default=3600)},
                               "job", "job keys")

    def check_section(self, checker, value):
        return checker.section({} if value is None else value,
                               {"nodes": Key("int", "Nodes.", default=1)}, "fake", "fake keys")

    def check_recipe(self, recipe):
        from mtgrpo.errors import Problem

        nodes = (recipe.section or {}).get("nodes", 1)
        return [] if nodes >= 1 else [Problem(recipe.where("fake.nodes"), "fake.nodes",
                                              f"{nodes} is too small", "at least 1")]

    def placement(self, recipe):
        return None, []

    def render(self, recipe, settings):
        from mtgrpo.render import naming
        from mtgrpo.render.objects import emit, render_object

        ctx = {"name": "", "namespace": settings.namespace, "job": recipe.job,
               "trainer": {"learning_rate": recipe.trainer.learning_rate},
               "fake": recipe.section}
        body, shown = render_object("fake/fakejob.yaml.j2", "FakeJob", settings, ctx,
                                    source=recipe.source)
        name = naming.job_name(recipe.name, body["spec"], 63)
        body["metadata"]["name"] = name
        return [emit("FakeJob", name, body, source=recipe.source, recipe=recipe.name,
                     template="fake/fakejob.yaml.j2", shown=shown, backend=self.name)]

    def check_resources(self, resources, recipe, *, crd_dir, root, found):
        return []

    def hardware(self, recipe):
        return Hardware(nodes=1, unknown="fake nodes")

    def targets(self, recipe):
        return [Target("FakeJob", r.name) for r in self.render(recipe, None)]

    def status(self, kube, selectors, *, output, ask_cloud):
        return 0

    def wait(self, kube, selector, *, timeout_s, heartbeat_s):
        return 0

    def logs(self, kube, selector, *, follow, trial, node, poll_s):
        return 0

    def detect(self, environ):
        return False

    def run_job(self):
        return 0


@pytest.fixture
def fake_project(tmp_path, monkeypatch) -> Path:
    from mtgrpo.backends.all import BACKENDS

    monkeypatch.setitem(BACKENDS, "fake", FakeBackend())
    root = copy_project(tmp_path, rendered=False)
    for path in (root / "recipes").glob("*.yaml"):
        if not path.name.startswith("_"):
            path.unlink()
    (root / "templates" / "fake").mkdir()
    (root / "templates" / "fake" / "fakejob.yaml.j2").write_text(FAKE_TEMPLATE)
    (root / "recipes" / "tiny-fake.yaml").write_text(
        "name: tiny-fake\nbackend: fake\ntrainer:\n  model_name_or_path: Qwen/Qwen3-1.7B\n"
        "  learning_rate: 2.0e-6\njob:\n  image_uri: example.com/trainer@sha256:" + "0" * 64 +
        "\nfake:\n  nodes: 3\n")
    return root


def test_a_registered_backend_is_rendered_and_validated_through_the_table(fake_project):
    assert isinstance(FakeBackend(), Backend)
    result = render_all(fake_project, write=True, crd_dir=SHARED_CRDS)
    assert [r.kind for r in result.resources] == ["FakeJob"]
    body = result.resources[0].body
    assert body["spec"] == {"image": "example.com/trainer@sha256:" + "0" * 64,
                            "learningRate": 2e-06, "nodes": 3}
    # its own folder and kustomization, listed by the top-level one
    assert (fake_project / "manifests" / "fake" / result.resources[0].filename).is_file()
    assert (fake_project / "manifests" / "fake" / "kustomization.yaml").is_file()
    assert "- manifests/fake\n" in (fake_project / "kustomization.yaml").read_text()
    # its rule, its section's schema and a section it does not own, in one run
    path = fake_project / "recipes" / "tiny-fake.yaml"
    path.write_text(path.read_text().replace("nodes: 3", "nodes: 0\n  typo: 1")
                    + "kubeflow:\n  num_nodes: 2\n")
    with pytest.raises(UserError) as err:
        render_all(fake_project, write=False, crd_dir=SHARED_CRDS)
    text = str(err.value)
    assert "fake.typo: unknown key in fake keys" in text
    assert "kubeflow: only used with backend: kubeflow" in text


def test_a_registered_backend_is_a_choice_of_backend(fake_project):
    path = fake_project / "recipes" / "tiny-fake.yaml"
    path.write_text(path.read_text().replace("backend: fake", "backend: fak"))
    with pytest.raises(UserError, match="one of " + ", ".join(backends.names())):
        render_all(fake_project, write=False, crd_dir=SHARED_CRDS)


# -- no branch on a backend's name outside its package ----------------------------------------

def _name_branches(path: Path, names: set[str]) -> list[str]:
    """Comparisons of a ``backend`` value, and string literals equal to a backend's name,
    except AWS service names (``client("sagemaker", ...)``) and argparse defaults."""
    tree = ast.parse(path.read_text(), str(path))
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else \
                getattr(node.func, "id", "")
            if func in ("client", "s3_client") and node.args:
                allowed.add(id(node.args[0]))
            for kw in node.keywords:
                if func == "add_argument" and kw.arg == "default":
                    allowed.add(id(kw.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            tails = [s.attr if isinstance(s, ast.Attribute) else getattr(s, "id", "")
                     for s in sides]
            # recipe.backend == "kubeflow", recipe.backend != BACKEND
            named = any((isinstance(s, ast.Constant) and s.value in names) or
                        (t.isupper() and len(t) > 1) for s, t in zip(sides, tails))
            if "backend" in tails and named:
                found.append(f"{path}:{node.lineno}: compares a backend")
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in allowed:
            found.append(f"{path}:{node.lineno}: names backend {node.value!r}")
    return found


def test_no_shared_module_branches_on_a_backend_name():
    names = set(backends.names())
    found = []
    for package in SHARED_PACKAGES:
        for path in sorted((REPO / "mtgrpo" / package).rglob("*.py")):
            found += _name_branches(path, names)
    assert not found, "\n".join(found)


def test_the_guard_sees_a_branch():
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write('if recipe.backend == "kubeflow":\n    pass\nx = "sagemaker"\n'
                'client("sagemaker", "us-east-1")\nif recipe.backend != BACKEND:\n    pass\n'
                'if backend is None or backend == "vllm_shared":\n    pass\n')
    found = _name_branches(Path(f.name), {"kubeflow", "sagemaker"})
    Path(f.name).unlink()
    lines = sorted((int(f.split(":")[1]), f.split(": ", 1)[1]) for f in found)
    assert lines == [(1, "compares a backend"), (1, "names backend 'kubeflow'"),
                     (3, "names backend 'sagemaker'"), (5, "compares a backend")]


# -- each backend's template errors ------------------------------------------------------------

@pytest.mark.parametrize("template,recipe", [
    ("trainingjob.yaml.j2", "qwen2-5-1-5b-g5"),
    ("kubeflow/trainjob.yaml.j2", "qwen3-1-7b-kubeflow"),
])
def test_a_failing_template_expression_is_one_line_naming_file_and_line(
        tmp_path, capsys, template, recipe):
    root = copy_project(tmp_path)
    path = root / "templates" / template
    text = path.read_text()
    line = text.count("\n") + 1
    path.write_text(text + "# {{ (1 / 0) }}\n")  # a failing expression on its last line
    code = main(["validate", "--root", str(root), "--crd-dir", str(SHARED_CRDS),
                 f"{root}/recipes/{recipe}.yaml"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"templates/{template}: line {line}: template failed: ZeroDivisionError" in err
    assert "internal error" not in err and "Traceback" not in err


# -- commands a backend does not serve ---------------------------------------------------------

def test_pipeline_refuses_a_kubeflow_recipe_in_one_line(capsys):
    pytest.importorskip("kfp")
    code = main(["pipeline", str(REPO / "recipes" / "qwen2-5-1-5b-kubeflow-tune.yaml")])
    err = capsys.readouterr().err
    assert code == 1
    assert "backend: mtgrpo pipeline is not available for backend kubeflow" in err
    assert "internal error" not in err and "Traceback" not in err


# -- output per backend ------------------------------------------------------------------------

def test_a_project_enabling_only_sagemaker_builds_only_ack_kinds(tmp_path):
    """Real `kubectl kustomize`: the top-level kustomization of an ACK-only project holds no
    Kubeflow kind (so an ACK-only cluster applies it cleanly); the Kubeflow folder is still
    rendered and builds on its own."""
    import shutil
    import subprocess

    import yaml

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    root = copy_project(tmp_path, rendered=False)
    settings = root / "recipes" / "_project.yaml"
    text = settings.read_text()
    assert "\nbackends: []" in text  # shipped: every backend a recipe uses
    settings.write_text(text.replace("\nbackends: []", "\nbackends: [sagemaker]"))
    assert main(["render", "--root", str(root), "--crd-dir", str(SHARED_CRDS)]) == 0

    def kinds(path: Path) -> set[str]:
        built = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True,
                               text=True, timeout=120)
        assert built.returncode == 0, built.stderr
        return {d["kind"] for d in yaml.safe_load_all(built.stdout) if d}

    assert kinds(root) == {"TrainingJob", "HyperParameterTuningJob"}
    assert kinds(root / "manifests" / "kubeflow") == {"ConfigMap", "TrainingRuntime",
                                                      "TrainJob", "Experiment"}
    settings.write_text(text.replace("\nbackends: []", "\nbackends: [k8s]"))
    with pytest.raises(UserError, match="backends\\[0\\]: unknown backend 'k8s'"):
        render_all(root, write=False, crd_dir=SHARED_CRDS)


def test_the_applicationset_makes_one_application_per_backend_folder():
    import yaml

    appset = yaml.safe_load((REPO / "deploy" / "argocd" / "applicationset.yaml").read_text())
    assert appset["kind"] == "ApplicationSet"
    [generator] = appset["spec"]["generators"]
    assert generator["git"]["directories"][0] == {"path": "manifests/*"}
    folders = sorted(p.name for p in (REPO / "manifests").iterdir() if p.is_dir())
    assert {"sagemaker", "kubeflow"} <= set(folders) <= set(backends.names())
    template = appset["spec"]["template"]["spec"]
    policy = template["syncPolicy"]
    assert policy["automated"] == {"prune": False, "selfHeal": False}
    assert "Prune=false" in policy["syncOptions"]
    assert not any(o.startswith(("Replace=", "Force=")) for o in policy["syncOptions"])
    assert appset["spec"]["syncPolicy"]["preserveResourcesOnDeletion"] is True
