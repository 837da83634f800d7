"""The task plug-in API: the contract of tools and rewards, loading plug-ins by name or path,
the ``task_*`` keys' shapes, the render-time source check, the code channel, the example task."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from mtgrpo.contract.config import TrainerConfig
from mtgrpo.contract.task_paths import check_task_paths
from mtgrpo.errors import UserError
from mtgrpo.task import Episode, FunctionTool, Record, RewardFunction, Rubric, Turn, reward
from mtgrpo.task.loading import check_task, load_task
from mtgrpo.trainer.parsers import get_parser
from mtgrpo.trainer.paths import RunPaths
from mtgrpo.trainer.rewards import COMPONENTS, RewardWeights, score_episode

from test_environment import ScriptedSampler, make_env, record

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
XML = get_parser("xml")


def config(**values) -> TrainerConfig:
    return TrainerConfig(model_name_or_path="m", **values)


def paths(tmp_path: Path, corpus: Path | None = FIXTURES / "corpus") -> RunPaths:
    return RunPaths("m", FIXTURES / "qa" / "train.jsonl", None, corpus, tmp_path,
                    tmp_path / "model", tmp_path / "ckpt")


def episode(*turns: tuple[str, str, bool | None], aliases=("Paris",), info=None) -> Episode:
    rec = Record("r", "Capital of France?", tuple(aliases), info=info or {})
    return Episode(record=rec, prompt_ids=[1],
                   turns=[Turn(role, text, [0], tool_ok=ok) for role, text, ok in turns])


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A user package ``usertask`` on sys.path, written from ``source``; returns a writer."""
    root = tmp_path / "code"
    (root / "usertask").mkdir(parents=True)
    (root / "usertask" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root))

    def write(source: str, module: str = "plugins") -> str:
        (root / "usertask" / f"{module}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(f"usertask.{module}", None)
        return f"usertask.{module}"

    yield write
    for name in [m for m in sys.modules if m.startswith("usertask")]:
        del sys.modules[name]


# -- the API ------------------------------------------------------------------------------------

def test_api_imports_without_torch():
    code = ("import sys, mtgrpo.task, mtgrpo.task.loading, mtgrpo.examples.arithmetic, "
            "mtgrpo.contract.task_paths; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_builtin_names_match_their_implementations():
    from mtgrpo.contract import task_spec
    from mtgrpo.task import builtin
    from mtgrpo.trainer.rewards import BUILTIN_REWARDS

    assert set(task_spec.BUILTIN_TOOLS) == set(builtin.TOOLS)
    assert set(task_spec.BUILTIN_PARSERS) == set(builtin.PARSERS)
    assert set(task_spec.BUILTIN_RECORDS) == set(builtin.RECORDS)
    assert task_spec.BUILTIN_REWARDS == tuple(BUILTIN_REWARDS) == COMPONENTS


def test_rubric_sums_turn_and_outcome_and_logs_zero_weights():
    rubric = Rubric((RewardFunction("a", lambda e: 1.0, "turn", 0.5),
                     RewardFunction("b", lambda e: 0.5, "outcome", 2.0),
                     RewardFunction("c", lambda e: 1.0, "outcome", 0.0)))
    got = rubric.score(episode())
    assert (got.turn, got.outcome) == (0.5, 1.0)
    assert got.components == {"a": 1.0, "b": 0.5, "c": 1.0}  # weight 0: logged all the same


def test_reward_decorator_parser_argument_and_bad_values():
    @reward(level="turn", weight=0.3)
    def called(episode, parser):
        return float(parser is XML)

    assert (called.name, called.level, called.weight) == ("called", "turn", 0.3)
    assert called(episode(), XML) == 1.0
    assert called.with_weight(2).weight == 2.0 and called.with_weight(2).level == "turn"
    with pytest.raises(ValueError, match="reward nan returned nan"):
        RewardFunction("nan", lambda e: float("nan"))(episode())
    with pytest.raises(ValueError, match="returned str, not a number"):
        RewardFunction("text", lambda e: "high")(episode())
    with pytest.raises(ValueError, match="level must be turn or outcome"):
        RewardFunction("x", lambda e: 0.0, "episode")
    with pytest.raises(ValueError, match=r"reward name 'Bad-Name' must match"):
        RewardFunction("Bad-Name", lambda e: 0.0)
    with pytest.raises(ValueError, match="taken by the metric reward_turn"):
        RewardFunction("turn", lambda e: 0.0)
    with pytest.raises(ValueError, match="repeated: x"):
        Rubric((RewardFunction("x", lambda e: 0.0), RewardFunction("x", lambda e: 1.0)))


def test_function_tool_schema_and_errors_through_the_environment(tok):
    from mtgrpo.trainer.tools.base import execute_tool_call
    from mtgrpo.trainer.types import ParsedTurn, ToolCall

    def divide(a: float, b: float) -> str:
        return str(a / b)

    tool = FunctionTool(divide, name="divide", description="a / b", parameters={
        "type": "object", "required": ["a", "b"], "additionalProperties": False,
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}}})
    tools = {"divide": tool}
    run = lambda **args: execute_tool_call(tools, ParsedTurn(tool_call=ToolCall("divide", args)))
    assert run(a=6, b=3) == ("2.0", True)
    assert run(a=1, b=0) == ("Error: divide failed: ZeroDivisionError: division by zero", False)
    assert run(a="x", b=1) == ("Error: invalid arguments for divide: argument 'a': 'x' is not "
                               "of type 'number'", False)
    with pytest.raises(ValueError, match="JSON schema of type object"):
        FunctionTool(divide, name="d", description="", parameters={"type": "string"})


