"""A local demo that visibly learns: train the warm-started tiny model with MT-GRPO.

    python -m mtgrpo.testing.demo --output out/demo      # about 2 minutes on 2 CPU cores
    mtgrpo plot out/demo --output out/demo/curves.png

Builds the synthetic code-lookup task (``recipes/local/``'s), starts one vLLM CPU server and
runs ``train.run`` with vLLM rollouts and a weight sync every step, as ``mtgrpo train`` does,
on the shipped warm-started tiny model (``mtgrpo/testing/warm_model/``: the tiny model after
the supervised warm start of ``tests/test_learning.py``, :mod:`mtgrpo.testing.warm_start`; a
policy that can use the search tool but has not learned what to search for, about 30 %
success). The printed ``mtgrpo-metrics:`` lines, ``metrics.jsonl`` and the TensorBoard events
show reward and exact match rising. ``--warm-start`` redoes the warm start from the random tiny
model first (9-35 minutes on 2 loaded cores, docs/trainer.md); ``--rebuild-warm-model DIR``
only does that and saves the result (how the shipped model was made, see its SOURCE.md).
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

GRPO_LR = 2e-4  # tests/test_learning.py's: 5e-4 once collapsed (docs/trainer.md)
WARM_MODEL = Path(__file__).with_name("warm_model")  # the shipped warm start (SOURCE.md)
REBUILD_COMMAND = "python -m mtgrpo.testing.demo --rebuild-warm-model mtgrpo/testing/warm_model"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _warm_start(work: Path, server_url: str, dest: Path):
    """The random tiny model (seed 0) warm-started against the server serving it, saved to
    ``dest``."""
    from mtgrpo.testing.warm_start import warm_start

    warm = warm_start(work / "tiny-model", work / "task", server_url, dest, work,
                      progress=lambda line: print(line, flush=True))
    print(warm.summary(), flush=True)
    return warm


def _source_note(warm) -> str:
    """SOURCE.md of a rebuilt warm model: how it was made and what the warm start measured."""
    from mtgrpo.testing.warm_start import CALIBRATION_CHUNK_STEPS, SKILL_CHUNK_STEPS

    return (
        "# The warm-started tiny model of the local demo\n\n"
        "The tiny model of `mtgrpo.testing.tiny` (`build_tiny_model(dir, seed=0)`: two layers,\n"
        "hidden 128, vocabulary 1024, float32) after the supervised warm start of\n"
        "`mtgrpo.testing.warm_start` (torch seed 0, the demonstrations' seeds fixed), on the\n"
        "synthetic task `write_task(dir)` (seed 0). `python -m mtgrpo.testing.demo` trains it\n"
        "with MT-GRPO. Made with\n\n"
        f"    {REBUILD_COMMAND}\n\n"
        "The supervised steps are seeded; when each phase stops depends on success measured\n"
        "with sampled vLLM rollouts (72 episodes, temperature 0.7), so a rebuild can stop a\n"
        "chunk earlier or later and give other bytes. This build measured (success, share of\n"
        "searches naming the asked entity):\n\n"
        f"- skill, per {SKILL_CHUNK_STEPS} steps at lr 3e-3: {warm.skill}\n"
        f"- calibration, per {CALIBRATION_CHUNK_STEPS} steps at lr 3e-4: {warm.calibration}\n"
        f"- warm success: {warm.warm_success} (the policy GRPO starts from)\n\n"
        "The tokenizer is `build_tiny_model`'s, saved back by the warm start as transformers\n"
        "loads it (a Qwen2Tokenizer, whose tokenizer.json spells the pre-tokenizer out): the\n"
        "same ids (tests/test_demo.py).\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtgrpo.testing.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path,
                        help="run directory: metrics.jsonl, tensorboard/, model/, vllm.log")
    parser.add_argument("--algorithm", default="mt_grpo", choices=("mt_grpo", "grpo_or"))
    parser.add_argument("--steps", type=int, default=15, help="GRPO steps (default 15)")
    parser.add_argument("--warm-start", action="store_true",
                        help="redo the supervised warm start from the random tiny model instead "
                             "of using the shipped warm model (9-35 minutes on 2 loaded CPU cores)")
    parser.add_argument("--rebuild-warm-model", type=Path, metavar="DIR",
                        help="only warm-start the tiny model and save it with its SOURCE.md to "
                             "DIR (how mtgrpo/testing/warm_model was made)")
    parser.add_argument("--mlflow-uri", default="", help="also log the run to this MLflow "
                                                         "tracking server (docs/metrics.md)")
    parser.add_argument("--experiment", default="mtgrpo-demo",
                        help="MLflow experiment (default mtgrpo-demo): run the demo once per "
                             "--algorithm into one experiment to compare them side by side")
    args = parser.parse_args(argv)
    if args.rebuild_warm_model is not None:
        out = args.rebuild_warm_model.resolve()
        if out.exists() and any(out.iterdir()):
            sys.exit(f"error: {out} is not empty: choose a new directory")
        work_root = Path(tempfile.mkdtemp(prefix="mtgrpo-warm-"))  # kept: vllm.log
    elif args.output is None:
        parser.error("--output is required (or --rebuild-warm-model DIR)")
    else:
        out = args.output.resolve()
        if (out / "metrics.jsonl").exists():
            sys.exit(f"error: {out}/metrics.jsonl exists: choose a new --output directory")
        work_root = out
    out.mkdir(parents=True, exist_ok=True)
    work = work_root / "work"

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.rollout.server import VLLMServer
    from mtgrpo.testing.synthetic import task_parser, write_task
    from mtgrpo.testing.tiny import build_tiny_model
    from mtgrpo.testing.warm_start import TEMPERATURE
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import run

    started = time.perf_counter()
    warm_again = args.warm_start or args.rebuild_warm_model is not None
    # The server first serves the model it starts from; train.run pushes its weights each step.
    served = build_tiny_model(work / "tiny-model", seed=0) if warm_again else WARM_MODEL
    task = write_task(work / "task")
    log = (work_root if args.rebuild_warm_model is not None else out) / "vllm.log"
    server = VLLMServer(served, port=_free_port(), gpu_memory_utilization=0.3, log_path=log)
    print(f"starting vLLM server on {server.url} (log: {log})", flush=True)
    warm = None
    try:
        server.start().wait_healthy(900)
        print(f"server up after {time.perf_counter() - started:.0f} s", flush=True)
        if args.rebuild_warm_model is not None:
            warm = _warm_start(work, server.url, out)
            (out / "SOURCE.md").write_text(_source_note(warm), encoding="utf-8")
            print(f"saved {out} ({time.perf_counter() - started:.0f} s)")
            return 0
        if args.warm_start:
            warm = _warm_start(work, server.url, work / "warm-model")
        model_dir = warm.model_dir if warm is not None else WARM_MODEL
        config = TrainerConfig(
            model_name_or_path=str(model_dir), generation_backend="vllm",
            vllm_server_url=server.url, weight_sync="reload", vllm_request_timeout_s=120,
            algorithm=args.algorithm, num_generations=4, per_device_train_batch_size=32,
            gradient_accumulation_steps=1, max_steps=args.steps, num_epochs=100,
            learning_rate=GRPO_LR, max_grad_norm=1.0, temperature=TEMPERATURE, eval_steps=5,
            max_eval_samples=6, save_steps=10_000, max_turns=2, max_tool_calls=1,
            max_tokens_per_turn=40, max_completion_length=128, search_max_tokens=32,
            reward_format=0.0, reward_xml_count=0.0, seed=0)
        paths = RunPaths(str(model_dir), task / "train.jsonl", task / "eval.jsonl",
                         task / "corpus", out, out / "model", out / "checkpoints")
        tracking = None
        if args.mlflow_uri:
            from mtgrpo.tracking.settings import MlflowSettings, TrackingSettings

            tracking = TrackingSettings(mlflow=MlflowSettings(args.mlflow_uri, args.experiment),
                                        recipe="local-demo")
        summary = run(config, paths, parser=task_parser(), resume=False, tracking=tracking)
    finally:
        server.stop()
    summary["warm_start"] = ({"skill": warm.skill, "calibration": warm.calibration,
                              "seconds": round(warm.seconds, 1)} if warm is not None
                             else {"shipped": str(WARM_MODEL)})
    summary["demo_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    print(f"curves: mtgrpo plot {args.output} --output {args.output / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
