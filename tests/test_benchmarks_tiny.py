"""The GPU benchmarks' code paths, run at their tiny CPU shape (``--tiny``), so a change that
breaks a benchmark shows here and not on the next lent GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--tiny", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_sagemaker_train_benchmark_runs_the_job_and_the_learner_at_its_shape(tmp_path):
    out = tmp_path / "sm.json"
    proc = _run("sagemaker_train_gpu.py", "--steps", "2", "--warmup", "1", "--repeats", "1",
                "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    job = result["job"]
    assert job["exit"] == 0 and "liger kernels: off" in job["start_line"]  # CPU: off
    assert [row["step"] for row in job["steps"]] == [1, 2]
    assert all(row["learn_s"] > 0 and row["tokens"] > 0 for row in job["steps"])
    # The benchmark's batch carries the job's token count (prompt and completion lengths).
    assert abs(result["bench"]["real_tokens"] - job["median_tokens"]) <= 0.05 * job["median_tokens"]
    assert result["bench"]["liger"] == [] and result["job_over_bench"] > 0


def test_profile_benchmark_variants_run(tmp_path):
    out = tmp_path / "profile.json"
    proc = _run("profile_learner.py", "--every", "0", "--warmup", "1", "--repeats", "1",
                "--variants", "selective", "loop-copies", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    timings = json.loads(out.read_text())["timings"]
    assert timings["no ckpt"]["ms_per_step"] > 0
    assert timings["selective ckpt"]["ms_per_step"] > 0
    # fp32 on CPU: there are no master copies to time, and the row says so.
    assert timings["loop copies, no ckpt"] == {"error": "not MasterWeightsAdamW"}


def test_step_shape_benchmark_forces_three_turns_and_reports_each_step(tmp_path):
    out = tmp_path / "step.json"
    proc = _run("step_shape.py", "--variants", "full,lora", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    for variant in ("full", "lora"):
        steps = results[variant]["steps"]
        assert [s["step"] for s in steps] == [1, 2]
        for s in steps:
            # call turn, result, call turn, result, answer turn: three sampler calls a step
            assert s["sampler_calls"] == 3 and s["turn_rows"] == [4, 4, 4]
            assert s["rollout_s"] > 0 and s["learner_s"] > 0 and s["sampled_tokens"] > 0
            assert s["prompt_tokens"] > 3 * 4 * 8  # later turns carry the earlier ones
            # CPU: no compiled decode, no static cache: every turn is prefilled whole
            assert s["prefill_tokens"] == s["prompt_tokens"]
    # LoRA samples from merged weights: the merge is timed as the step's weight sync.
    assert results["lora"]["merge_lora"] and results["lora"]["steps"][0]["weight_sync_s"] > 0
    assert results["full"]["steps"][0]["weight_sync_s"] == 0


def test_step_shape_bound_and_planner_prediction_arithmetic():
    """The benchmark's bandwidth bound by hand, and the planner's step for the card it ran on
    (what RESULTS.md compares with the measured step)."""
    import importlib.util

    from mtgrpo.plan.shapes import KNOWN_SHAPES
    from mtgrpo.recipes import load_recipe

    spec = importlib.util.spec_from_file_location("step_shape",
                                                  REPO / "benchmarks" / "step_shape.py")
    step_shape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_shape)
    shape = KNOWN_SHAPES["Qwen/Qwen2.5-1.5B-Instruct"]
    calls = [{"budgets": [4, 2], "prompt_lengths": [10, 6], "prefilled": 16, "turn": 0}]
    weights, kvb = 1000, shape.kv_bytes_per_token()
    expected = (4 * weights + kvb * (10 * 4 + 6 + 6 * 4 + 6)) / 3350e9 \
        + weights * 16 / 989.4e12
    assert step_shape.rollout_bound(calls, shape, weights, (989.4, 3350)) == \
        pytest.approx(expected)
    assert step_shape.rollout_bound(calls, shape, weights, None) is None
    config = load_recipe(REPO / "recipes" / "qwen2-5-1-5b-g5.yaml", root=REPO).trainer
    rows = [{"calls": [{"turn": 0, "prompt_lengths": [200, 192]}]}]
    p = step_shape.planner_prediction(shape, config, "NVIDIA H100 80GB HBM3", rows, 256)
    assert p["row"] == "H100" and p["same_shape"] and p["step_s"] > p["rollout_s"] > 0
    assert step_shape.planner_prediction(shape, config, None, rows, 96) is None
