"""``mtgrpo train CONFIG.yaml --output DIR``: run the MT-GRPO trainer on this machine.

CONFIG is a YAML file with a ``trainer:`` section, the same shape as a recipe's (other
top-level sections, such as ``job:``, are ignored here). Relative paths in it
(``model_name_or_path`` when it names a local directory, ``train_file``, ``eval_file``,
``corpus_dir``) are resolved against the config file's directory; ``task_*`` plug-in paths
import from the current directory (docs/tasks.md). Outputs under DIR:
``metrics.jsonl``, ``eval_summary.json``, ``model/`` (the final model) and ``checkpoints/``.

With ``generation_backend: vllm`` and no server answering at ``vllm_server_url``, the command
starts one itself on that host and port (serving the initial model), and stops it at the end;
``--no-start-server`` turns that off.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from mtgrpo.errors import Problem, UserError

PATH_KEYS = ("train_file", "eval_file", "corpus_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML file with a `trainer:` section")
    parser.add_argument("--output", "-o", type=Path, required=True,
                        help="directory for metrics.jsonl, eval_summary.json, model/, checkpoints/")
    parser.add_argument("--no-resume", action="store_true",
                        help="start fresh even if DIR/checkpoints holds a checkpoint")
    parser.add_argument("--no-start-server", action="store_true",
                        help="never start a vLLM server; fail if none answers")
    parser.add_argument("--warm-start", action="store_true",
                        help="first teach the model the task's tool-call format from scripted "
                             "episodes (a small model that never calls a new task's tool; "
                             "docs/tasks.md), saved in DIR/warm-start and trained from there")
    parser.add_argument("--vllm-port", type=int, metavar="PORT",
                        help="use (or start) the local vLLM server on this port instead of the "
                             "port in trainer.vllm_server_url")


def load_config(path: Path):
    """The TrainerConfig of a config file, relative paths resolved against its directory.

    Read with the recipes' own YAML reader (YAML 1.2 numbers: ``learning_rate: 1e-6`` is a
    float; duplicate keys, ambiguous numbers and hostile documents refused).
    """
    from mtgrpo.contract import TrainerConfig
    from mtgrpo.recipes.yamlfile import read_yaml

    source = str(path)
    if not path.is_file():
        raise UserError(Problem(source, "", "config file not found", "a YAML file"))
    data = read_yaml(path, source=source)
    if not isinstance(data, dict) or "trainer" not in data:
        raise UserError(Problem(source, "trainer", "missing section",
                                "a mapping with a `trainer:` section of hyperparameters"))
    section = data["trainer"]
    if not isinstance(section, dict):
        raise UserError(Problem(source, "trainer", "must be a mapping of hyperparameters",
                                "see docs/hyperparameters.md"))
    section = {k: v for k, v in section.items() if v is not None}  # null = the default
    config = TrainerConfig.from_mapping(section, source=source)
    base = path.resolve().parent
    changes = {}
    for key in PATH_KEYS:
        value = getattr(config, key)
        if value and not Path(value).is_absolute():
            changes[key] = str(base / value)
    model = config.model_name_or_path
    if not Path(model).is_absolute() and (base / model).exists():
        changes["model_name_or_path"] = str(base / model)
    config = dataclasses.replace(config, **changes)
    if not config.train_file:
        raise UserError(Problem(source, "trainer.train_file", "required for a local run",
                                "a .jsonl or .parquet file of question/aliases records"))
    from mtgrpo.contract.task_spec import uses_corpus

    if not config.corpus_dir and uses_corpus(config.task_tools):
        raise UserError(Problem(source, "trainer.corpus_dir", "required for a local run",
                                "a directory holding passages.jsonl"))
    for key in PATH_KEYS:
        value = getattr(config, key)
        if value and not Path(value).exists():
            raise UserError(Problem(source, f"trainer.{key}", f"{value} does not exist",
                                    "a path relative to the config file, or absolute"))
    return config


def plugin_path(config_file: Path) -> None:
    """Make task plug-ins importable the way data paths resolve: from the config file's
    directory first, then the current directory (as under ``python -m``). docs/tasks.md."""
    for folder in (os.getcwd(), str(Path(config_file).resolve().parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def validate_local(path: Path) -> str:
    """Every check ``mtgrpo train`` runs on a local config before it starts anything: the
    values, the paths, the batch shape and each plug-in (imported as ``train`` imports it).
    Returns a summary line; raises ``UserError`` with every problem."""
    config = load_config(path)
    plugin_path(path)
    problems = []
    from mtgrpo.trainer.train import check_batch_shape
    from mtgrpo.task.loading import check_task

    for check in (lambda: check_batch_shape(config, int(os.environ.get("WORLD_SIZE", "1")),
                                            source=str(path)),
                  lambda: check_task(config, source=str(path))):
        try:
            check()
        except UserError as err:
            problems += err.problems
    if problems:
        raise UserError(problems)
    return (f"ok: {path}: local trainer config valid ({config.generation_backend} rollouts, "
            f"{config.max_steps} steps, task tools {config.task_tools or 'built-in'})")


def is_local_config(path: Path) -> bool:
    """A ``mtgrpo train`` config (only a ``trainer:`` section, no job), not a recipe."""
    from mtgrpo.recipes.yamlfile import read_yaml

    try:
        data = read_yaml(path, source=str(path))
    except UserError:  # reported by whichever reader the file's place says it is for
        return "recipes" not in Path(os.path.abspath(path)).parent.parts
    return isinstance(data, dict) and "trainer" in data and not (
        {"job", "extends", "name", "backend", "tuning"} & set(data))


def _warm_started(config, paths, source: str):
    """The config and paths with the model replaced by its format warm start (made once per
    output directory: a re-run, which resumes, reuses it)."""
    warm_dir = paths.output_dir / "warm-start"
    if not (warm_dir / "config.json").is_file():
        from mtgrpo.testing.task_warm_start import warm_start_task

        warm = warm_start_task(config, paths, warm_dir, source=source,
                               progress=lambda line: print(line, flush=True))
        print(warm.summary(), flush=True)
    config = dataclasses.replace(config, model_name_or_path=str(warm_dir))
    return config, dataclasses.replace(paths, model=str(warm_dir))


def with_port(config, port: int):
    """The config with ``vllm_server_url``'s port replaced (``--vllm-port``)."""
    if not 1 <= port <= 65535:
        raise UserError(Problem("--vllm-port", "", f"{port} is not a TCP port", "1-65535"))
    url = urlparse(config.vllm_server_url)
    netloc = f"{url.hostname}:{port}" if url.hostname else f"127.0.0.1:{port}"
    return dataclasses.replace(config, vllm_server_url=url._replace(netloc=netloc).geturl())


