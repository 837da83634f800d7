"""Fault injection: every fault a run can meet ends in one clean line, leaves no process behind,
loses no checkpoint, and a resumed run records every step exactly once.

One test (or a few) per fault of docs/troubleshooting.md "Faults": a stop signal, a process
left behind, a full disk, a tool that hangs or floods or exits, a record too large, a bad record
file, a server that stops answering in the background. All on loopback with the tiny model and
the transformers sampler; only the orphaned-vLLM-server test starts a real (CPU) vLLM server.
The full-disk tests use a real tmpfs when this process may mount one (root), else an injected
ENOSPC at the same write.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from mtgrpo.cli import main

REPO = Path(__file__).resolve().parents[1]
# Generous bounds for a loaded 2-core machine: they catch a hang, not a slow run.
RUN_TIMEOUT = 300


# -- helpers --------------------------------------------------------------------------------------

@pytest.fixture()
def task(tmp_path):
    from mtgrpo.testing.synthetic import write_task

    return write_task(tmp_path / "task")


def _config(tmp_path: Path, tiny_model_dir: Path, **overrides) -> Path:
    trainer = {"model_name_or_path": str(tiny_model_dir), "train_file": "task/train.jsonl",
               "corpus_dir": "task/corpus", "generation_backend": "transformers",
               "num_generations": 2, "per_device_train_batch_size": 2,
               "gradient_accumulation_steps": 1, "max_steps": 4, "eval_steps": 0,
               "eval_fraction": 0.0, "save_steps": 2, "max_turns": 2, "max_tool_calls": 1,
               "max_tokens_per_turn": 16, "max_completion_length": 128,
               "search_max_tokens": 32, "learning_rate": 1e-3}
    trainer.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"trainer": trainer}), encoding="utf-8")
    return path


def _steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _error_lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.startswith("error: ")]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start_cli(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtgrpo.cli", *args], cwd=cwd, env=_env(),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie (not yet reaped by its new parent) is gone too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return _gone(pid)


# -- 1. a stop signal: save, stop, one line, documented code; resume records each step once -------

@pytest.mark.slow
def test_sigterm_saves_stops_in_one_line_and_resume_records_each_step_once(
        tmp_path, tiny_model_dir, task):
    from mtgrpo.trainer.train import newest_complete_checkpoint

    cfg = _config(tmp_path, tiny_model_dir, max_steps=6, save_steps=5)
    out = tmp_path / "out"
    log = tmp_path / "train.log"
    proc = _start_cli(["train", str(cfg), "--output", str(out)], tmp_path, log)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(_steps(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_steps(out)) >= 2, log.read_text(errors="replace")[-3000:]
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert code == 143, text[-3000:]
    steps = _steps(out)
    saved = newest_complete_checkpoint(out / "checkpoints")
    # The step in flight finished and was saved, though save_steps (5) was not reached.
    assert saved is not None and saved.name == f"checkpoint-{steps[-1]}", (saved, steps)
    assert steps[-1] < 6
    stopped = [line for line in text.splitlines() if "stopped by" in line]
    assert stopped == [f"mtgrpo train: stopped by SIGTERM after saving {saved} (exit 143)"]
    assert "Traceback" not in text and not (out / "model" / "config.json").exists()

    # The resumed run continues the record: every step once.
    assert main(["train", str(cfg), "--output", str(out)]) == 0
    assert _steps(out) == list(range(1, 7))


@pytest.mark.slow
def test_resume_cuts_metrics_and_tensorboard_back_to_the_checkpoint(tmp_path, tiny_model_dir,
                                                                    task):
    """A run that died after logging steps past its last checkpoint (a crash, a kill -9): the
    resumed run drops those steps from metrics.jsonl, TensorBoard and any tracking hook."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mtgrpo.trainer import metrics_log

    cfg = _config(tmp_path, tiny_model_dir, max_steps=4, save_steps=2)
    out = tmp_path / "out"
    assert main(["train", str(cfg), "--output", str(out)]) == 0
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")  # as if it died before saving step 4
    hooked: list[int] = []
    original = metrics_log.MetricsLogger.__init__

    def with_hook(self, *args, **kwargs):  # a tracking run's "truncate to step N" point
        original(self, *args, **kwargs)
        self.truncate_hooks.append(hooked.append)

    mp = pytest.MonkeyPatch()
    mp.setattr(metrics_log.MetricsLogger, "__init__", with_hook)
    try:
        assert main(["train", str(cfg), "--output", str(out)]) == 0
    finally:
        mp.undo()
    assert hooked == [2]
    assert _steps(out) == [1, 2, 3, 4]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