@pytest.fixture(scope="module")
def tok():
    from mtgrpo.testing.tiny import build_tokenizer

    return build_tokenizer()


CALL = '<reasoning>x</reasoning>\n<tool>{"name": "%s", "args": {"query": "%s"}}</tool>'


def test_async_and_sync_tools_in_one_turn_keep_their_order(tok):
    """Async tools are awaited together on the loop; sync ones run in threads; results land in
    call order; an async tool's exception is an error result."""
    started = []

    async def slow_echo(query: str) -> str:
        started.append(query)
        await asyncio.sleep(0.2)
        if query == "boom":
            raise RuntimeError("async failure")
        return f"async {query}"

    schema = {"type": "object", "required": ["query"],
              "properties": {"query": {"type": "string"}}}
    tools = {"aecho": FunctionTool(slow_echo, name="aecho", description="", parameters=schema),
             "secho": FunctionTool(lambda query: f"sync {query}", name="secho", description="",
                                   parameters=schema)}
    questions = ["q0?", "q1?", "q2?", "q3?"]
    script = {"q0?": [CALL % ("aecho", "a"), "<answer>x</answer>"],
              "q1?": [CALL % ("secho", "b"), "<answer>x</answer>"],
              "q2?": [CALL % ("aecho", "c"), "<answer>x</answer>"],
              "q3?": [CALL % ("aecho", "boom"), "<answer>x</answer>"]}
    env = make_env(tok, tools=tools)
    import time

    t0 = time.perf_counter()
    episodes = env.rollout_sync([record(q, i) for i, q in enumerate(questions)], 1,
                                ScriptedSampler(tok, script))
    assert time.perf_counter() - t0 < 0.55  # three 0.2 s async calls ran together
    results = [XML.extract_tool_result(ep.turns[1].text) for ep in episodes]
    assert results == ["async a", "sync b", "async c",
                       "Error: aecho failed: RuntimeError: async failure"]
    assert [ep.turns[1].tool_ok for ep in episodes] == [True, True, True, False]
    env.close()


# -- the trainer config's task_* keys -----------------------------------------------------------

