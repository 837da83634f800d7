"""docs/metrics.md's table of SageMaker metrics is the contract: every name it lists is a
metric definition of the contract, and every rendered training job publishes it."""

from __future__ import annotations

import re
from pathlib import Path

from mtgrpo.contract.metrics import METRICS, metric_regex

REPO = Path(__file__).resolve().parent.parent


def _documented() -> list[str]:
    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    section = text.split("## The names", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"^\| `([a-z][a-z0-9_]*)` \|", section, flags=re.M)
    assert len(names) >= 10, names
    return names


def test_every_documented_metric_is_in_the_contract_and_back():
    documented = _documented()
    assert len(documented) == len(set(documented))
    assert sorted(documented) == sorted(METRICS)
    assert "gpu_peak_gib" in documented


def test_every_documented_metric_is_rendered_into_each_training_job():
    from mtgrpo.render import render_all

    result = render_all(REPO, write=False)
    import yaml

    jobs = [yaml.safe_load(text) for name, text in result.files.items()
            if str(name).endswith("-trainingjob.yaml")]
    tuning = [yaml.safe_load(text) for name, text in result.files.items()
              if str(name).endswith("-hyperparametertuningjob.yaml")]
    assert jobs and tuning
    specs = [j["spec"]["algorithmSpecification"] for j in jobs] + [
        t["spec"]["trainingJobDefinition"]["algorithmSpecification"] for t in tuning]
    for spec in specs:
        rendered = {d["name"]: d["regex"] for d in spec["metricDefinitions"]}
        for name in _documented():
            assert rendered.get(name) == metric_regex(name), name
