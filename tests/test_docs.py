"""The docs stay true: every `mtgrpo` command and flag they cite exists in the real CLI parser,
every `python -m mtgrpo...` module exists, every recipe key (`job.*`, `tuning.*`, `trainer.*`)
exists in the recipe schema or the trainer config, every repository path exists, every concrete
job name of a shipped recipe is one `mtgrpo render` writes, and nothing cites a file outside
the repository (FACTS.md)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import shlex
from pathlib import Path

import pytest

from mtgrpo.cli import COMMANDS, _command_parser
from mtgrpo.contract.config import field_specs
from mtgrpo.recipes import schema

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted([REPO / "README.md", REPO / "recipes" / "local" / "README.md",
               *(REPO / "docs").glob("*.md")])
CODE = sorted(p for d in ("mtgrpo", "tests", "templates", "scripts", "benchmarks", "docker")
              for p in (REPO / d).rglob("*") if p.suffix in (".py", ".j2", ".sh", ".yaml"))
_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_INLINE = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"(?<![\w./-])((?:docs|mtgrpo|tests|recipes|benchmarks|docker|scripts|deploy|"
                   r"templates|\.ci)/[\w./-]*[\w-](?:\.(?:md|py|yaml|yml|sh|j2|json|jsonl|lock|in|"
                   r"txt|png|toml))?)")
_KEY = re.compile(r"(job|tuning|trainer)\.([a-z_]+)(?:\.([a-z_]+))?")
_SUBSECTIONS = {("job", "debugger_hook_config"): schema.DEBUGGER,
                ("tuning", "completion_criteria"): schema.COMPLETION_CRITERIA,
                ("tuning", "warm_start"): schema.WARM_START,
                ("job", "security_exceptions"): {"enable_network_isolation": 1,
                                                 "encrypt_inter_container_traffic": 1}}


def _name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _commands(text: str) -> list[str]:
    """`mtgrpo ...` and `python -m mtgrpo...` command lines in code blocks and inline code."""
    found = []
    for block in _FENCE.findall(text):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = re.sub(r"^\s*(\$\s*)?", "", line)
            for part in re.split(r"\s*(?:&&|\|\||;)\s*", line):
                if re.match(r"(mtgrpo|python3? -m mtgrpo|\.venv/bin/python -m mtgrpo)\b", part):
                    found.append(part)
    for span in _INLINE.findall(text):
        if re.match(r"(mtgrpo|python3? -m mtgrpo)[ .]", span):
            found.append(span)
    return found


def _tokens(command: str) -> list[str]:
    command = re.sub(r"\s#.*$", "", command)
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    return tokens


def _check_command(command: str) -> list[str]:
    tokens = _tokens(command)
    if tokens[:2] in (["python", "-m"], ["python3", "-m"], [".venv/bin/python", "-m"]):
        module = tokens[2]
        return [] if importlib.util.find_spec(module) else [f"no module {module}"]
    if len(tokens) < 2 or tokens[1].startswith("-") or not re.fullmatch(r"[a-z]+", tokens[1]):
        return []  # `mtgrpo --help`, `mtgrpo (JOB | ...)`: not a subcommand call
    if tokens[1] not in COMMANDS:
        return [f"no command `mtgrpo {tokens[1]}`"]
    parser, _ = _command_parser(tokens[1])
    known = set(parser._option_string_actions)
    bad = []
    for token in tokens[2:]:
        flag = token.strip("[]()|.,").split("=")[0]
        if re.fullmatch(r"--?[a-zA-Z][-a-zA-Z]*", flag) and flag not in known:
            bad.append(f"`mtgrpo {tokens[1]}` has no option {flag}")
    return bad


def _check_key(span: str) -> list[str]:
    """`job.role`, `trainer.beta: 0.0`, `trainer.x = y`; not `job.py` nor `trainer.method()`."""
    head, _, rest = span.partition(" ")
    if rest and not re.match(r"[=:]", rest):
        return []
    head = head.rstrip(":")
    match = _KEY.fullmatch(head)
    if not match or "(" in span or re.search(r"\.(py|md|yaml|json)$", head):
        return []
    section, key, sub = match.groups()
    keys = {"job": schema.JOB, "tuning": schema.TUNING, "trainer": field_specs()}[section]
    if key not in keys:
        return [f"`{section}.{key}` is not a key of {section}:"]
    subkeys = _SUBSECTIONS.get((section, key))
    if sub and subkeys is not None and sub not in subkeys:
        return [f"`{section}.{key}.{sub}` is not a key of {section}.{key}"]
    return []


def _problems_of(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    problems = []
    for command in _commands(text):
        problems += [f"{command!r}: {p}" for p in _check_command(command)]
    for span in _INLINE.findall(text):
        problems += _check_key(span.strip())
    for path in _PATH.findall(text):
        if "<" in path or "*" in path:
            continue
        if not (REPO / path).exists() and not path.startswith("recipes/local/tiny-model"):
            problems.append(f"path {path} does not exist")
    if "FACTS" in text:
        problems.append("cites FACTS.md, which is not in the repository")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_command_flag_key_and_path_a_doc_cites_exists(doc):
    problems = _problems_of(doc)
    assert not problems, f"{_name(doc)}:\n  " + "\n  ".join(problems)


def test_code_cites_only_docs_that_exist():
    missing = sorted({f"{_name(p)}: {m}" for p in CODE if p.name != "test_docs.py"
                      for m in re.findall(r"docs/[\w-]+\.md", p.read_text(errors="replace"))
                      if not (REPO / m).is_file()})
    assert not missing, missing


def test_concrete_job_names_of_shipped_recipes_are_rendered():
    """Examples use `<recipe>-<hash>`; a concrete hash must be a job `mtgrpo render` writes."""
    recipes = [p.stem for p in (REPO / "recipes").glob("*.yaml") if not p.name.startswith("_")]
    rendered = {p.name.rsplit("-", 1)[0] for p in (REPO / "manifests").glob("*/*-*.yaml")}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, recipes)) + r")-([0-9a-f]{10})\b")
    stale = sorted({f"{_name(doc)}: {m.group(0)}" for doc in DOCS
                    for m in pattern.finditer(doc.read_text()) if m.group(0) not in rendered})
    assert not stale, stale


def test_the_checker_catches_what_it_should(tmp_path):
    """The checks themselves: each of these breaks is found."""
    assert _check_command("mtgrpo render --no-such-flag")
    assert _check_command("mtgrpo frobnicate")
    assert _check_command("python -m mtgrpo.no_such_module")
    assert not _check_command("mtgrpo logs JOB --follow")
    assert _check_key("trainer.packed_logprobs")
    assert _check_key("trainer.packed_logprobs = False")
    assert not _check_key("trainer.request_save_and_stop()") and not _check_key("job.py")
    assert _check_key("job.enable_network_isolaton")
    assert _check_key("tuning.warm_start.parent")
    assert not _check_key("job.security_exceptions.enable_network_isolation")
    doc = tmp_path / "x.md"
    doc.write_text("See docs/no-such.md and FACTS §1.\n")
    assert len(_problems_of(doc)) == 2


def test_docs_metrics_lists_every_contract_metric():
    from mtgrpo.contract import METRICS

    text = (REPO / "docs" / "metrics.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \|$", text, re.M))
    assert {k: v for k, v in rows.items() if k in METRICS} == METRICS


_OFFLINE = {"validate", "render", "diff", "pipeline"}


def _offline_commands() -> list[str]:
    """Concrete offline `mtgrpo` command lines in the docs' code blocks (no placeholders)."""
    found = set()
    for doc in DOCS:
        for block in _FENCE.findall(doc.read_text()):
            for command in _commands("```\n" + block + "```"):
                tokens = _tokens(command)
                if (len(tokens) > 1 and tokens[0] == "mtgrpo" and tokens[1] in _OFFLINE
                        and not any(re.search(r"[<>\[\]()|]|\.\.\.|^[A-Z]+$", t)
                                    for t in tokens)):
                    found.add(" ".join(tokens))
    return sorted(found)