def test_task_keys_shapes_are_all_reported_in_one_run():
    with pytest.raises(UserError) as err:
        TrainerConfig.from_mapping({
            "model_name_or_path": "m", "task_tools": "wiki_serch,pkg.mod:,pkg.mod:tool",
            "task_rewards": "exact_match=high,triviaqa=2,f1,triviaqa",
            "task_parser": "xml,qwen", "task_records": "csv"},
            source="recipes/r.yaml", key_prefix="trainer")
    assert err.value.lines() == [
        "recipes/r.yaml: trainer.task_tools: unknown tool 'wiki_serch'; did you mean "
        "'wiki_search'? (allowed: built-in tools wiki_search, or a package.module:object path)",
        "recipes/r.yaml: trainer.task_tools: 'pkg.mod:' is not a valid package.module:object "
        "path (allowed: built-in tools wiki_search, or a package.module:object path)",
        "recipes/r.yaml: trainer.task_rewards: invalid weight 'high' for 'exact_match' "
        "(allowed: a finite number, e.g. exact_match=1.0)",
        "recipes/r.yaml: trainer.task_rewards: 'triviaqa' takes no weight (its rewards are "
        "weighted by their reward_* keys) (allowed: triviaqa, or its rewards one by one with "
        "weights)",
        "recipes/r.yaml: trainer.task_rewards: 'f1' named twice (allowed: each plug-in once)",
        "recipes/r.yaml: trainer.task_rewards: 'answer_contains', 'answer_in_result', "
        "'exact_match', 'f1', 'format', 'tool_execution', 'xml_count' named twice (allowed: "
        "each plug-in once)",
        "recipes/r.yaml: trainer.task_parser: names one plug-in, got a list (allowed: one "
        "built-in name or package.module:object path)",
        "recipes/r.yaml: trainer.task_records: unknown record loader 'csv' (allowed: built-in "
        "record loaders triviaqa, or a package.module:object path)",
    ]


def test_task_keys_round_trip_as_hyperparameter_strings():
    cfg = config(task_tools="a.b:c,wiki_search", task_rewards="a.b:r=0.5,exact_match",
                 task_parser="qwen", task_records="a.b:load")
    hp = cfg.to_hyperparameters()
    assert hp["task_rewards"] == "a.b:r=0.5,exact_match"
    assert TrainerConfig.from_hyperparameters(hp) == cfg


# -- loading ------------------------------------------------------------------------------------

def test_default_task_is_todays_triviaqa_task(tmp_path):
    cfg = config(reward_f1=0.3, reward_format=0.0)
    task = load_task(cfg, paths(tmp_path))
    try:
        assert list(task.tools) == ["wiki_search"]
        assert task.parser.name == "xml"
        assert [r.name for r in task.rubric.rewards] == list(COMPONENTS)
        assert task.rubric.weights == {**vars(RewardWeights()), "f1": 0.3, "format": 0.0}
        ep = episode(("assistant", CALL % ("wiki_search", "France"), None),
                     ("tool", "<result>\nParis is the capital.\n</result>", True),
                     ("assistant", "<reasoning>r</reasoning>\n<answer>Paris</answer>", None))
        assert task.score(ep) == score_episode(ep, XML, RewardWeights.from_config(cfg))
        from mtgrpo.trainer.data import load_records

        assert task.load_records is load_records
    finally:
        task.close()


def test_builtin_rewards_by_name_take_reward_key_weights_or_their_own(tmp_path):
    cfg = config(task_tools="", task_rewards="exact_match,format=0.5", reward_exact_match=2.0,
                 task_parser="qwen")
    task = load_task(cfg, paths(tmp_path, corpus=None))
    assert task.tools == {} and task.parser.name == "qwen"
    assert task.rubric.weights == {"exact_match": 2.0, "format": 0.5}


