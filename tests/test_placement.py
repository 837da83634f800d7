"""The one placement rule (mtgrpo.contract.placement) and the one checkpoint-completeness rule
(mtgrpo.contract.checkpoints): their cases, and that every user of each gives the same answer
(renderer and launcher, planner and launcher, trainer and launcher; local disk and S3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtgrpo.contract import TrainerConfig
from mtgrpo.contract.checkpoints import is_complete, is_complete_dir, newest_complete
from mtgrpo.contract.placement import place, starts_vllm, weight_sync
from mtgrpo.errors import UserError
from mtgrpo.recipes import load_recipe
from tests.renderkit import REPO


def config(**values) -> TrainerConfig:
    return TrainerConfig.from_mapping({"model_name_or_path": "m", **values})


# -- placement cases ---------------------------------------------------------------------------

def test_two_nodes_of_four_gpus_serve_on_the_first_nodes_last_gpu():
    where = place(config(), num_nodes=2, gpus_per_node=4)
    assert (where.vllm_gpus, where.train_gpus) == ((3,), (0, 1, 2))
    assert (where.processes_per_node, where.world_size, where.idle_gpus) == (3, 6, 1)
    assert where.starts_vllm and not where.shared and where.weight_sync == "nccl"
    assert where.vllm_gpus_text == "3"


def test_named_vllm_gpus_leave_the_rest_training():
    where = place(config(vllm_gpus="6,7"), num_nodes=4, gpus_per_node=8)
    assert where.train_gpus == (0, 1, 2, 3, 4, 5) and where.world_size == 24
    assert where.idle_gpus == 6


def test_vllm_shared_trains_on_every_gpu_and_reloads_weights():
    where = place(config(generation_backend="vllm_shared"), num_nodes=1, gpus_per_node=1)
    assert (where.vllm_gpus, where.train_gpus, where.world_size) == ((0,), (0,), 1)
    assert where.shared and where.weight_sync == "reload" and where.idle_gpus == 0


def test_an_outside_server_or_none_leaves_every_gpu_training():
    outside = place(config(vllm_server_url="http://vllm.example:8000"), num_nodes=1,
                    gpus_per_node=4)
    assert not outside.starts_vllm and outside.vllm_gpus == () and outside.world_size == 4
    assert outside.weight_sync == "nccl"  # the trainer still pushes weights to it
    local = place(config(generation_backend="transformers"), num_nodes=1, gpus_per_node=2)
    assert local.world_size == 2 and local.weight_sync == "none" and not local.starts_vllm


def test_cpu_nodes_run_one_process_each():
    where = place(config(), num_nodes=2, gpus_per_node=0)
    assert where.processes_per_node == 1 and where.world_size == 2 and where.vllm_gpus == ()
    assert where.weight_sync == "reload"


def test_the_first_hosts_name_is_the_jobs_own_server():
    url = config(vllm_server_url="http://algo-1:8000")
    assert starts_vllm(url, "algo-1") and not starts_vllm(url)
    assert place(url, num_nodes=2, gpus_per_node=4, master_host="algo-1").vllm_gpus == (3,)


@pytest.mark.parametrize("values,gpus,key,words", [
    ({}, 1, "generation_backend", "vllm needs its own GPU and this host has only 1"),
    ({"vllm_gpus": "4"}, 4, "vllm_gpus", "invalid value '4' for 4 GPUs"),
    ({"vllm_gpus": "0,1,2,3"}, 4, "vllm_gpus", "for 4 GPUs"),
    ({"vllm_gpus": "a"}, 4, "vllm_gpus", "invalid value 'a'"),
    ({"vllm_server_url": "ftp://x"}, 4, "vllm_server_url", "invalid value 'ftp://x'"),
])
def test_impossible_placements_name_the_trainer_key(values, gpus, key, words):
    with pytest.raises(UserError) as err:
        place(config(**values), num_nodes=1, gpus_per_node=gpus, key_prefix="trainer.")
    problem = err.value.problems[0]
    assert problem.key == f"trainer.{key}" and words in problem.message


def test_weight_sync_is_one_rule():
    assert weight_sync(config(), gpus=True) == "nccl"
    assert weight_sync(config(), gpus=False) == "reload"
    assert weight_sync(config(weight_sync="reload"), gpus=True) == "reload"
    assert weight_sync(config(weight_sync="nccl"), gpus=False) == "nccl"


# -- every user agrees -------------------------------------------------------------------------

def _launcher_plan(trainer: TrainerConfig, hosts: tuple[str, ...], rank: int, gpus: int,
                   tmp_path: Path):
    from mtgrpo.sagemaker.contract import OptML, ResourceConfig
    from mtgrpo.sagemaker.launcher import build_plan

    return build_plan(trainer, ResourceConfig(current_host=hosts[rank], hosts=hosts),
                      OptML(tmp_path), model="m", gpu_count=gpus, master_addr="10.0.0.1",
                      python="python")


def test_the_kubeflow_renderer_writes_what_the_launcher_starts(tmp_path):
    """numProcPerNode, the GPUs per pod and the rendered vllm_gpus are the launcher's plan for
    the pods' own topology (so no run-time check of one against the other is needed)."""
    import json

    from mtgrpo.kubeflow import contract as kc
    from mtgrpo.render import build_resources, load_settings

    recipe = load_recipe(REPO / "recipes" / "qwen3-1-7b-kubeflow.yaml", root=REPO)
    built = {r.kind: r.body for r in build_resources(recipe, load_settings(REPO))}
    trainer_spec = built["TrainJob"]["spec"]["trainer"]
    hyperparameters = json.loads(built["ConfigMap"]["data"][kc.HYPERPARAMETERS_KEY])
    rendered = TrainerConfig.from_hyperparameters(hyperparameters)
    nodes = trainer_spec["numNodes"]
    pods = built["TrainingRuntime"]["spec"]["template"]["spec"]["replicatedJobs"]
    containers = [c for job in pods for c in job["template"]["spec"]["template"]["spec"]
                  ["containers"] if c["name"] == kc.CONTAINER]
    gpus = int(containers[0]["resources"]["limits"]["nvidia.com/gpu"])
    hosts = ("10.0.0.1",) + tuple(f"node-rank-{i}" for i in range(1, nodes))
    for rank in range(nodes):
        plan = _launcher_plan(rendered, hosts, rank, gpus, tmp_path)
        assert plan.processes_per_host == trainer_spec["numProcPerNode"]
        assert plan.world_size == trainer_spec["numProcPerNode"] * nodes
    assert _launcher_plan(rendered, hosts, 0, gpus, tmp_path).vllm_gpus == \
        tuple(int(g) for g in rendered.vllm_gpus.split(","))