def run_paths(config, output: Path):
    from mtgrpo.trainer.paths import RunPaths

    out = output.resolve()
    return RunPaths(model=config.model_name_or_path, train_file=Path(config.train_file),
                    eval_file=Path(config.eval_file) if config.eval_file else None,
                    corpus_dir=Path(config.corpus_dir) if config.corpus_dir else None,
                    output_dir=out,
                    model_dir=out / "model", checkpoint_dir=out / "checkpoints")


def _local_server(config, output: Path, allowed: bool):
    """A VLLMServer to start for this run, or None when one already answers (or not wanted)."""
    if config.generation_backend not in ("vllm", "vllm_shared"):
        return None
    from mtgrpo.rollout.client import VLLMClient

    if VLLMClient(config.vllm_server_url).healthy():
        return None
    source = "--no-start-server"
    if not allowed:
        raise UserError(Problem(source, "trainer.vllm_server_url",
                                f"no vLLM server answers at {config.vllm_server_url}",
                                "start one, or drop --no-start-server"))
    url = urlparse(config.vllm_server_url)
    if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
        raise UserError(Problem("", "trainer.vllm_server_url",
                                f"no vLLM server answers at {config.vllm_server_url}, and only a "
                                "local one (127.0.0.1 with a port) can be started",
                                "http://127.0.0.1:PORT or a running server"))
    from mtgrpo.rollout.server import VLLMServer

    import torch

    from mtgrpo.contract.placement import place

    # The one placement rule, on this machine's GPUs (one node): which GPUs the server gets and
    # whether weights go over NCCL; a GPU it cannot place on is one line naming the key.
    where = place(config, num_nodes=1,
                  gpus_per_node=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                  source="mtgrpo train", key_prefix="trainer.")
    gpus = where.vllm_gpus_text or None
    shared = where.shared
    utilization = config.vllm_gpu_memory_utilization if gpus else 0.3
    if gpus and shared:
        from mtgrpo.rollout.shared_gpu import shared_gpu_memory_utilization

        first = int(gpus.split(",")[0])
        utilization = shared_gpu_memory_utilization(
            config, config.model_name_or_path, torch.cuda.get_device_properties(first).total_memory)
    return VLLMServer(config.model_name_or_path, port=url.port, host=url.hostname, gpus=gpus,
                      gpu_memory_utilization=utilization, log_path=output / "vllm.log",
                      weight_transfer="nccl" if gpus and where.weight_sync == "nccl" else None)


def run(args: argparse.Namespace) -> int:
    from mtgrpo.commands._extras import require

    config = load_config(args.config)  # config mistakes first: they need no extra
    if args.vllm_port is not None:
        config = with_port(config, args.vllm_port)
    require("trainer", "train")
    from mtgrpo.trainer.train import check_batch_shape

    plugin_path(args.config)
    # Before any heavy import: a bad batch shape is a config mistake, reported at once.
    check_batch_shape(config, int(os.environ.get("WORLD_SIZE", "1")), source=str(args.config))
    from mtgrpo.task.loading import check_task

    check_task(config, source=str(args.config))  # a missing plug-in fails before vLLM starts
    paths = run_paths(config, args.output)
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    if args.warm_start:
        config, paths = _warm_started(config, paths, str(args.config))
    server = _local_server(config, paths.output_dir, not args.no_start_server)
    try:
        if server is not None:
            print(f"starting vLLM server on {server.url} (log: {paths.output_dir / 'vllm.log'})",
                  flush=True)
            server.start().wait_healthy(config.vllm_startup_timeout_s)
        from mtgrpo.rollout.client import SamplerError
        from mtgrpo.trainer.train import run as train

        try:
            summary = train(config, paths, resume=not args.no_resume, source=str(args.config))
        except SamplerError as err:  # the server died or stopped answering: say so, one line
            raise UserError(Problem(str(args.config), "trainer.vllm_server_url",
                                    f"training stopped: {err}")) from None
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0