def test_plugins_by_path(tmp_path, plugin):
    module = plugin("""
        from mtgrpo.task import FunctionTool, Record, reward

        ECHO = {"type": "object", "properties": {"text": {"type": "string"}}}
        echo = FunctionTool(lambda text: text, name="echo", description="Echoes.",
                            parameters=ECHO)

        class Counter:                      # a class: instantiated with the context
            description = "Counts words."
            parameters = ECHO
            def __init__(self, context):
                self.name = f"count_{context.config.max_turns}"
            def __call__(self, text):
                return str(len(text.split()))

        def toolset():                      # a function factory without arguments: a list
            return [FunctionTool(str.upper, name="upper", description="", parameters=ECHO)]

        @reward(level="turn", weight=0.25)
        def used_tool(episode):
            return float(episode.tool_calls > 0)

        def answered(episode, parser):      # a plain function: an outcome reward of weight 1
            return float(parser.final_answer(episode) is not None)

        from mtgrpo.trainer.parsers import XMLParser
        class MyParser(XMLParser):
            def system_prompt(self, tools):
                return "Use " + ", ".join(t.name for t in tools)

        def load(path):
            return [Record("1", "Q?", ("a",), info={"n": 1})]
    """)
    cfg = config(task_tools=f"{module}:echo,{module}:Counter,{module}:toolset",
                 task_rewards=f"{module}:used_tool,{module}:answered=3,exact_match",
                 task_parser=f"{module}:MyParser", task_records=f"{module}:load")
    check_task(cfg)
    task = load_task(cfg, paths(tmp_path, corpus=None))
    assert list(task.tools) == ["echo", "count_3", "upper"]
    assert task.parser.system_prompt(list(task.tools.values())) == "Use echo, count_3, upper"
    assert [(r.name, r.level, r.weight) for r in task.rubric.rewards] == [
        ("used_tool", "turn", 0.25), ("answered", "outcome", 3.0),
        ("exact_match", "outcome", 1.0)]
    assert task.load_records(Path("x"))[0].info == {"n": 1}
    ep = episode(("assistant", CALL % ("echo", "x"), None), ("tool", "<result>x</result>", True),
                 ("assistant", "<answer>Paris</answer>", None))
    got = task.score(ep)
    assert (got.turn, got.outcome) == (0.25, 3.0 + 1.0)


def test_bad_plugins_are_one_line_each_all_in_one_error(tmp_path, plugin):
    module = plugin("""
        NUMBER = 3
        def broken_factory(context):
            raise RuntimeError("database unreachable")
        class Bare:
            pass
    """)
    plugin("import no_such_dependency\n", module="needs_dep")
    cfg = config(task_tools=f"nosuch.pkg:tool,{module}:missing,{module}:NUMBER,"
                            f"{module}:broken_factory,usertask.needs_dep:tool",
                 task_rewards=f"{module}:Bare", task_parser=f"{module}:NUMBER",
                 task_records=f"{module}:NUMBER")
    with pytest.raises(UserError) as err:
        load_task(cfg, paths(tmp_path, corpus=None), source="hyperparameters.json")
    where = "a module importable in the job: the code channel or the image; locally: the config file's folder, the current directory or the Python path"
    assert err.value.lines() == [
        f"hyperparameters.json: task_tools: 'nosuch.pkg:tool': cannot be imported "
        f"(ModuleNotFoundError: No module named 'nosuch') (allowed: {where})",
        f"hyperparameters.json: task_tools: '{module}:missing': module {module} has no "
        f"attribute 'missing' (allowed: a module-level name of {module})",
        f"hyperparameters.json: task_tools: '{module}:NUMBER': is a int, not a tool or a "
        "factory (allowed: an object with name, description, parameters and __call__, or a "
        "class or function returning one (or a list of them))",
        f"hyperparameters.json: task_tools: '{module}:broken_factory': failed at load "
        "(RuntimeError: database unreachable)",
        "hyperparameters.json: task_tools: 'usertask.needs_dep:tool': cannot be imported "
        f"(ModuleNotFoundError: No module named 'no_such_dependency') (allowed: {where})",
        f"hyperparameters.json: task_parser: '{module}:NUMBER': is a int, not a parser "
        "(allowed: a Parser (stop, system_prompt, parse, format_tool_result, "
        "extract_tool_result, final_answer) or a class or function returning one)",
        f"hyperparameters.json: task_rewards: '{module}:Bare': is a type, not a reward "
        "(allowed: a RewardFunction (@reward) or a function episode -> float)",
        f"hyperparameters.json: task_records: '{module}:NUMBER': is a int, not a record "
        "loader (allowed: a function path -> records, or a class whose instances are one)",
    ]
    # The launcher's check imports but calls no factory: the raising one passes it.
    with pytest.raises(UserError) as err:
        check_task(cfg.replace(task_tools=f"{module}:broken_factory"))
    assert all("broken_factory" not in line for line in err.value.lines())


