"""The launcher's plan (checked without starting anything) and its supervision (with small real
processes standing in for vLLM and training)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port
from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import UserError
from mtgrpo.sagemaker.contract import OptML, ResourceConfig
from mtgrpo.sagemaker.failure import EXIT_INTERRUPTED, JobFailed
from mtgrpo.sagemaker.launcher import (DEEPSPEED_CONFIGS, ProcessSpec, build_plan,
                                       describe_plan, resolve_hosts, run_plan)

HOSTS = ("algo-1", "algo-2")


def config(**changes) -> TrainerConfig:
    return TrainerConfig(model_name_or_path="/opt/ml/input/data/model", **changes)


def plan_for(host: str, cfg: TrainerConfig | None = None, *, gpus: int = 8, tmp=Path("/tmp/x"),
             **kwargs):
    resources = ResourceConfig(host, HOSTS, "eth0")
    return build_plan(cfg or config(), resources, OptML(tmp), model="/models/m", gpu_count=gpus,
                      master_addr="10.0.0.1", python="python3", **kwargs)


def accelerate_args(plan) -> dict:
    """The argv parsed by accelerate's own launch parser (so every flag we pass exists)."""
    from accelerate.commands.launch import launch_command_parser

    argv = list(plan.training.argv)
    assert argv[:3] == ["python3", "-m", "accelerate.commands.launch"]
    return vars(launch_command_parser().parse_args(argv[3:]))


def test_two_hosts_first_host_runs_vllm_and_rank_zero():
    plan = plan_for("algo-1")
    args = accelerate_args(plan)
    assert (plan.node_rank, plan.num_nodes, plan.master_addr) == (0, 2, "10.0.0.1")
    assert plan.vllm_gpus == (7,) and plan.train_gpus == (0, 1, 2, 3, 4, 5, 6)
    assert (plan.processes_per_host, plan.world_size) == (7, 14)
    assert (args["num_machines"], args["machine_rank"], args["num_processes"]) == (2, 0, 14)
    assert (args["main_process_ip"], args["main_process_port"]) == ("10.0.0.1", 29500)
    assert args["use_deepspeed"] and args["deepspeed_config_file"] == str(DEEPSPEED_CONFIGS[2])
    assert args["deepspeed_multinode_launcher"] == "standard"
    assert args["module"] and args["training_script"] == "mtgrpo.sagemaker.worker"
    assert args["training_script_args"] == ["--vllm-server-url", "http://10.0.0.1:8000"]
    env = plan.training.env
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6"
    assert env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert (env["MTGRPO_NODE_RANK"], env["MTGRPO_NUM_NODES"]) == ("0", "2")
    # vLLM: only here, reachable from the other host, NCCL weight transfer on GPUs.
    assert plan.vllm is not None and plan.vllm.host == "0.0.0.0" and plan.vllm.port == 8000
    server = plan.vllm.server({"PATH": "/usr/bin"})
    assert server.environment["CUDA_VISIBLE_DEVICES"] == "7"
    assert "--tensor-parallel-size" not in server.command
    assert server.command[server.command.index("--weight-transfer-config") + 1] == \
        '{"backend": "nccl"}'
    assert server.command[server.command.index("--model") + 1] == "/models/m"


def test_two_hosts_second_host_trains_only_and_reaches_first():
    plan = plan_for("algo-2")
    args = accelerate_args(plan)
    assert plan.vllm is None and plan.node_rank == 1
    assert (args["machine_rank"], args["num_processes"], args["main_process_ip"]) == \
        (1, 14, "10.0.0.1")
    # accelerate gives every node num_processes // num_machines: the same GPU indices train.
    assert plan.training.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6"
    assert plan.vllm_url == "http://10.0.0.1:8000"
    assert plan.training.env["MTGRPO_NODE_RANK"] == "1"


def test_hosts_keep_the_given_order():
    resources = ResourceConfig("algo-2", ("algo-10", "algo-2"), "eth1")
    plan = build_plan(config(), resources, OptML(Path("/tmp/x")), model="m", gpu_count=4)
    assert (plan.node_rank, plan.master_addr, plan.vllm) == (1, "algo-10", None)
    assert plan.training.env["NCCL_SOCKET_IFNAME"] == "eth1"


