"""One training process: ``python -m mtgrpo.sagemaker.worker`` (started by the launcher,
directly on CPU or once per GPU through ``accelerate launch``).

It reads the same contract as the launcher, takes the vLLM URL the launcher chose, and calls
``mtgrpo.trainer.train.run`` with the checkpoint callback. A stop request (the launcher's stop
file, or SIGTERM/SIGINT through ``mtgrpo.stopping.RunStop``) ends it with 143 after the step's
checkpoint is saved, without writing a final model.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from mtgrpo.sagemaker.checkpoints import STOPPED_FILE_ENV, StopRequest, TrainingInterrupted
from mtgrpo.sagemaker.code import activate_code
from mtgrpo.sagemaker.contract import OptML, read_hyperparameters, resolve_paths
from mtgrpo.sagemaker.failure import EXIT_INTERRUPTED, report
from mtgrpo.sagemaker.job import METRICS_FILE


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtgrpo.sagemaker.worker")
    parser.add_argument("--vllm-server-url", default="",
                        help="the server the launcher started or waited for")
    args = parser.parse_args(argv)
    from mtgrpo.stopping import RunStop

    layout = OptML.from_env()
    stop = StopRequest.from_env()
    code = None
    with RunStop("mtgrpo worker") as signals:
        signals.bind(stop.set)  # the callback saves at the end of the step, all ranks agreeing
        code = _run(args, layout, stop)
    return EXIT_INTERRUPTED if code is None else code  # None: a second signal, stop at once


def _run(args, layout: OptML, stop: StopRequest) -> int:
    try:
        config = read_hyperparameters(layout)
        if args.vllm_server_url:
            config = config.replace(vllm_server_url=args.vllm_server_url)
        paths = resolve_paths(config, layout)
        activate_code(layout)  # the launcher unpacked it; the plug-ins load inside run()
        from mtgrpo.sagemaker.callback import CheckpointCallback
        from mtgrpo.trainer.train import run

        callback = CheckpointCallback(stop, metrics_file=paths.output_dir / METRICS_FILE)
        summary = run(config, paths, callbacks=[callback], resume=True,
                      source=str(layout.hyperparameters_file))
        print(f"mtgrpo: training finished at step {summary.get('global_step')}", flush=True)
        return 0
    except TrainingInterrupted as stopped:
        print(f"mtgrpo: {stopped}", flush=True)
        if os.environ.get(STOPPED_FILE_ENV):
            Path(os.environ[STOPPED_FILE_ENV]).write_text(f"{stopped.step}\n")
        return EXIT_INTERRUPTED
    except Exception as err:
        return report(layout.failure_file, err)


if __name__ == "__main__":
    sys.exit(main())