# -- 2. no process left behind, whatever way the run ends -----------------------------------------

_PARENT = """
import sys, time
from mtgrpo.rollout.server import VLLMServer
server = VLLMServer("m", port=int(sys.argv[1]))
server.command = [sys.executable, "-c", "import time; time.sleep(600)"]  # a stand-in server
server.start()
print(server.proc.pid, flush=True)
if sys.argv[2] == "error":
    raise RuntimeError("the run dies of an error")
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["error", "sigkill"])
def test_a_started_server_never_outlives_its_run(tmp_path, how):
    """The run dies of an error (atexit stops the server) or of SIGKILL (the kernel sends the
    server SIGTERM: it dies with its parent)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(port), how], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        child = int(parent.stdout.readline())
        if how == "sigkill":  # (with "error" the run may already be over, its server stopped)
            assert not _gone(child)
            parent.kill()
        parent.wait(60)
        assert _wait_gone(child), f"server {child} outlived its run ({how})"
    finally:
        parent.kill()


def test_run_stop_protocol_before_and_after_training_starts():
    """Before bind: a signal stops at once, owned processes stopped, code 128 + signal. After
    bind: the first signal asks for a save (a flag), a second stops at once."""
    from mtgrpo.stopping import RunStop

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with RunStop("test", announce=False) as stop:
        stop.own(sleeper)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # not reached: the handler raises
        pytest.fail("the signal did not stop the block")
    assert stop.stopped and stop.exit_code == 130 and sleeper.poll() is not None

    asked = []
    before = signal.getsignal(signal.SIGTERM)
    with RunStop("test", announce=False) as stop:
        stop.bind(lambda: asked.append(True))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert asked == [True]  # still running: the trainer saves at the end of its step
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("a second signal did not stop the block")
    assert stop.exit_code == 143 and stop.line("after saving x") == \
        "test: stopped by SIGTERM after saving x (exit 143)"
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


@pytest.mark.vllm
@pytest.mark.slow
def test_sigterm_stops_the_vllm_server_the_run_started(tmp_path, tiny_model_dir, task):
    """`mtgrpo train` starts its own vLLM CPU server; SIGTERM after the first step: exit 143,
    checkpoint saved, the server and its engine process gone, the port free."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = _config(tmp_path, tiny_model_dir, generation_backend="vllm", max_steps=50,
                  save_steps=100, vllm_server_url=f"http://127.0.0.1:{port}",
                  vllm_startup_timeout_s=400)
    out = tmp_path / "out"
    log = tmp_path / "train.log"
    proc = _start_cli(["train", str(cfg), "--output", str(out)], tmp_path, log)
    server_pids: set[int] = set()
    try:
        deadline = time.monotonic() + 600
        while not _steps(out) and proc.poll() is None and time.monotonic() < deadline:
            for leader in _pids_with(f"--port {port}"):  # the server and its engine process
                server_pids |= {leader} | _group(leader)
            time.sleep(0.5)
        assert _steps(out), log.read_text(errors="replace")[-3000:]
        assert server_pids
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert code == 143, text[-3000:]
    assert "stopped by SIGTERM after saving" in text
    assert all(_wait_gone(pid) for pid in server_pids), _pids_with(f"--port {port}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the port is free again


def _group(pgid: int) -> set[int]:
    """Live processes of process group ``pgid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def _pids_with(text: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd and not _gone(int(entry.name)):
                found.add(int(entry.name))
    return found


# -- 3. a full disk: one line with the path and the bytes, the previous checkpoint kept -----------

@pytest.fixture()
def small_disk(tmp_path):
    """A directory on a small tmpfs (root may mount one), or None where mounting is refused."""
    made = []

    def make(size_bytes: int) -> Path | None:
        mount = tmp_path / f"disk{len(made)}"
        mount.mkdir()
        kb = max(64, size_bytes // 1024 + 1)
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs",
                                   str(mount)], capture_output=True)
        except OSError:  # no mount command
            return None
        if done.returncode != 0:
            return None
        made.append(mount)
        return mount

    yield make
    for mount in made:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