def test_several_vllm_gpus_and_tensor_parallel():
    plan = plan_for("algo-1", config(vllm_gpus="6,7"))
    assert plan.train_gpus == (0, 1, 2, 3, 4, 5) and plan.world_size == 12
    server = plan.vllm.server({})
    assert server.environment["CUDA_VISIBLE_DEVICES"] == "6,7"
    assert server.command[server.command.index("--tensor-parallel-size") + 1] == "2"


@pytest.mark.parametrize("value", ["8", "a", "1,1", "0,1,2,3,4,5,6,7", "-1"])
def test_bad_vllm_gpus(value):
    with pytest.raises(UserError, match=rf"hyperparameters.json: vllm_gpus: invalid value "
                                        rf"'{value}'"):
        plan_for("algo-1", config(vllm_gpus=value))


def test_one_gpu_needs_transformers_backend():
    with pytest.raises(UserError, match="vllm needs its own GPU and this host has only 1"):
        plan_for("algo-1", gpus=1)
    plan = plan_for("algo-1", config(generation_backend="transformers"), gpus=1)
    assert plan.vllm is None and plan.vllm_url is None and plan.train_gpus == (0,)


def test_deepspeed_stage_choices():
    plan = plan_for("algo-1", config(deepspeed_stage=3))
    assert accelerate_args(plan)["deepspeed_config_file"] == str(DEEPSPEED_CONFIGS[3])
    for stage, path in DEEPSPEED_CONFIGS.items():
        assert json.loads(path.read_text())["zero_optimization"]["stage"] == stage
    args = accelerate_args(plan_for("algo-1", config(deepspeed_stage=0, bf16=True)))
    assert not args["use_deepspeed"] and args["multi_gpu"] and args["mixed_precision"] == "bf16"


def one_host(cfg: TrainerConfig, gpus: int):
    return build_plan(cfg, ResourceConfig("algo-1", ("algo-1",), "eth0"), OptML(Path("/tmp/x")),
                      model="/models/m", gpu_count=gpus, python="python3")


def test_one_process_never_gets_deepspeed():
    """deepspeed_stage is for several GPUs (train.py and the fit planner agree): one training
    process is plain accelerate in bf16, whatever the stage, on one host or one GPU."""
    for stage in (2, 3):
        plan = one_host(config(generation_backend="transformers", deepspeed_stage=stage), 1)
        args = accelerate_args(plan)
        assert plan.world_size == 1 and args["num_processes"] == 1
        assert not args["use_deepspeed"] and not args["multi_gpu"]
        assert args["mixed_precision"] == "bf16"
    two = one_host(config(generation_backend="transformers", deepspeed_stage=2), 2)
    assert two.world_size == 2 and accelerate_args(two)["use_deepspeed"]


def test_external_vllm_server_is_not_started():
    plan = plan_for("algo-1", config(vllm_server_url="http://vllm.internal:9000/"))
    assert plan.vllm is None and plan.vllm_url == "http://vllm.internal:9000"
    assert plan.train_gpus == tuple(range(8))  # no GPU kept for a server started elsewhere


def test_cpu_plan_is_one_worker_and_a_cpu_server(tmp_path):
    cfg = config(vllm_server_url="http://127.0.0.1:8301", weight_sync="auto")
    plan = build_plan(cfg, ResourceConfig("algo-1", ("algo-1",)), OptML(tmp_path),
                      model="/models/m", gpu_count=0, python="python3")
    assert plan.training.argv == ("python3", "-m", "mtgrpo.sagemaker.worker",
                                  "--vllm-server-url", "http://127.0.0.1:8301")
    assert "CUDA_VISIBLE_DEVICES" not in plan.training.env
    assert plan.training.env["MTGRPO_OPT_ML"] == str(tmp_path)
    server = plan.vllm.server({})
    assert "CUDA_VISIBLE_DEVICES" not in server.environment
    assert server.environment["VLLM_SERVER_DEV_MODE"] == "1"  # reload weight sync on CPU
    assert "--weight-transfer-config" not in server.command and server.host == "127.0.0.1"
    assert json.loads(describe_plan(plan))["starts_vllm"] is True


