"""``python -m mtgrpo.sagemaker train``: what SageMaker runs (``docker run IMAGE train``), and
the ``node`` container's command on Kubeflow Trainer (docs/kubeflow.md)."""

from __future__ import annotations

import sys
from typing import Sequence

USAGE = "usage: python -m mtgrpo.sagemaker train   (the container's only command)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["train"]:
        print(USAGE, file=sys.stderr)
        return 2
    # Root (SageMaker) becomes the image's user before anything reads the job's input.
    from mtgrpo.sagemaker.contract import OptML
    from mtgrpo.sagemaker.privileges import drop_root
    drop_root(OptML.from_env())
    # issue 17: the same entry point on Kubeflow Trainer (PET_* set, no SageMaker files).
    from mtgrpo.kubeflow.platform import KUBEFLOW, detect
    if detect() == KUBEFLOW:
        from mtgrpo.kubeflow.job import run_kubeflow_job
        return run_kubeflow_job()
    from mtgrpo.sagemaker.job import run_job

    return run_job()


if __name__ == "__main__":
    sys.exit(main())