@pytest.mark.slow
def test_disk_full_while_saving_a_checkpoint(tmp_path, tiny_model_dir, task, small_disk,
                                             monkeypatch, capsys):
    from mtgrpo.trainer.train import newest_complete_checkpoint

    weights = (tiny_model_dir / "model.safetensors").stat().st_size
    # A checkpoint is the weights, two optimizer moments and small files (~3x the weights):
    # room for one with metrics and events, not two.
    disk = small_disk(int(weights * 4.5) + 512 * 1024)
    if disk is None:  # not root: the same failure, injected at the optimizer's torch.save
        import torch

        real_save = torch.save

        def full_at_step_4(obj, f, *args, **kwargs):
            if "checkpoint-4" in str(f):
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", full_at_step_4)
        disk = tmp_path / "disk"
    cfg = _config(tmp_path, tiny_model_dir, max_steps=6, save_steps=2)
    assert main(["train", str(cfg), "--output", str(disk)]) == 1
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    checkpoints = disk / "checkpoints"
    assert lines[0].startswith(f"error: {checkpoints}/checkpoint-4: disk full while saving "
                               "checkpoint-4: it needs about "), lines
    assert " bytes" in lines[0]
    kept = newest_complete_checkpoint(checkpoints)
    assert kept is not None and kept.name == "checkpoint-2"
    assert not (checkpoints / "checkpoint-4").exists()  # the half-written one is gone
    assert json.loads((kept / "trainer_state.json").read_text())["global_step"] == 2

    # Room again (a copy on the larger disk): the run resumes at step 2, every step once.
    monkeypatch.undo()
    roomy = tmp_path / "roomy"
    shutil.copytree(disk, roomy)
    assert main(["train", str(cfg), "--output", str(roomy)]) == 0
    assert _steps(roomy) == [1, 2, 3, 4, 5, 6]


def test_disk_full_while_writing_metrics_is_one_line(tmp_path, small_disk, monkeypatch):
    from mtgrpo.trainer.disk import DiskFull
    from mtgrpo.trainer.metrics_log import MetricsLogger

    disk = small_disk(64 * 1024)
    if disk is not None:  # fill it
        (disk / "filler").write_bytes(b"x" * (64 * 1024 - 4096))
        try:
            with (disk / "filler2").open("wb") as f:  # take the last pages
                while True:
                    f.write(b"x" * 1024)
                    f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    else:  # not root: every write on this directory fails as on a full disk
        disk = tmp_path / "full"
        disk.mkdir()
        real_open = Path.open

        class Full:
            def __init__(self, handle):
                self.handle = handle

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

        def full_open(self, *args, **kwargs):
            handle = real_open(self, *args, **kwargs)
            return Full(handle) if self.parent == disk else handle

        monkeypatch.setattr(Path, "open", full_open)
    logger = MetricsLogger(disk / "metrics.jsonl", stream=open(os.devnull, "w"))
    with pytest.raises(DiskFull) as caught:
        logger._write({"step": 1, "loss": 0.5, "note": "x" * 10000})
    (line,) = caught.value.lines()
    assert line.startswith(f"{disk / 'metrics.jsonl'}: disk full while saving a metrics "
                           "record: it needs about ") and "bytes free" in line


def test_writers_full_disk_errors_are_recognised(tmp_path):
    """torch.save and safetensors do not raise OSError on ENOSPC; their messages count."""
    from mtgrpo.trainer.disk import DiskFull, disk_full_guard

    for err in (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter "
                             "failed writing file data/0: file write failed"),
                Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                          'message: "No space left on device" })')):
        with pytest.raises(DiskFull):
            with disk_full_guard(tmp_path, 10):
                raise err
    with pytest.raises(ValueError):  # anything else is not a full disk
        with disk_full_guard(tmp_path, 10):
            raise ValueError("a bug")


