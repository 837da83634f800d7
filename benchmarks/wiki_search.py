"""wiki_search speed on a synthetic corpus: index build, load, query latency and throughput.

    python benchmarks/wiki_search.py [--passages 200000] [--threads 16] [--queries 512]

Passages are 100 words drawn from a Zipf-like vocabulary of 200k words (word frequencies of
real text are Zipf-like, which is what makes BM25's posting lists long or short). Queries are
4 words taken from random passages. Prints one line per number and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mtgrpo.trainer.tools.build_corpus import build_corpus
from mtgrpo.trainer.tools.wiki_search import WikiSearch


def synth_corpus(directory: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(200_000)])
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks
    p /= p.sum()
    queries = []
    with (directory / "passages.jsonl").open("w") as f:
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            words = vocab[rng.choice(len(vocab), size=(m, 100), p=p)]
            for j in range(m):
                text = " ".join(words[j])
                f.write(json.dumps({"id": str(start + j), "title": f"Article {start + j}",
                                    "text": text}) + "\n")
                if len(queries) < 4096 and rng.random() < 0.05:
                    queries.append(" ".join(rng.choice(words[j], 4, replace=False)))
    return queries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--queries", type=int, default=512)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}, "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        queries = synth_corpus(root, args.passages)
        print(f"passages: {args.passages} x 100 words "
              f"({(root / 'passages.jsonl').stat().st_size / 2**20:.0f} MiB), "
              f"written in {time.perf_counter() - t0:.1f} s")
        random.Random(0).shuffle(queries)
        queries = (queries * (args.queries // max(len(queries), 1) + 1))[: args.queries]

        t0 = time.perf_counter()
        build_corpus(root)
        print(f"index build (build_corpus --out): {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        tool = WikiSearch(root, top_k=1, max_tokens=256)
        print(f"load prebuilt index: {time.perf_counter() - t0:.2f} s")

        tool(queries[0])
        t0 = time.perf_counter()
        for q in queries:
            tool(q)
        seq = time.perf_counter() - t0
        print(f"sequential: {len(queries)} queries in {seq:.2f} s "
              f"({1000 * seq / len(queries):.2f} ms/query)")

        with ThreadPoolExecutor(args.threads) as pool:
            t0 = time.perf_counter()
            list(pool.map(tool, queries))
            par = time.perf_counter() - t0
        print(f"{args.threads} threads: {len(queries)} queries in {par:.2f} s "
              f"({len(queries) / par:.0f} queries/s, {seq / par:.2f}x sequential)")
        tool.close()

        # Without a prebuilt index: indexed in memory at start.
        (root / "index").rename(root / "index.off")
        t0 = time.perf_counter()
        WikiSearch(root).close()
        print(f"start without index (index in memory): {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
