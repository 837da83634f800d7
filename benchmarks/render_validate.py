"""Render and validate 500 generated recipes; print the time (goal: under 5 s on 2 cores).

    python benchmarks/render_validate.py [--recipes 500] [--repeat 3]

Generates a throw-away project (this repo's templates and base files, N recipes varying the
model, instance type, spot, trainer values; every tenth a tuning recipe), then times
``render_all(write=True)`` (load + schema + validation rules + CRD + service model + templates
+ canonical YAML + writing) into an empty manifests/, and ``render_all(write=False)`` again;
then the shipped recipes of this repository (``render_all(write=False)``, best of 20).
Prints wall and CPU time: on a busy shared machine the CPU time is the fairer number.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

INSTANCES = ["ml.g5.2xlarge", "ml.g5.12xlarge", "ml.p4d.24xlarge", "ml.p5.48xlarge",
             "ml.g6.12xlarge"]
MODELS = ["Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen3-1.7B", "Qwen/Qwen2.5-7B-Instruct"]


def recipe_text(i: int) -> str:
    """A recipe the fit planner accepts (render refuses one that cannot run or fit): the 7B
    model only on 8-GPU instances under ZeRO-3, the 1.5B one on the one-GPU type, rollouts on
    the training GPU of a one-GPU instance, and groups of 2 or 4, which divide every generation
    batch (1 x 4 x the world size)."""
    spot = i % 3 == 0
    instance = INSTANCES[i % len(INSTANCES)]
    big = instance.startswith(("ml.p4d", "ml.p5"))
    model = (MODELS[i % len(MODELS)] if big else MODELS[0] if instance == "ml.g5.2xlarge"
             else MODELS[i % 2])
    lines = [f"name: bench-{i:04d}", "extends: base/account.yaml", "trainer:",
             f"  model_name_or_path: {model}",
             f"  learning_rate: {1 + i % 9}.0e-7", f"  max_steps: {100 + i}",
             f"  num_generations: {2 + 2 * (i % 2)}", f"  seed: {i}"]
    if instance == "ml.g5.2xlarge":
        lines += ["  generation_backend: transformers"]
    if big:
        lines += ["  deepspeed_stage: 3"]
    lines += ["job:",
             f"  instance_type: {instance}",
             f"  instance_count: {1 + i % 2}", f"  max_run: {3600 * (1 + i % 24)}"]
    if spot:
        lines += ["  use_spot_instances: true", f"  max_wait: {3600 * (2 + i % 24)}",
                  f"  checkpoint_s3_uri: s3://amzn-s3-demo-bucket/bench/ckpt/{i}"]
    if i % 10 == 0:
        lines += ["tuning:", "  max_jobs: 10", "  max_parallel_jobs: 2",
                  "  hyperparameter_ranges:",
                  "    learning_rate: {type: continuous, min_value: 1.0e-7, max_value: 1.0e-5,"
                  " scaling_type: Logarithmic}",
                  "    per_device_train_batch_size: {type: integer, min_value: 1, max_value: 4}"]
    return "\n".join(lines) + "\n"


def make_project(root: Path, count: int) -> None:
    (root / "recipes").mkdir(parents=True)
    shutil.copytree(REPO / "recipes" / "base", root / "recipes" / "base")
    shutil.copy2(REPO / "recipes" / "_project.yaml", root / "recipes" / "_project.yaml")
    shutil.copytree(REPO / "templates", root / "templates")
    for i in range(count):
        (root / "recipes" / f"bench-{i:04d}.yaml").write_text(recipe_text(i))


def _cpu(run) -> float:
    c0 = time.process_time()
    run()
    return time.process_time() - c0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    t0 = time.perf_counter()
    from mtgrpo.render import render_all  # import time is part of a CLI run: report it
    import_s = time.perf_counter() - t0
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or '?'}"
          f", Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"import mtgrpo.render: {import_s:.2f} s")
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_project(root, args.recipes)
            t0, c0 = time.perf_counter(), time.process_time()
            result = render_all(root, write=True)
            write_s, write_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            render_all(root, write=False)
            check_s, check_cpu = time.perf_counter() - t0, time.process_time() - c0
            files = len(list((root / "manifests").iterdir()))
        print(f"run {run + 1}: {len(result.recipes)} recipes -> {len(result.resources)} "
              f"resources ({files} files): render+validate+write {write_s:.2f} s wall, "
              f"{write_cpu:.2f} s CPU ({1000 * write_s / len(result.recipes):.1f} ms/recipe); "
              f"render+validate again {check_s:.2f} s wall, {check_cpu:.2f} s CPU")
    # The shipped recipes themselves (this repository, nothing written): best of 20, warm.
    render_all(REPO, write=False)
    best = min(_cpu(lambda: render_all(REPO, write=False)) for _ in range(20))
    shipped = render_all(REPO, write=False)
    print(f"shipped: {len(shipped.recipes)} recipes -> {len(shipped.resources)} resources: "
          f"render+validate {1000 * best:.1f} ms CPU (best of 20)")
    print(f"load average: {os.getloadavg()[0]:.1f} (wall times grow with other load; CPU "
          "time is this process alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
