"""Seeded, bounded fuzz tests: hostile recipes, base files, templates and tree layouts against
`mtgrpo validate / render / diff`. Whatever the input, the contract holds: exit 0, or exit 1
with one line per problem (file, key, what, allowed), a counting last line, no traceback, and
nothing written. Each family draws its cases from a fixed seed, so a failure reproduces.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from mtgrpo.cli import main
from tests.renderkit import copy_project, snapshot

G5 = "recipes/qwen2-5-1-5b-g5.yaml"
TUNE = "recipes/qwen2-5-1-5b-tune.yaml"
TEMPLATE = "templates/trainingjob.yaml.j2"
COUNT = re.compile(r"^error: [0-9]+ problems? in [0-9]+ files?; nothing written$")
CASES = 8  # per family: the whole module runs in a few seconds


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path / "repo")


def run(capsys, root: Path, *args: str) -> tuple[int, list[str]]:
    """Run one command; check the contract; return the exit code and the error lines."""
    before = snapshot(root)
    code = main([args[0], "--root", str(root), *args[1:]])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "internal error" not in captured.err
    lines = captured.err.splitlines()
    if code == 0:
        return 0, []
    assert code == 1, captured
    if args[0] == "diff" and lines and lines[-1].startswith("manifests drift from recipes"):
        assert snapshot(root) == before
        return 1, []  # drift, shown as a diff on stdout
    assert lines and all(line.startswith("error: ") for line in lines), lines
    assert all(len(line) <= 2100 for line in lines)  # a huge value is not echoed whole
    if args[0] in ("validate", "render", "diff") and len(lines) > 1:
        assert COUNT.match(lines[-1]), lines
    if args[0] != "render" or code:
        assert snapshot(root) == before  # nothing written
    return code, lines


def recipe(root: Path, job: dict | None = None, trainer: dict | None = None,
           extra: str = "") -> str:
    """A recipe over the shipped g5 base as JSON (which is YAML), with raw text appended."""
    body = {"name": "fuzz", "extends": "base/qwen2-5-1-5b-g5.yaml",
            "trainer": trainer or {"max_steps": 10}, "job": job or {"max_run": 3600}}
    (root / "recipes/fuzz.yaml").write_text(json.dumps(body) + "\n" + extra,
                                            encoding="utf-8")
    return "recipes/fuzz.yaml"


def validate(capsys, root: Path, rel: str) -> tuple[int, list[str]]:
    return run(capsys, root, "validate", str(root / rel))


def names(lines: list[str], file: str, key: str) -> bool:
    return any(line.startswith(f"error: {file}: {key}: ") for line in lines)


def test_alias_bombs_and_deep_nesting(project, capsys):
    rng = random.Random(11)
    for _ in range(CASES):
        width, levels = rng.randint(6, 12), rng.randint(6, 9)
        lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
        (project / G5).write_text("\n".join(lines) + "\n")
        code, out = validate(capsys, project, G5)
        bomb = any("values once aliases are expanded" in line for line in out)
        assert code == 1 and bomb == (width ** levels > 100_000), out
    for _ in range(CASES):
        depth = rng.randint(65, 900)
        text = ("job: " + "{a: " * depth + "1" + "}" * depth) if rng.random() < 0.5 else \
            "".join(" " * i + "k:\n" for i in range(depth)) + " " * depth + "v\n"
        (project / G5).write_text(text)
        code, out = validate(capsys, project, G5)
        assert code == 1 and (any("nested more than 64 levels" in line for line in out)
                              or any("invalid YAML" in line for line in out)), out
    (project / G5).write_text("x: " + "y" * 1_100_000 + "\n")
    code, out = validate(capsys, project, G5)
    assert code == 1 and "characters long" in out[0]
    rel = recipe(project, job={"instance_type": "ml." + "x" * 200_000})  # echoed, shortened
    code, out = validate(capsys, project, rel)
    assert code == 1 and names(out, rel, "job.instance_type") and "characters ...]" in out[0]


INT_KEYS = [("job", "max_run"), ("job", "volume_size"), ("job", "instance_count"),
            ("job", "max_retry_attempts"), ("trainer", "max_steps"), ("trainer", "seed"),
            ("trainer", "save_steps")]


def test_integers_beyond_what_sagemaker_or_kubernetes_accept(project, capsys):
    rng = random.Random(12)
    for _ in range(CASES):
        section, key = rng.choice(INT_KEYS)
        value = rng.choice([str(2 ** 31), str(2 ** 31 + rng.randint(1, 10 ** 9)),
                            str(2 ** 63), "1" + "0" * rng.randint(20, 5000),
                            str(-(2 ** 31) - rng.randint(1, 9))])
        rel = recipe(project, **{section: {key: "@INT@"}})
        path = project / rel
        path.write_text(path.read_text().replace('"@INT@"', value))  # json.dumps refuses 10**5000
        code, out = validate(capsys, project, rel)
        assert code == 1 and names(out, rel, f"{section}.{key}"), (key, value, out)


def test_regions_botocore_does_not_know(project, capsys):
    rng = random.Random(13)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
    for _ in range(CASES):
        region = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        rel = recipe(project, job={"region": region})
        code, out = validate(capsys, project, rel)
        assert code == 1 and names(out, rel, "job.region"), out
    code, _ = validate(capsys, project, recipe(project, job={"region": "eu-central-1"}))
    assert code == 0


LINE_ENDS = ["\r", "\x85", "\u2028", "\u2029", "\n", "\r\n"]
STRING_KEYS = [("trainer", "model_name_or_path", "Qwen/Qwen2.5-1.5B-Instruct"),
               ("trainer", "vllm_server_url", "http://127.0.0.1:8000"),
               ("job", "output_path", "s3://amzn-s3-demo-bucket/out"),
               ("job", "checkpoint_s3_uri", "s3://amzn-s3-demo-bucket/ckpt")]


def test_line_terminators_that_sagemaker_patterns_refuse(project, capsys):
    rng = random.Random(14)
    for _ in range(CASES):
        section, key, good = rng.choice(STRING_KEYS)
        cut = rng.randint(0, len(good))
        bad = good[:cut] + rng.choice(LINE_ENDS) + good[cut:]
        rel = recipe(project, **{section: {key: bad}})
        code, out = validate(capsys, project, rel)
        assert code == 1 and any(line.startswith(f"error: {rel}: {section}.{key}")
                                 for line in out), (repr(bad), out)


def test_extends_stays_inside_the_repository(project, capsys, tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text("job: {role: 'arn:aws:iam::111122223333:role/stolen'}\n")
    base = project / "recipes/base"
    (base / "link.yaml").symlink_to(outside)
    (base / "loop-a.yaml").symlink_to(base / "loop-b.yaml")
    (base / "loop-b.yaml").symlink_to(base / "loop-a.yaml")
    (base / "self.yaml").symlink_to(base / "self.yaml")
    (base / "folder.yaml").mkdir()
    os.mkfifo(base / "pipe.yaml")
    depth = len(project.parts)
    targets = [str(outside), "../" * depth + str(outside).lstrip("/"), "../../../outside.yaml",
               "base/link.yaml", "base/loop-a.yaml", "base/self.yaml", "base/folder.yaml",
               "base/pipe.yaml", "~/x.yaml"]
    for target in targets:
        rel = recipe(project, extra="")
        text = (project / rel).read_text().replace('"base/qwen2-5-1-5b-g5.yaml"',
                                                   json.dumps(["base/qwen2-5-1-5b-g5.yaml",
                                                               target]))
        (project / rel).write_text(text)
        code, out = validate(capsys, project, rel)
        assert code == 1 and names(out, rel, "extends"), (target, out)
        assert not any("stolen" in line for line in out)
    (project / "recipes/evil.yaml").symlink_to(outside)  # a recipe that is a link outside
    code, out = run(capsys, project, "validate")
    assert code == 1 and any(line.startswith("error: recipes/evil.yaml: ") for line in out)
    (project / "recipes/evil.yaml").unlink()
    settings = project / "recipes/_project.yaml"
    settings.unlink()
    settings.symlink_to(outside)  # project settings read from outside
    code, out = run(capsys, project, "validate")
    assert code == 1 and out[0].startswith("error: recipes/_project.yaml: resolves to a file "
                                           "outside the repository")
    settings.unlink()
    settings.symlink_to(settings)
    code, out = run(capsys, project, "validate")
    assert code == 1 and out[0].startswith("error: recipes/_project.yaml: is a symlink loop")


def test_templates_stay_inside_the_repository(project, capsys, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(project / "templates", elsewhere)
    shutil.rmtree(project / "templates")
    (project / "templates").symlink_to(elsewhere)
    code, out = run(capsys, project, "validate")
    assert code == 1 and any(line.startswith(f"error: {TEMPLATE}: ") and "outside" in line
                             for line in out), out


def _template_edits(text: str) -> list[tuple[str, bytes]]:
    return [
        ("undefined variable", text.replace("{{ job.role | json }}",
                                            "{{ job.rolle | json }}").encode()),
        ("undefined name", text.replace("roleARN: {{ job.role | json }}",
                                        "roleARN: {{ nothing | json }}").encode()),
        ("failing expression", text.replace("{{ job.max_run | json }}",
                                            "{{ (job.max_run / 0) | json }}").encode()),
        ("not UTF-8", text.encode().replace(b"spec:", b"spec: \xff", 1)),
        ("unknown field", text.replace("instanceType:", "instanceTyp:").encode()),
        ("required field removed", re.sub(r"(?m)^  roleARN:.*\n", "", text).encode()),
        ("syntax", text.replace("{{ job.role | json }}", "{{ job.role | json }").encode()),
    ]


def test_template_errors_name_the_template(project, capsys):
    original = (project / TEMPLATE).read_text()
    for what, data in _template_edits(original):
        (project / TEMPLATE).write_bytes(data)
        code, out = run(capsys, project, "validate")
        assert code == 1, what
        assert any(line.startswith(f"error: {TEMPLATE}: ") for line in out), (what, out)
        assert not any(line.startswith("error: recipes/") for line in out), (what, out)
    (project / TEMPLATE).write_text(original)
    assert run(capsys, project, "validate")[0] == 0


def test_manifests_of_the_wrong_type_or_encoding_are_drift(project, capsys, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET\n")
    manifests = project / "manifests"
    first = sorted(p for p in (manifests / "sagemaker").iterdir()
                   if p.name != "kustomization.yaml")[0]

    def non_utf8(): first.write_bytes(b"\xff\xfe not yaml")
    def directory(): first.unlink(); first.mkdir(); (first / "x").write_text("x")
    def link(): first.unlink(); first.symlink_to(secret)
    def fifo(): first.unlink(); os.mkfifo(first)
    def orphan_dir(): (manifests / "zz-extra.yaml").mkdir()
    def kustomization_dir(): (project / "kustomization.yaml").unlink(); \
        (project / "kustomization.yaml").mkdir()
    def backend_link(): shutil.rmtree(manifests / "kubeflow"); \
        (manifests / "kubeflow").symlink_to(tmp_path)
    def manifests_link(): shutil.rmtree(manifests); manifests.symlink_to(tmp_path)
    def manifests_file(): shutil.rmtree(manifests); manifests.write_text("x")

    clean = {p.relative_to(project): p.read_bytes() for p in manifests.rglob("*")
             if p.is_file()}
    for edit in (non_utf8, directory, link, fifo, orphan_dir, kustomization_dir,
                 backend_link, manifests_link, manifests_file):
        edit()
        code, _ = run(capsys, project, "diff")
        captured_out = capsys.readouterr().out
        assert code == 1 and "TOP-SECRET" not in captured_out, edit.__name__
        assert run(capsys, project, "render")[0] == 0, edit.__name__
        assert run(capsys, project, "diff")[0] == 0, edit.__name__
        assert {p.relative_to(project): p.read_bytes()
                for p in manifests.rglob("*") if p.is_file()} == clean, edit.__name__
    assert secret.read_text() == "TOP-SECRET\n" and list(tmp_path.iterdir())


def test_null_unsets_a_base_value(project, capsys):
    for key, ok in (("volume_size", True), ("tags", True), ("max_run", True),
                    ("role", False), ("inputs", False)):
        rel = recipe(project, extra="")
        text = (project / rel).read_text().replace('"max_run": 3600', f'"{key}": null')
        (project / rel).write_text(text)
        code, out = validate(capsys, project, rel)
        assert (code == 0) is ok, (key, out)
        if not ok:
            assert names(out, rel, f"job.{key}") and "required value is missing" in out[0]
    code, _ = validate(capsys, project, recipe(project, trainer={"learning_rate": None}))
    assert code == 0


def test_yaml_1_1_only_numbers_are_refused(project, capsys):
    for key, text in (("max_run", "60:00"), ("volume_size", "0755"), ("max_run", "1_000"),
                      ("volume_size", "0b101"), ("max_run", "1:30:00"),
                      ("instance_count", "+0644")):
        rel = recipe(project)
        path = project / rel
        path.write_text(path.read_text().replace('{"max_run": 3600}', "{" + key + ": "
                                                 + text + "}"))
        code, out = validate(capsys, project, rel)
        assert code == 1 and names(out, rel, f"job.{key}") and "YAML 1.1" in out[0], out


def test_unquoted_off_is_the_string_everywhere(project, capsys):
    path = project / TUNE
    path.write_text(path.read_text().replace('early_stopping_type: "Off"',
                                             "early_stopping_type: Off"))
    assert run(capsys, project, "validate")[0] == 0
    path.write_text(path.read_text().replace("strategy: Bayesian", "strategy: Hyperband"))
    assert run(capsys, project, "validate")[0] == 0  # Hyperband needs Off: the rule sees it


def test_random_byte_mutations_of_recipes_and_bases(project, capsys):
    """The general case: random edits of a recipe and a base file never break the contract."""
    rng = random.Random(15)
    files = [G5, TUNE, "recipes/base/account.yaml"]
    originals = {rel: (project / rel).read_bytes() for rel in files}
    noise = [b"\x00", b"\xff", b"&a", b"*a", b"!!set", b": ", b"- ", b"{", b"[", b"'", b'"',
             b"\r", "\u2028".encode(), b"\t", b"99999999999999999999999", b"0755", b"60:00",
             b"null", b"~", b"<<: *a", b"\n  ", b"#", b"%YAML 1.1\n---\n", b"---\n"]
    for _ in range(CASES * 3):
        rel = rng.choice(files)
        data = bytearray(originals[rel])
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(data))
            if rng.random() < 0.3 and at < len(data):
                del data[at:at + rng.randint(1, 8)]
            else:
                data[at:at] = rng.choice(noise)
        (project / rel).write_bytes(bytes(data))
        run(capsys, project, "validate")
        (project / rel).write_bytes(originals[rel])


def test_a_project_crd_directory_that_is_broken(project, capsys):
    """`crd_dir` in _project.yaml may name the project's own CRDs: read them as hostile too."""
    from mtgrpo.validate import default_crd_dir

    crds = project / "crds"
    crds.mkdir()
    for path in default_crd_dir().glob("sagemaker.*.yaml"):
        shutil.copy(path, crds / path.name)
    if (default_crd_dir() / "kubeflow").is_dir():  # the Kubeflow recipes' CRDs
        shutil.copytree(default_crd_dir() / "kubeflow", crds / "kubeflow")
    settings = project / "recipes/_project.yaml"
    settings.write_text(re.sub(r"(?m)^crd_dir:.*\n", "", settings.read_text()) + "crd_dir: crds\n")
    assert run(capsys, project, "validate")[0] == 0
    crd = crds / "sagemaker.services.k8s.aws_trainingjobs.yaml"
    good = crd.read_bytes()
    for bad in (b"\xff\xfe", b"a: &a [x, x]\nb: [*a, *a]\n", b"{" * 2000,
                good.replace(b"type: object", b"type: 5", 1),
                good.replace(b"kind: TrainingJob", b"kind: [1]", 1),
                b"kind: CustomResourceDefinition\nspec: 3\n"):
        crd.write_bytes(bad)
        code, out = run(capsys, project, "validate")
        assert code == 1 and out, bad[:30]


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


