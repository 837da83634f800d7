"""The SageMaker container contract: the ``/opt/ml`` layout and the files SageMaker writes there.

SageMaker runs the image as ``docker run IMAGE train`` with the job's configuration under
``/opt/ml`` (docs/image.md). The root can be moved with ``MTGRPO_OPT_ML`` so the whole
contract runs in a temporary directory (tests, local dry runs). Everything here is standard
library only: the launcher reads the contract before anything heavy is imported.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mtgrpo.contract.channels import CHANNELS, CORPUS, EVAL, MODEL, REQUIRED_CHANNELS, TRAIN
from mtgrpo.contract.config import TrainerConfig
from mtgrpo.contract.task_spec import uses_corpus
from mtgrpo.errors import Problem, UserError, did_you_mean
from mtgrpo.safepath import extract_tar
from mtgrpo.trainer.paths import RunPaths

ROOT_ENV = "MTGRPO_OPT_ML"
DEFAULT_ROOT = "/opt/ml"
RECORD_SUFFIXES = (".jsonl", ".parquet")
INPUT_MODES = ("File", "FastFile")


@dataclass(frozen=True)
class OptML:
    """Paths of the ``/opt/ml`` tree (rooted at ``$MTGRPO_OPT_ML`` when set)."""

    root: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "OptML":
        env = os.environ if environ is None else environ
        return cls(Path(env.get(ROOT_ENV) or DEFAULT_ROOT))

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "input" / "data"

    def channel_dir(self, name: str) -> Path:
        return self.data_dir / name

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_config_file(self) -> Path:
        return self.config_dir / "checkpointconfig.json"

    @property
    def checkpoint_dir(self) -> Path:
        """CheckpointConfig.LocalPath: SageMaker writes checkpointconfig.json when the job has a
        CheckpointConfig; /opt/ml/checkpoints otherwise. A path under /opt/ml follows the root."""
        local = None
        if self.checkpoint_config_file.is_file():
            data = _read_json(self.checkpoint_config_file, "checkpointconfig.json")
            local = data.get("LocalPath") if isinstance(data, dict) else None
        if not local:
            return self.root / "checkpoints"
        path = Path(local)
        if path.is_relative_to(DEFAULT_ROOT):
            return self.root / path.relative_to(DEFAULT_ROOT)
        return path

    @property
    def work_dir(self) -> Path:
        """Scratch space of this container (logs, stop request, extracted model); not uploaded."""
        return self.output_dir / "mtgrpo-work"


@dataclass(frozen=True)
class ResourceConfig:
    """``resourceconfig.json``: this container's host, all hosts (as given) and the NIC name."""

    current_host: str
    hosts: tuple[str, ...]
    network_interface_name: str | None = None

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def master_host(self) -> str:
        return self.hosts[0]

    @property
    def is_master(self) -> bool:
        return self.node_rank == 0


# -- readers ------------------------------------------------------------------------------------

def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(Problem(str(path), "", f"{what} is missing",
                                "the file SageMaker writes under input/config/")) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(Problem(str(path), "", f"not valid JSON ({err.msg} at line "
                                f"{err.lineno} column {err.colno})", "a JSON object")) from None


def read_hyperparameters(layout: OptML) -> TrainerConfig:
    """Parse ``hyperparameters.json`` (string to string) through the trainer config schema."""
    path = layout.hyperparameters_file
    values = _read_json(path, "hyperparameters.json")
    if not isinstance(values, dict):
        raise UserError(Problem(str(path), "", f"must be a JSON object, got "
                                f"{type(values).__name__}", "a flat string-to-string map"))
    return TrainerConfig.from_hyperparameters(values, source=str(path))


def read_resource_config(layout: OptML) -> ResourceConfig:
    """Read ``resourceconfig.json``; without one (a local run) this is a single host."""
    path = layout.resource_config_file
    if not path.exists():
        return ResourceConfig("algo-1", ("algo-1",), None)
    data = _read_json(path, "resourceconfig.json")
    src = str(path)
    if not isinstance(data, dict):
        raise UserError(Problem(src, "", "must be a JSON object", "current_host, hosts, "
                                "network_interface_name"))
    hosts = data.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(
            isinstance(h, str) and h for h in hosts):
        raise UserError(Problem(src, "hosts", f"invalid value {hosts!r}",
                                "a non-empty list of host names"))
    if len(set(hosts)) != len(hosts):
        raise UserError(Problem(src, "hosts", f"repeated host names in {hosts!r}",
                                "distinct host names"))
    current = data.get("current_host")
    if current not in hosts:
        raise UserError(Problem(src, "current_host", f"{current!r} is not in hosts",
                                ", ".join(hosts)))
    nic = data.get("network_interface_name")
    if nic is not None and (not isinstance(nic, str) or not nic):
        raise UserError(Problem(src, "network_interface_name", f"invalid value {nic!r}",
                                "an interface name such as eth0"))
    return ResourceConfig(str(current), tuple(hosts), nic)