@pytest.mark.parametrize("command", _offline_commands())
def test_offline_doc_commands_run(command, tmp_path, monkeypatch):
    """Each offline command the docs show runs as shown, in a copy of this repository."""
    from mtgrpo.cli import main
    from tests.renderkit import copy_project

    root = copy_project(tmp_path / "repo")
    shutil.copytree(REPO / "deploy", root / "deploy")
    monkeypatch.chdir(root)
    assert main(_tokens(command)[1:]) == 0, command
    for target in ("deploy/pipelines/rbac.yaml",):  # written by a doc command: unchanged
        assert (root / target).read_bytes() == (REPO / target).read_bytes()


def test_tasks_doc_shows_the_exact_episode_layout():
    """docs/tasks.md's "What the model sees" is the text the environment builds, token for
    token: the system prompt from the tool, the chat template, the tool-result frame."""
    import re

    from mtgrpo.task import FunctionTool
    from mtgrpo.testing.tiny import build_tokenizer
    from mtgrpo.trainer.environment import EnvironmentFrame
    from mtgrpo.trainer.parsers import XMLParser

    lookup = FunctionTool(
        lambda sku: sku, name="lookup", description="Finds an item of the catalogue by its SKU.",
        parameters={"type": "object", "required": ["sku"], "additionalProperties": False,
                    "properties": {"sku": {"type": "string", "description": "e.g. A-1042"}}},
        example_args={"sku": "A-1042"})
    tokenizer, parser = build_tokenizer(), XMLParser()
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": parser.system_prompt([lookup])},
         {"role": "user", "content": "How much is item A-1042?"}],
        tokenize=False, add_generation_prompt=True)
    call = ('<reasoning>\nI should look the item up.\n</reasoning>\n<tool>\n{"name": "lookup", '
            '"args": {"sku": "A-1042"}}\n</tool><|im_end|>')
    result = EnvironmentFrame.from_tokenizer(tokenizer).text(
        parser.format_tool_result("Desk lamp: 24 EUR"), strip_prefix="<|im_end|>")
    answer = ("<reasoning>\nThe result names the price.\n</reasoning>\n<answer>\n24 EUR\n"
              "</answer><|im_end|>")
    text = (REPO / "docs" / "tasks.md").read_text()
    shown = re.search(r"## What the model sees\n.*?```text\n(.*?)\n```", text, re.S).group(1)
    assert shown == prompt + call + result + answer


def test_recipes_doc_lists_every_shipped_recipe():
    """docs/recipes.md's tree of recipes/ names every recipe the project ships."""
    from mtgrpo.recipes import discover_recipes

    text = (REPO / "docs" / "recipes.md").read_text()
    tree = text.split("```", 2)[1]
    missing = [p.name for p in discover_recipes(REPO / "recipes") if f"  {p.name} " not in tree]
    assert not missing, f"add to the recipes/ tree in docs/recipes.md: {missing}"
