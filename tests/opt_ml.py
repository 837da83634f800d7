"""Lay out a temporary ``/opt/ml`` the way SageMaker does (for the sagemaker container tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Mapping

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def lay_out(root: Path, hyperparameters: Mapping[str, str], *,
            channels: Mapping[str, Path] | None = None,
            hosts: tuple[str, ...] = ("algo-1",), current_host: str = "algo-1",
            network_interface_name: str = "eth0") -> Path:
    """Write input/config/*.json and copy each channel's directory to input/data/<name>/.

    Default channels: the train/eval QA fixtures and the corpus fixture."""
    if channels is None:
        channels = {"train": FIXTURES / "qa" / "train.jsonl", "eval": FIXTURES / "qa" / "eval.jsonl",
                    "corpus": FIXTURES / "corpus"}
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(dict(hyperparameters), indent=1))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": current_host, "hosts": list(hosts),
         "network_interface_name": network_interface_name}))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None"} for name in sorted(channels)}))
    for name, source in channels.items():
        target = root / "input" / "data" / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / source.name)
    return root
