"""``python -m mtgrpo.sagemaker train``: what SageMaker runs (``docker run IMAGE train``), and
the container's command on every other backend (each backend's ``detect``/``run_job``).

Only the standard library, the backend registry and ``mtgrpo.sagemaker.failure``'s light
helpers are imported before the job starts: an image missing one of the trainer's packages
still writes its reason to ``/opt/ml/output/failure`` (SageMaker's FailureReason) instead of
dying with a bare traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

USAGE = "usage: python -m mtgrpo.sagemaker train   (the container's only command)"
# The /opt/ml root's override (mtgrpo.sagemaker.contract.ROOT_ENV), read here without importing
# the contract: the contract itself may be what fails to import.
ROOT_ENV = "MTGRPO_OPT_ML"


def _failure_file() -> Path:
    return Path(os.environ.get(ROOT_ENV) or "/opt/ml") / "output" / "failure"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["train"]:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        # The same entry point on every backend: the first that recognises the pod presents
        # the job to the one run_job (the default backend for a local run on a laid-out
        # /opt/ml).
        from mtgrpo import backends

        table = backends.registry()
        chosen = next((b for b in table.values() if b.detect(os.environ)),
                      table[backends.default_name()])
    except Exception as err:  # an image without a trainer package: say which, in the failure file
        return _import_failed(err)
    try:
        return chosen.run_job()
    except ImportError as err:  # the job's modules (each run_job reports its own failures)
        return _import_failed(err)


def _import_failed(err: Exception) -> int:
    from mtgrpo.sagemaker.failure import EXIT_INTERNAL_ERROR, write_failure

    missing = getattr(err, "name", None) if isinstance(err, ImportError) else None
    what = f"the image lacks the Python package {missing!r}" if missing else \
        f"{type(err).__name__}: {err}"
    reason = (f"mtgrpo could not start: {what} (build the image from the project's Dockerfile, "
              f"or install mtgrpo[trainer] in it)")
    print(f"error: {reason}", file=sys.stderr, flush=True)
    try:
        write_failure(_failure_file(), reason)
    except OSError as write_err:
        print(f"error: could not write {_failure_file()}: {write_err}", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