# -- 4. tools under bounds ------------------------------------------------------------------------

_FAULTY_TOOLS = '''
import itertools, threading, time

from mtgrpo.task import FunctionTool
from mtgrpo.trainer.parsers import XMLParser
from mtgrpo.trainer.types import ParsedTurn, ToolCall

NO_ARGS = {"type": "object", "properties": {}}
NEVER = threading.Event()
_NAMES = itertools.cycle(["sleepy", "flood", "quitter", "hangs"])


def tools():
    return [FunctionTool(lambda: time.sleep(60) or "late", name="sleepy",
                         description="sleeps a minute", parameters=NO_ARGS),
            FunctionTool(lambda: "x" * 10_000_000, name="flood",
                         description="returns 10 MB", parameters=NO_ARGS),
            FunctionTool(_quit, name="quitter", description="exits", parameters=NO_ARGS),
            FunctionTool(lambda: NEVER.wait() and "never", name="hangs",
                         description="never returns", parameters=NO_ARGS)]


def _quit():
    raise SystemExit(7)


class EveryTurnCalls(XMLParser):
    """Reads every turn as a call of the next tool (a random model never writes one)."""

    @property
    def stop(self):
        return []

    def parse(self, text):
        return ParsedTurn(tool_call=ToolCall(next(_NAMES), {}))
'''


