"""``python -m mtgrpo.hyperpod train``: the image's entry on HyperPod pods (the rendered
container runs it under the operator's agent, ``hyperpodrun``; docs/hyperpod.md)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["train"]:
        print("usage: python -m mtgrpo.hyperpod train", file=sys.stderr)
        return 2
    from mtgrpo.hyperpod.job import run_hyperpod_job

    return run_hyperpod_job()


if __name__ == "__main__":
    sys.exit(main())