def test_format_reward_needs_a_tag_parser(tmp_path, plugin):
    module = plugin("""
        class Plain:
            name = "plain"
            stop = ["</call>"]
            def system_prompt(self, tools): return ""
            def parse(self, text): ...
            def format_tool_result(self, text): return text
            def extract_tool_result(self, text): return text
            def final_answer(self, episode): return None
        plain = Plain()
    """)
    with pytest.raises(UserError, match=r"task_rewards: 'triviaqa': reward format needs a "
                                        r"parser with format_reward\(\); Plain has none"):
        load_task(config(task_parser=f"{module}:plain", task_tools=""),
                  paths(tmp_path, corpus=None))
    task = load_task(config(task_parser=f"{module}:plain", task_tools="",
                            task_rewards="exact_match"), paths(tmp_path, corpus=None))
    assert task.parser.name == "plain"


# -- the render-time source check ---------------------------------------------------------------

def test_render_check_reads_the_repositorys_source_without_importing(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src" / "mytask").mkdir(parents=True)
    (repo / "src" / "mytask" / "__init__.py").write_text("")
    (repo / "src" / "mytask" / "tools.py").write_text(textwrap.dedent("""
        raise SystemExit("rendering must not run this")
        try:
            from fast import calc
        except ImportError:
            calc = None
        def score(episode): return 1.0
        LOADER: object = None
    """))
    (repo / "src" / "mytask" / "broken.py").write_text("def (:\n")
    trainer = {"task_tools": "mytask.tools:calc,mytask.tools:nothing,elsewhere.pkg:tool",
               "task_rewards": "mytask.tools:score=1,mytask.missing:r",
               "task_parser": "mytask.broken:p", "task_records": "mytask.tools:LOADER"}
    lines = [str(p) for p in check_task_paths(trainer, repo, "recipes/r.yaml")]
    assert lines == [
        "recipes/r.yaml: trainer.task_tools: 'mytask.tools:nothing': "
        "src/mytask/tools.py defines no 'nothing' at module level (allowed: a module-level "
        "name of mytask.tools)",
        "recipes/r.yaml: trainer.task_rewards: 'mytask.missing:r': module mytask.missing not "
        "found (src/mytask/missing.py or src/mytask/missing/__init__.py) (allowed: a module "
        "of the repository's package, or a package the image or code channel holds)",
        "recipes/r.yaml: trainer.task_parser: 'mytask.broken:p': "
        f"{repo}/src/mytask/broken.py does not parse (line 1: invalid syntax) (allowed: "
        "valid Python)",
    ]


def test_shipped_arithmetic_recipe_renders_without_a_corpus_channel():
    from mtgrpo.recipes.loader import load_recipe
    from mtgrpo.render import load_settings, training_job_for
    from mtgrpo.validate import check_recipe

    recipe = load_recipe(REPO / "recipes" / "qwen2-5-1-5b-arithmetic.yaml", root=REPO)
    assert check_recipe(recipe.data, source=recipe.source) == []
    assert check_task_paths(recipe.data["trainer"], REPO, recipe.source) == []
    body = training_job_for(recipe, load_settings(REPO), {}).body["spec"]
    assert sorted(c["channelName"] for c in body["inputDataConfig"]) == ["eval", "model",
                                                                       "train"]
    assert body["hyperParameters"]["task_tools"] == "mtgrpo.examples.arithmetic:calculator"
    # A task with wiki_search still needs its corpus.
    data = json.loads(json.dumps(recipe.data))
    data["trainer"]["task_tools"] = "wiki_search"
    assert [p.key for p in check_recipe(data, source="r")] == ["job.inputs.corpus"]


# -- the code channel ---------------------------------------------------------------------------

def test_code_channel_directory_or_tarball_goes_on_the_path(tmp_path, monkeypatch):
    from mtgrpo.sagemaker.code import activate_code, code_dir
    from mtgrpo.sagemaker.contract import OptML

    layout = OptML(tmp_path / "opt_ml")
    assert code_dir(layout) is None
    package = tmp_path / "src" / "tartask"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 7\n")
    chan = layout.channel_dir("code")
    chan.mkdir(parents=True)
    with tarfile.open(chan / "sourcedir.tar.gz", "w:gz") as tar:
        tar.add(package, arcname="tartask")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    directory = activate_code(layout)
    assert directory == layout.work_dir / "code" and sys.path[0] == str(directory)
    assert (directory / "tartask" / "__init__.py").read_text() == "VALUE = 7\n"
    import os

    assert os.environ["PYTHONPATH"] == f"{directory}{os.pathsep}/already/there"
    assert activate_code(layout) == directory and sys.path.count(str(directory)) == 1
    (chan / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="a code archive must be alone in the channel"):
        code_dir(layout)
    (chan / "sourcedir.tar.gz").unlink()
    assert code_dir(layout) == chan  # a plain directory (an S3 prefix) is used as it is


# -- the example task ---------------------------------------------------------------------------

def test_calculator_and_its_errors():
    from mtgrpo.examples.arithmetic import calculator, evaluate

    assert calculator(expression="(37 * 12) + 5") == "449"
    assert calculator(expression="7 / 2") == "3.5"
    for bad, message in (("__import__('os')", "unsupported element Call"),
                         ("9 ** 99", "exponent too large"), ("1 +", "not an arithmetic")):
        with pytest.raises(ValueError, match=message):
            evaluate(bad)


def test_arithmetic_rewards_through_the_environment(tok, tmp_path):
    from mtgrpo.examples.arithmetic import load_problems

    (tmp_path / "p.jsonl").write_text('{"id": "a", "question": "What is 41 * 12?", '
                                      '"answer": 492}\n{"question": "What is 2 - 5?", '
                                      '"answer": -3}\n')
    recs = load_problems(tmp_path / "p.jsonl")
    assert [(r.id, r.aliases, dict(r.info)) for r in recs] == [
        ("a", ("492",), {"answer": 492}), ("p-2", ("-3",), {"answer": -3})]
    mod = "mtgrpo.examples.arithmetic"
    cfg = config(task_tools=f"{mod}:calculator", task_records=f"{mod}:load_problems",
                 task_rewards=f"{mod}:correct=1.0,{mod}:calculator_found=0.5,format=0.2")
    task = load_task(cfg, paths(tmp_path, corpus=None))
    call = ('<reasoning>multiply</reasoning>\n<tool>{"name": "calculator", "args": '
            '{"expression": "%s"}}</tool>')
    # (the system prompt's example call is 37 * 12: the script keys must differ from it)
    script = {"41 * 12": [call % "41 * 12", "<reasoning>done</reasoning>\n<answer>492</answer>"],
              "2 - 5": [call % "2 +", "<reasoning>guess</reasoning>\n<answer>3</answer>"]}
    env = make_env(tok, tools=task.tools)
    right, wrong = env.rollout_sync(recs, 1, ScriptedSampler(tok, script))
    scored = task.score(right)
    assert scored.components == {"correct": 1.0, "calculator_found": 1.0, "format": 1.0}
    assert (scored.turn, scored.outcome) == (0.5, 1.2)
    assert "Error: calculator failed: ValueError: not an arithmetic expression" in \
        wrong.turns[1].text
    assert task.score(wrong).components == {"correct": 0.0, "calculator_found": 0.0,
                                            "format": 1.0}
    env.close()
    with pytest.raises(UserError, match=r"p\.jsonl:1: answer: must be a number"):
        (tmp_path / "p.jsonl").write_text('{"question": "Q?", "answer": "444"}\n')
        load_problems(tmp_path / "p.jsonl")


def test_local_arithmetic_recipe_needs_no_corpus():
    from mtgrpo.commands.train import load_config, run_paths

    cfg = load_config(REPO / "recipes" / "local" / "arithmetic-cpu.yaml")
    assert cfg.corpus_dir == "" and cfg.task_records.endswith(":load_problems")
    assert run_paths(cfg, Path("/tmp/out")).corpus_dir is None
    check_task(cfg)


def test_docstring_examples():
    import doctest

    from mtgrpo.examples import arithmetic
    from mtgrpo.task import api

    for module in (api, arithmetic):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