@pytest.mark.slow
def test_tools_that_hang_flood_or_exit_are_failed_calls_with_metrics(
        tmp_path, tiny_model_dir, task, monkeypatch, capsys):
    """A run of plug-in tools that sleep a minute, never return, return 10 MB or raise
    SystemExit(7): it finishes, each call bounded, counted per tool."""
    (tmp_path / "faulty_tools.py").write_text(_FAULTY_TOOLS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # Four episodes a step: their first turns call the four tools in turn (a second turn's
    # call is over max_tool_calls and not run).
    cfg = _config(tmp_path, tiny_model_dir, max_steps=2, task_tools="faulty_tools:tools",
                  num_generations=4, per_device_train_batch_size=4,
                  task_parser="faulty_tools:EveryTurnCalls", corpus_dir=None,
                  tool_timeout_s=1.0, tool_result_max_chars=2000, max_completion_length=1024)
    started = time.monotonic()
    try:
        assert main(["train", str(cfg), "--output", str(tmp_path / "out")]) == 0
    finally:
        sys.modules.get("faulty_tools") and sys.modules["faulty_tools"].NEVER.set()
    assert time.monotonic() - started < RUN_TIMEOUT
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    total = {k: sum(r.get(k, 0) for r in rows) for k in
             ("tool_timeouts", "tool_timeouts_sleepy", "tool_timeouts_hangs",
              "tool_failures_quitter", "tool_truncations", "tool_failures_flood")}
    assert total["tool_timeouts"] == total["tool_timeouts_sleepy"] + total["tool_timeouts_hangs"]
    assert total["tool_timeouts_sleepy"] >= 1 and total["tool_timeouts_hangs"] >= 1, total
    assert total["tool_failures_quitter"] >= 1 and total["tool_truncations"] >= 1, total
    assert total["tool_failures_flood"] == 0  # cut, but a success
    assert "error:" not in capsys.readouterr().err


def _environment(tools, **kwargs):
    from mtgrpo.testing.doubles import AlwaysCalls
    from mtgrpo.testing.tiny import build_tokenizer
    from mtgrpo.trainer.environment import ToolEnvironment

    values = dict(max_turns=2, max_tool_calls=1, max_tokens_per_turn=8,
                  max_completion_length=4096, max_prompt_length=256, temperature=1.0, top_p=1.0)
    values.update(kwargs)
    return ToolEnvironment(build_tokenizer(), AlwaysCalls(), tools, **values)


class _OneTurn:
    """A sampler whose every turn is a few tokens (AlwaysCalls reads them as a call)."""

    async def generate(self, prompts, **kwargs):
        from mtgrpo.rollout.client import Sample

        return [Sample([5, 6, 7], None, "call", "stop") for _ in prompts]


def _tool(fn):
    from mtgrpo.task import FunctionTool

    return {"wiki_search": FunctionTool(fn, name="wiki_search", description="d",
                                        parameters={"type": "object", "properties": {}})}


def test_a_tool_that_never_returns_times_out_and_the_rollout_goes_on():
    from mtgrpo.trainer.types import QARecord

    never = threading.Event()
    env = _environment(_tool(lambda query=None: never.wait() and "late"), tool_timeout_s=0.3)
    try:
        started = time.monotonic()
        episodes = env.rollout_sync([QARecord("1", "Q?", ("a",))], 3, _OneTurn())
        assert time.monotonic() - started < 30
        for ep in episodes:
            tool = ep.turns[1]
            assert tool.tool_timed_out and not tool.tool_ok
            assert "wiki_search timed out after 0.3s (tool_timeout_s)" in tool.text
            assert ep.tool_counts()["tool_timeouts/wiki_search"] == 1
    finally:
        never.set()
        env.close()


def test_an_async_tool_that_never_returns_times_out():
    from mtgrpo.trainer.types import QARecord

    async def forever(query=None):
        await asyncio.sleep(3600)
        return "late"

    env = _environment(_tool(forever), tool_timeout_s=0.3)
    [ep] = env.rollout_sync([QARecord("1", "Q?", ("a",))], 1, _OneTurn())
    assert ep.turns[1].tool_timed_out and "timed out" in ep.turns[1].text
    env.close()


def test_a_huge_result_is_cut_before_tokenizing_and_keeps_its_closing_tag():
    from mtgrpo.trainer.types import QARecord

    env = _environment(_tool(lambda query=None: "word " * 2_000_000), tool_result_max_chars=500)
    started = time.monotonic()
    [ep] = env.rollout_sync([QARecord("1", "Q?", ("a",))], 1, _OneTurn())
    assert time.monotonic() - started < 30  # 10 MB tokenized would take minutes
    tool = ep.turns[1]
    assert tool.tool_ok and tool.tool_truncated and ep.tool_counts()["tool_truncations"] == 1
    assert "more characters cut: tool_result_max_chars]\n</result>" in tool.text
    env.close()


def test_a_result_over_the_completion_budget_keeps_its_closing_tag():
    from mtgrpo.trainer.types import QARecord

    env = _environment(_tool(lambda query=None: "word " * 400), max_completion_length=64)
    [ep] = env.rollout_sync([QARecord("1", "Q?", ("a",))], 1, _OneTurn())
    assert ep.truncated and "</result>" in ep.turns[1].text
    assert len(ep.completion_ids) <= 64
    env.close()


@pytest.mark.parametrize("exc", [SystemExit(7), KeyboardInterrupt()],
                         ids=["SystemExit", "KeyboardInterrupt"])
def test_a_tool_raising_a_base_exception_is_a_failed_call(exc):
    from mtgrpo.trainer.types import QARecord

    def raising(query=None):
        raise exc

    env = _environment(_tool(raising))
    [ep] = env.rollout_sync([QARecord("1", "Q?", ("a",))], 1, _OneTurn())
    assert ep.turns[1].tool_ok is False
    assert f"wiki_search failed: {type(exc).__name__}" in ep.turns[1].text
    assert ep.tool_counts()["tool_failures/wiki_search"] == 1
    env.close()


def test_the_runs_own_stop_passes_through_a_tool_call():
    from mtgrpo.stopping import Interrupted
    from mtgrpo.trainer.tools.base import execute_tool_call
    from mtgrpo.trainer.types import ParsedTurn, ToolCall

    def stopped(query=None):
        raise Interrupted(signal.SIGTERM)

    with pytest.raises(Interrupted):
        execute_tool_call(_tool(stopped), ParsedTurn(tool_call=ToolCall("wiki_search", {})))


# -- 5. records that cannot fit, and bad record files: refused at load, before the server ---------

def test_a_50_mb_record_is_refused_at_load_without_holding_it(tmp_path):
    from mtgrpo.errors import UserError
    from mtgrpo.trainer.data import MAX_RECORD_BYTES, load_records

    path = tmp_path / "train.jsonl"
    with path.open("w") as f:
        f.write(json.dumps({"question": "Q1?", "aliases": ["a"]}) + "\n")
        f.write('{"question": "' + "x" * (50 * 2**20) + '", "aliases": ["a"]}\n')
    size = path.stat().st_size - len(json.dumps({"question": "Q1?", "aliases": ["a"]})) - 1
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as caught:
            load_records(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (line,) = caught.value.lines()
    assert line.startswith(f"{path}:2: the record is {size} bytes, over the "
                           f"{MAX_RECORD_BYTES} bytes")
    assert peak < 50 * 2**20  # never the whole line, let alone twice


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["prompt_too_long", "malformed"])
def test_bad_records_fail_in_one_line_before_the_vllm_server_starts(
        tmp_path, tiny_model_dir, task, capsys, fault):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    train = task / "train.jsonl"
    lines = train.read_text().splitlines()
    if fault == "prompt_too_long":
        lines[2] = json.dumps({"question": "why " * 100_000, "aliases": ["a"]})
        expected = (f"error: {train}:3: question: the prompt is at least ", "tokens (399999 "
                    "characters of question), over max_prompt_length 1024")
    else:
        lines[2] = '{"question": "cut short'
        expected = (f"error: {train}:3: invalid JSON: ", "")
    train.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path, tiny_model_dir, generation_backend="vllm",
                  vllm_server_url=f"http://127.0.0.1:{port}")
    out = tmp_path / "out"
    assert main(["train", str(cfg), "--output", str(out)]) == 1
    captured = capsys.readouterr()
    (line,) = _error_lines(captured.err)
    assert line.startswith(expected[0]) and expected[1] in line, line
    assert "starting vLLM server" not in captured.out and not (out / "vllm.log").exists()