LAYOUTS = {  # an edit of the tree -> whether validate may still pass
    "recipes is a file": (lambda r: (shutil.rmtree(r / "recipes"),
                                     (r / "recipes").write_text("x")), False),
    "templates is a file": (lambda r: (shutil.rmtree(r / "templates"),
                                       (r / "templates").write_text("x")), True),  # packaged
    "template is a directory": (lambda r: _directory(r / TEMPLATE), False),
    "template is a FIFO": (lambda r: _fifo(r / TEMPLATE), False),
    "recipe is a directory": (lambda r: (r / "recipes/zz.yaml").mkdir(), False),
    "recipe is a FIFO": (lambda r: os.mkfifo(r / "recipes/zz.yaml"), False),
    "settings is a FIFO": (lambda r: _fifo(r / "recipes/_project.yaml"), False),
    "base directory loops": (lambda r: (shutil.rmtree(r / "recipes/base"),
                                        (r / "recipes/base").symlink_to(r / "recipes/base")),
                             False),
    "empty recipe": (lambda r: (r / "recipes/zz.yaml").write_text(""), False),
    "recipe is a list": (lambda r: (r / "recipes/zz.yaml").write_text("- a\n"), False),
    "kustomization is a FIFO": (lambda r: _fifo(r / "kustomization.yaml"), True),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_tree_layouts(tmp_path, capsys, layout):
    root = copy_project(tmp_path / "repo")
    edit, may_pass = LAYOUTS[layout]
    edit(root)
    code, out = run(capsys, root, "validate")
    assert code == 0 if may_pass else code == 1 and out
    run(capsys, root, "diff")  # drift or problems, never a hang or a traceback