def test_host_names_are_retried_until_they_resolve():
    calls = {"algo-1": 0, "algo-2": 0}
    clock = [0.0]

    def resolve(host):
        calls[host] += 1
        if host == "algo-2" and calls[host] < 3:
            raise OSError("Name or service not known")
        return {"algo-1": "10.0.0.1", "algo-2": "10.0.0.2"}[host]

    def sleep(s):
        clock[0] += s

    found = resolve_hosts(HOSTS, timeout=60, resolve=resolve, sleep=sleep, clock=lambda: clock[0])
    assert found == {"algo-1": "10.0.0.1", "algo-2": "10.0.0.2"}
    assert calls == {"algo-1": 1, "algo-2": 3}

    def never(host):
        raise OSError("nope")

    with pytest.raises(JobFailed, match="host name\\(s\\) algo-1, algo-2 did not resolve within"
                                        " 10 s"):
        resolve_hosts(HOSTS, timeout=10, resolve=never, sleep=sleep, clock=lambda: clock[0])


# -- supervision with stand-in processes --------------------------------------------------------

HEALTH_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *a): pass
print("fake vllm up", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

# A training stand-in: waits for the launcher's stop-request file, "saves", exits 143.
TRAINING = """
import os, sys, time, pathlib
stop = pathlib.Path(os.environ["MTGRPO_STOP_FILE"])
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
while not stop.exists():
    time.sleep(0.05)
pathlib.Path(sys.argv[2]).write_text("saved")
sys.exit(143)
"""


@dataclasses.dataclass(frozen=True)
class FakeVLLM:
    """A VLLMSpec stand-in: a real VLLMServer object running a tiny /health server."""

    port: int
    log_path: Path
    script: str = HEALTH_SERVER

    def server(self, environ=None):
        from mtgrpo.rollout.server import VLLMServer

        server = VLLMServer("fake", port=self.port, log_path=self.log_path)
        server.command = [sys.executable, "-c", self.script, str(self.port)]
        return server


def supervised_plan(tmp_path, training_argv, *, vllm_script=HEALTH_SERVER, timeout=20.0):
    port = free_port()
    base = build_plan(config(vllm_server_url=f"http://127.0.0.1:{port}"),
                      ResourceConfig("algo-1", ("algo-1",)), OptML(tmp_path), model="m",
                      gpu_count=0)
    return dataclasses.replace(
        base, vllm=FakeVLLM(port, tmp_path / "vllm.log", vllm_script),
        training=ProcessSpec("training", tuple(training_argv), base.training.env),
        startup_timeout_s=timeout)


# Healthy for 3 seconds, then crashes.
DYING_SERVER = HEALTH_SERVER.replace(
    'http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()',
    'import threading, time\n'
    's = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)\n'
    'threading.Thread(target=s.serve_forever, daemon=True).start()\n'
    'time.sleep(3); sys.exit(7)')


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_training_failure_ends_job_and_stops_server(tmp_path):
    plan = supervised_plan(tmp_path, [sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(JobFailed, match="training exited with code 3"):
        run_plan(plan, poll_s=0.1)


def test_server_death_ends_training(tmp_path):
    pid_file, saved = tmp_path / "pid", tmp_path / "saved"
    plan = supervised_plan(tmp_path, [sys.executable, "-c", TRAINING, str(pid_file), str(saved)],
                           vllm_script=DYING_SERVER)
    started = time.monotonic()
    with pytest.raises(JobFailed, match="vLLM server died during training"):
        run_plan(plan, poll_s=0.1)
    assert time.monotonic() - started < 20
    pid = int(pid_file.read_text())
    assert not alive(pid), "the training process must be stopped with the server"


def test_server_never_healthy_times_out(tmp_path):
    plan = supervised_plan(tmp_path, [sys.executable, "-c", "raise SystemExit(0)"],
                           vllm_script="import time; print('loading', flush=True); "
                                       "time.sleep(60)", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(JobFailed, match=r"not healthy within 2 s \(vllm_startup_timeout_s\); "
                                        r"log: loading"):
        run_plan(plan, poll_s=0.1)
    assert time.monotonic() - started < 15


def test_sigterm_asks_training_to_save_then_stops_everything(tmp_path):
    pid_file, saved = tmp_path / "pid", tmp_path / "saved"
    plan = supervised_plan(tmp_path, [sys.executable, "-c", TRAINING, str(pid_file), str(saved)])

    def send_sigterm():
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=send_sigterm)
    thread.start()
    try:
        assert run_plan(plan, poll_s=0.1) == EXIT_INTERRUPTED
    finally:
        thread.join()
    assert saved.read_text() == "saved"
    assert signal.getsignal(signal.SIGTERM) == before  # the launcher's handler is removed


def test_other_host_ends_when_the_first_hosts_server_is_gone(tmp_path, monkeypatch):
    """A host without the server watches the first host's: gone for good -> the job ends."""
    import subprocess

    from mtgrpo.sagemaker import launcher

    monkeypatch.setattr(launcher, "REMOTE_CHECK_S", 0.2)
    monkeypatch.setattr(launcher, "REMOTE_GONE_S", 1.0)
    port = free_port()
    remote = subprocess.Popen([sys.executable, "-c", HEALTH_SERVER, str(port)],
                              stdout=subprocess.PIPE)
    try:
        assert remote.stdout.readline().strip() == b"fake vllm up"
        pid_file, saved = tmp_path / "pid", tmp_path / "saved"
        base = build_plan(config(vllm_server_url=f"http://127.0.0.1:{port}"),
                          ResourceConfig("algo-2", ("algo-1", "algo-2")), OptML(tmp_path),
                          model="m", gpu_count=0, master_addr="127.0.0.1")
        assert base.vllm is None and base.vllm_url == f"http://127.0.0.1:{port}"
        plan = dataclasses.replace(base, training=ProcessSpec(
            "training", (sys.executable, "-c", TRAINING, str(pid_file), str(saved)),
            base.training.env))

        def kill_remote():
            deadline = time.monotonic() + 30
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            remote.kill()

        thread = threading.Thread(target=kill_remote)
        thread.start()
        try:
            with pytest.raises(JobFailed, match="unreachable for 1 s during training"):
                run_plan(plan, poll_s=0.1)
        finally:
            thread.join()
        assert not alive(int(pid_file.read_text()))
    finally:
        remote.kill()
        remote.wait()


def test_container_visible_devices_are_respected():
    from mtgrpo.sagemaker.launcher import detect_gpu_count, visible_devices

    env = {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert detect_gpu_count(env) == 4 and detect_gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    plan = build_plan(config(), ResourceConfig("algo-1", ("algo-1",)), OptML(Path("/tmp/x")),
                      model="m", gpu_count=4, visible_devices=visible_devices(env))
    assert plan.train_gpus == (0, 1, 2) and plan.training.env["CUDA_VISIBLE_DEVICES"] == "4,5,6"
    assert plan.vllm.gpus == "7"


def test_stop_on_another_host_is_not_a_failure(tmp_path):
    """torchrun reports a worker's 143 as exit 1; the worker's stopped-file says what it was."""
    script = ("import os, pathlib, sys\n"
              "pathlib.Path(os.environ['MTGRPO_STOPPED_FILE']).write_text('2')\n"
              "sys.exit(1)\n")
    plan = supervised_plan(tmp_path, [sys.executable, "-c", script])
    assert run_plan(plan, poll_s=0.1) == EXIT_INTERRUPTED
    failing = supervised_plan(tmp_path, [sys.executable, "-c", "import sys; sys.exit(1)"])
    with pytest.raises(JobFailed, match="training exited with code 1"):
        run_plan(failing, poll_s=0.1)  # the stale stopped-file of the last run was cleared


def test_trainer_uses_the_shipped_deepspeed_files():
    """One source of DeepSpeed settings: the Trainer's argument (which wins over accelerate's)
    is the file the launcher passes, and ZeRO-3 gathers weights so the final model is
    safetensors."""
    import json

    from mtgrpo.sagemaker.launcher import DEEPSPEED_CONFIGS
    from mtgrpo.trainer.train import _deepspeed_config

    for stage, path in DEEPSPEED_CONFIGS.items():
        loaded = _deepspeed_config(config(deepspeed_stage=stage))
        assert loaded == json.loads(path.read_text())
        assert loaded["zero_optimization"]["stage"] == stage
    zero3 = _deepspeed_config(config(deepspeed_stage=3))["zero_optimization"]
    assert zero3["stage3_gather_16bit_weights_on_model_save"] is True


# -- vllm_shared: the server on a training GPU (EXPERIMENTAL) ------------------------------------

A10G_BYTES = 23028 * 2**20  # nvidia-smi's memory.total of an ml.g5.2xlarge's A10G
QWEN25_15B = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536,
              "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
              "intermediate_size": 8960, "vocab_size": 151936, "torch_dtype": "bfloat16"}


def qwen_dir(tmp_path) -> Path:
    """A stand-in Qwen2.5-1.5B checkpoint: its config and a sparse weights file of its size."""
    model = tmp_path / "qwen"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(QWEN25_15B))
    with open(model / "model.safetensors", "wb") as f:
        f.truncate(3_087_467_520)
    return model


def g5_shared():
    from mtgrpo.recipes.loader import load_recipe

    repo = Path(__file__).resolve().parent.parent
    cfg = load_recipe(repo / "recipes" / "qwen2-5-1-5b-g5.yaml").trainer
    return cfg.replace(generation_backend="vllm_shared", model_name_or_path="/m")


def test_shared_memory_rule_for_the_g5_recipe(tmp_path):
    from mtgrpo.rollout.shared_gpu import (DEFAULT_SHARE, OVERHEAD_BYTES,
                                           shared_gpu_memory_utilization)

    cfg, model = g5_shared(), qwen_dir(tmp_path)
    # 16 episodes x (768 + 768) tokens x 28,672 KV bytes a token (2 x 28 layers x 2 heads x 128
    # x 2 bytes), x 1.25, + 3.09 GB of bf16 weights + 2 GiB: 6.12 GB of 24.1 GB.
    expected = (3_087_467_520 + 1.25 * 16 * 1536 * 28_672 + OVERHEAD_BYTES) / A10G_BYTES
    share = shared_gpu_memory_utilization(cfg, model, A10G_BYTES)
    assert share == round(expected, 3) == 0.253
    assert shared_gpu_memory_utilization(cfg, model, A10G_BYTES, world_size=2) > share
    assert shared_gpu_memory_utilization(cfg.replace(vllm_gpu_memory_utilization=0.2), model,
                                         A10G_BYTES) == 0.2  # the setting caps it
    assert shared_gpu_memory_utilization(cfg, tmp_path / "nothing", A10G_BYTES) == DEFAULT_SHARE


def test_shared_one_gpu_plan_puts_server_and_learner_on_gpu_0(tmp_path):
    cfg = g5_shared()
    resources = ResourceConfig("algo-1", ("algo-1",), "eth0")
    plan = build_plan(cfg, resources, OptML(tmp_path), model=str(qwen_dir(tmp_path)),
                      gpu_count=1, python="python3", gpu_memory_bytes=A10G_BYTES)
    assert plan.vllm_gpus == (0,) and plan.train_gpus == (0,) and plan.world_size == 1
    assert plan.training.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert plan.vllm_url == "http://127.0.0.1:8000"
    server = plan.vllm.server({})
    assert server.environment["CUDA_VISIBLE_DEVICES"] == "0"
    assert "--weight-transfer-config" not in server.command  # reload through /dev/shm
    assert server.command[server.command.index("--gpu-memory-utilization") + 1] == "0.253"
    args = accelerate_args(plan)
    assert args["num_processes"] == 1 and args["training_script_args"] == \
        ["--vllm-server-url", "http://127.0.0.1:8000"]


def test_shared_on_eight_gpus_all_train():
    plan = plan_for("algo-1", config(generation_backend="vllm_shared"), gpus=8,
                    gpu_memory_bytes=80 * 2**30)
    assert plan.vllm_gpus == (7,) and plan.train_gpus == tuple(range(8))
    assert plan.world_size == 16 and plan.vllm.gpus == "7"
    assert plan.vllm.weight_transfer is None
    assert plan.vllm.gpu_memory_utilization == 0.3  # /models/m has no config.json: the default
    with pytest.raises(UserError, match="vllm_gpus: invalid value '8' for 8 GPUs"):
        plan_for("algo-1", config(generation_backend="vllm_shared", vllm_gpus="8"),
                 gpu_memory_bytes=80 * 2**30)


def test_shared_refuses_nccl_and_names_it_for_one_gpu():
    with pytest.raises(UserError, match="weight_sync: nccl cannot pair two processes on one GPU"):
        config(generation_backend="vllm_shared", weight_sync="nccl")
    with pytest.raises(UserError, match="or generation_backend transformers or vllm_shared"):
        plan_for("algo-1", gpus=1)


def test_shm_weights_root_needs_room_for_two_copies(tmp_path):
    import shutil

    from mtgrpo.rollout.shared_gpu import shm_weights_root

    made = shm_weights_root(1024, base=tmp_path)
    assert made.parent == tmp_path and made.is_dir()
    free = shutil.disk_usage(tmp_path).free
    assert shm_weights_root(free // 2 + 1, base=tmp_path) is None  # a push + the previous copy
    assert shm_weights_root(base=tmp_path / "missing") is None