# -- 6. a server that stops answering while a rollout runs in the background ----------------------

@pytest.mark.slow
def test_a_stuck_background_rollout_costs_one_request_timeout(tiny_model_dir, tmp_path):
    """With the overlap, the next step's rollout hangs until the request time-out; the step's
    weight push must not then wait a second time-out on the same server: the run ends at the
    next step, with no push after the failure."""
    from transformers import AutoTokenizer

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.rollout.client import SamplerError
    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser, write_task
    from mtgrpo.trainer.grpo_trainer import WeightSyncCallback
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import run

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = write_task(tmp_path / "data")
    out = tmp_path / "out"
    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=2,
                        per_device_train_batch_size=4, gradient_accumulation_steps=1,
                        max_steps=3, eval_steps=0, save_steps=100, max_turns=2,
                        max_tool_calls=1, max_tokens_per_turn=48, max_completion_length=160,
                        search_max_tokens=32, generation_backend="vllm", max_staleness=1)
    paths = RunPaths(str(tiny_model_dir), data / "train.jsonl", None, data / "corpus", out,
                     out / "model", out / "checkpoints")
    failed = threading.Event()

    class Stuck:
        """Request 3 (step 2's batch, sampled during step 1) waits out a time-out, then fails."""

        def __init__(self):
            self.inner = ScriptedSampler(tokenizer, query_accuracy=0.5, seed=0)
            self.calls = 0

        async def generate(self, prompts, **kwargs):
            self.calls += 1
            if self.calls == 3:
                await asyncio.sleep(0.5)  # the request time-out, shortened
                failed.set()
                raise SamplerError("vLLM server at http://127.0.0.1:1 did not answer "
                                   "/v1/completions within 0.5s (vllm_request_timeout_s)")
            return await self.inner.generate(prompts, **kwargs)

        def close(self):
            pass

    pushes_after_failure = []

    def push(model):
        if failed.is_set():
            pushes_after_failure.append(True)
        return 0.0

    def on_trainer(trainer):
        trainer.add_callback(WeightSyncCallback(trainer, push))

    with pytest.raises(SamplerError, match="did not answer"):
        run(cfg, paths, sampler=Stuck(), parser=task_parser(), on_trainer=on_trainer)
    assert failed.is_set() and pushes_after_failure == []
    assert not [t for t in threading.enumerate() if t.name == "mtgrpo-prefetch"]