@pytest.mark.parametrize("name", ["qwen3-1-7b-2node", "qwen3-1-7b-p4d-spot", "qwen2-5-1-5b-g5"])
def test_the_planner_and_the_backend_place_as_the_launcher_does(name, tmp_path):
    from mtgrpo import backends
    from mtgrpo.plan.instances import instance
    from mtgrpo.plan.placement import placement

    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", root=REPO)
    job = recipe.job
    gpus = instance(job["instance_type"]).gpus
    hosts = tuple(f"algo-{i + 1}" for i in range(job["instance_count"]))
    plans = [_launcher_plan(recipe.trainer, hosts, r, gpus, tmp_path) for r in range(len(hosts))]
    planned = placement(recipe.trainer, instance_count=len(hosts), gpus_per_host=gpus,
                        first_host="algo-1")
    assert planned.processes_per_host == tuple(p.processes_per_host for p in plans)
    assert planned.vllm_gpus == plans[0].vllm_gpus
    where, problems = backends.of(recipe).placement(recipe)
    assert problems == [] and where.world_size == plans[0].world_size


def test_the_trainer_pushes_weights_as_the_launcher_started_the_server(tmp_path):
    from mtgrpo.rollout.weight_sync import resolve_weight_sync

    for trainer in (config(), config(weight_sync="reload"), config(weight_sync="nccl")):
        plan = _launcher_plan(trainer, ("algo-1",), 0, 0, tmp_path)  # a CPU host, as here
        server_nccl = plan.vllm is not None and plan.vllm.weight_transfer == "nccl"
        assert server_nccl == (resolve_weight_sync(trainer) == "nccl"), trainer.weight_sync


