"""``python -m mtgrpo.sagemaker train``: what SageMaker runs (``docker run IMAGE train``), and
the container's command on every other backend (each backend's ``detect``/``run_job``)."""

from __future__ import annotations

import sys
from typing import Sequence

USAGE = "usage: python -m mtgrpo.sagemaker train   (the container's only command)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["train"]:
        print(USAGE, file=sys.stderr)
        return 2
    # The same entry point on every backend: the first that recognises the pod presents the
    # job to the one run_job (the default backend for a local run on a laid-out /opt/ml).
    import os

    from mtgrpo import backends

    table = backends.registry()
    chosen = next((b for b in table.values() if b.detect(os.environ)),
                  table[backends.default_name()])
    return chosen.run_job()


if __name__ == "__main__":
    sys.exit(main())
