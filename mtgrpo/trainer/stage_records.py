"""``python -m mtgrpo.trainer.stage_records OUT.jsonl SHARD...``: join a split's shards into the
one record file a job's channel takes (docs/first-job.md, step 2).

A job's ``train`` and ``eval`` channels hold exactly one ``.jsonl`` or ``.parquet`` file, while
TriviaQA's download has several parquet shards per split. Each shard is read with the trainer's
own record reader (so a record the job would refuse is refused here, with its file and row), and
the records are written as flat ``{"id", "question", "aliases"}`` lines: a fraction of the
shards' size, since the evidence pages the raw rows carry are not needed (the search corpus is
built from them separately). Written atomically; duplicate ids are kept once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from mtgrpo.errors import Problem, UserError


def stage(out: Path, shards: Sequence[Path]) -> int:
    """Write the records of ``shards`` (in the given order) to ``out``; return how many."""
    from mtgrpo.trainer.data import load_records

    missing = [Problem(str(s), "", "no such file", "a .jsonl or .parquet shard")
               for s in shards if not Path(s).is_file()]
    if missing:
        raise UserError(missing)
    if out.suffix != ".jsonl":
        raise UserError(Problem(str(out), "", "the output must be a .jsonl file",
                                "a path ending in .jsonl"))
    seen: set[str] = set()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for shard in shards:
                for record in load_records(shard):
                    if record.id in seen:
                        continue
                    seen.add(record.id)
                    f.write(json.dumps({"id": record.id, "question": record.question,
                                        "aliases": list(record.aliases)},
                                       ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(seen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtgrpo.trainer.stage_records",
        description="Join a split's record shards (TriviaQA parquet or JSONL) into one .jsonl "
                    "file for a job's train or eval channel.")
    parser.add_argument("out", type=Path, metavar="OUT.jsonl", help="the file to write")
    parser.add_argument("shards", type=Path, nargs="+", metavar="SHARD",
                        help="the split's shards, e.g. triviaqa/rc.wikipedia/train-*.parquet")
    args = parser.parse_args(argv)
    try:
        count = stage(args.out, args.shards)
    except UserError as err:
        for line in err.report():
            print(f"error: {line}", file=sys.stderr)
        return 1
    print(f"wrote {count} records to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