# -- the checkpoint rule -----------------------------------------------------------------------

def _commit(root: Path, step: int, node: int, num_nodes: int, files: dict[str, str]) -> Path:
    from mtgrpo.sagemaker.checkpoints import commit

    path = root / f"checkpoint-{step}"
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    commit(path, node=node, num_nodes=num_nodes, step=step)
    return path


def test_the_rule_over_a_listing():
    marker = '{"node": 0, "num_nodes": 1, "files": {"w.bin": 3}}'
    assert is_complete({".mtgrpo-complete/node-00000.json": 50, "w.bin": 3}, lambda n: marker)
    assert not is_complete({".mtgrpo-complete/node-00000.json": 50, "w.bin": 2},
                           lambda n: marker)  # a file shorter than listed
    assert not is_complete({"w.bin": 3}, lambda n: marker)  # no marker: not committed
    assert not is_complete({".mtgrpo-complete/node-00000.json": 5, "w.bin": 3},
                           lambda n: "{not json")
    two = '{"node": 0, "num_nodes": 2, "files": {}}'
    assert not is_complete({".mtgrpo-complete/node-00000.json": 5}, lambda n: two)


def test_local_disk_and_s3_agree(tmp_path, monkeypatch):
    """The same checkpoints, judged on disk and after upload to S3 (moto's server), in every
    state: committed, missing a node, a file cut short, never committed."""
    from mtgrpo.kubeflow import s3 as s3sync
    from tests.moto_s3 import BUCKET, s3_server

    local = tmp_path / "ckpt"
    _commit(local, 1, 0, 1, {"model.safetensors": "w" * 50, "trainer_state.json": "{}"})
    _commit(local, 2, 0, 2, {"rng_state_0.pth": "a"})  # node 1 never committed
    _commit(local, 3, 0, 1, {"model.safetensors": "v" * 50})
    (local / "checkpoint-3" / "model.safetensors").write_text("v")  # cut short after commit
    (local / "checkpoint-4").mkdir()
    (local / "checkpoint-4" / "model.safetensors").write_text("partial")  # being saved
    on_disk = {p.name: is_complete_dir(p) for p in sorted(local.iterdir())}
    assert on_disk == {"checkpoint-1": True, "checkpoint-2": False, "checkpoint-3": False,
                       "checkpoint-4": False}
    assert newest_complete(local).name == "checkpoint-1"

    from mtgrpo.trainer.train import newest_complete_checkpoint
    assert newest_complete_checkpoint(local) == newest_complete(local)

    with s3_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        s3 = s3sync.client()
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
            "LocationConstraint": "us-west-2"})
        uri = f"s3://{BUCKET}/ckpt"
        for path in sorted(local.rglob("*")):  # the listing as it is on disk, every file
            if path.is_file():
                s3.put_object(Bucket=BUCKET, Key=f"ckpt/{path.relative_to(local).as_posix()}",
                              Body=path.read_bytes())
        prefix = s3sync.S3Prefix.parse(uri)
        remote = s3sync._remote_checkpoints(s3, prefix)
        in_s3 = {f"checkpoint-{step}": s3sync._complete(s3, prefix, step, files)
                 for step, files in remote.items()}
        assert in_s3 == on_disk
        assert s3sync.latest_complete_checkpoint(s3, uri) == 1