def read_input_data_config(layout: OptML) -> dict[str, dict]:
    """Read ``inputdataconfig.json`` (channel -> settings); empty when the file is absent.

    Known channels only (a typo such as ``training`` would otherwise leave ``train`` silently
    missing), and only file-based input modes: the trainer reads files, not a pipe.
    """
    path = layout.input_data_config_file
    if not path.exists():
        return {}
    data = _read_json(path, "inputdataconfig.json")
    src = str(path)
    if not isinstance(data, dict):
        raise UserError(Problem(src, "", "must be a JSON object", "channel name -> settings"))
    problems = []
    for name, settings in sorted(data.items()):
        if name not in CHANNELS:
            problems.append(Problem(src, name, "unknown channel" + did_you_mean(name, CHANNELS),
                                    ", ".join(CHANNELS)))
            continue
        mode = (settings or {}).get("TrainingInputMode", "File") if isinstance(
            settings, dict) else None
        if mode not in INPUT_MODES:
            problems.append(Problem(src, f"{name}.TrainingInputMode",
                                    f"invalid value {mode!r}", " or ".join(INPUT_MODES)))
    if problems:
        raise UserError(problems)
    return data


# -- channels -> RunPaths -----------------------------------------------------------------------

def _channel_present(layout: OptML, name: str) -> bool:
    path = layout.channel_dir(name)
    return path.is_dir() and any(path.iterdir())


def _record_file(layout: OptML, channel: str, configured: str, key: str) -> Path | None:
    """The records file: ``configured`` (absolute, or relative to the channel) or the channel's
    only .jsonl/.parquet file. None when neither exists (the caller decides if that is fatal)."""
    chan = layout.channel_dir(channel)
    if configured:
        path = Path(configured)
        if not path.is_absolute():
            path = chan / path
        if not path.is_file():
            raise UserError(Problem("hyperparameters.json", key, f"file {str(path)!r} not found",
                                    f"a path absolute or relative to input/data/{channel}/"))
        return path
    if not _channel_present(layout, channel):
        return None
    found = sorted(p for p in chan.rglob("*") if p.is_file() and p.suffix in RECORD_SUFFIXES)
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(chan)) for p in found[:5]) or "none"
        raise UserError(Problem(str(chan), "", f"expected one .jsonl or .parquet file, found "
                                f"{len(found)} ({listed})",
                                f"one records file, or set {key} to choose one"))
    return found[0]


def _model_from_channel(layout: OptML) -> str | None:
    """A directory with config.json in the `model` channel (a model.tar.gz is unpacked)."""
    chan = layout.channel_dir(MODEL)
    if not _channel_present(layout, MODEL):
        return None
    if (chan / "config.json").is_file():
        return str(chan)
    archives = sorted(chan.glob("*.tar.gz"))
    if len(archives) == 1:
        target = layout.work_dir / "model-channel"
        if not (target / "config.json").is_file():
            # Unpack beside the target and rename, so no one sees a half-unpacked model.
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            extract_tar(archives[0], partial)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        if (target / "config.json").is_file():
            return str(target)
    nested = sorted(p.parent for p in chan.glob("*/config.json"))
    if len(nested) == 1:
        return str(nested[0])
    raise UserError(Problem(str(chan), "", "no model found (no config.json)",
                            "a save_pretrained directory or one model.tar.gz, as SageMaker "
                            "writes to model/"))


def resolve_paths(config: TrainerConfig, layout: OptML) -> RunPaths:
    """The run's inputs from the channels (or the config's explicit paths) and its outputs."""
    read_input_data_config(layout)
    problems = []
    train = _record_file(layout, TRAIN, config.train_file, "train_file")
    eval_file = _record_file(layout, EVAL, config.eval_file, "eval_file")
    if config.corpus_dir:
        corpus = Path(config.corpus_dir)
        if not corpus.is_absolute():
            corpus = layout.channel_dir(CORPUS) / corpus
        if not corpus.is_dir():
            raise UserError(Problem("hyperparameters.json", "corpus_dir",
                                    f"directory {str(corpus)!r} not found",
                                    "a directory absolute or relative to input/data/corpus/"))
    elif _channel_present(layout, CORPUS):
        corpus = layout.channel_dir(CORPUS)
    else:
        corpus = None
    present = sorted(p.name for p in layout.data_dir.iterdir()) if layout.data_dir.is_dir() else []
    needs_corpus = uses_corpus(config.task_tools)  # only a task with a search tool reads one
    for name, value in ((TRAIN, train), (CORPUS, corpus)):
        if value is None and (name != CORPUS or needs_corpus):
            problems.append(Problem(str(layout.channel_dir(name)),
                                    "", f"required channel '{name}' is missing or empty "
                                    f"(present: {', '.join(present) or 'none'})",
                                    "channels " + ", ".join(REQUIRED_CHANNELS) + " required; "
                                    + ", ".join(c for c in CHANNELS if c not in REQUIRED_CHANNELS)
                                    + " optional"))
    if problems:
        raise UserError(problems)
    assert train is not None  # a missing train channel is one of the problems
    model = _model_from_channel(layout) or config.model_name_or_path
    return RunPaths(model=model, train_file=train, eval_file=eval_file, corpus_dir=corpus,
                    output_dir=layout.output_data_dir, model_dir=layout.model_dir,
                    checkpoint_dir=layout.checkpoint_dir)
