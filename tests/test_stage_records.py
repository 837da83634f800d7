"""``python -m mtgrpo.trainer.stage_records``: a split's shards become one channel file."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from mtgrpo.trainer.data import load_records
from mtgrpo.trainer.stage_records import main


def _shard(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _row(qid, question, value, aliases):
    # the raw TriviaQA shape (the evidence columns the loader ignores included)
    return {"question_id": qid, "question": question, "entity_pages": {"title": ["x"]},
            "answer": {"value": value, "aliases": aliases, "normalized_aliases": aliases}}


def test_shards_join_into_one_flat_jsonl(tmp_path, capsys):
    a = _shard(tmp_path / "train-00000-of-00002.parquet",
               [_row("q1", "Capital of France?", "Paris", ["Paris", "paris"]),
                _row("q2", "2+2?", "4", ["4", "four"])])
    b = _shard(tmp_path / "train-00001-of-00002.parquet",
               [_row("q3", "Tallest mountain?", "Everest", ["Everest"]),
                _row("q1", "Capital of France?", "Paris", ["Paris"])])
    out = tmp_path / "staged" / "train.jsonl"
    assert main([str(out), str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 3 records to {out}"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["q1", "q2", "q3"]
    assert set(lines[0]) == {"id", "question", "aliases"}
    # what the job reads back equals what the shards held
    assert [r.id for r in load_records(out)] == ["q1", "q2", "q3"]
    assert load_records(out)[2].aliases == load_records(b)[0].aliases
    assert list(out.parent.iterdir()) == [out]  # no temporary file left


def test_bad_shard_is_one_line_and_nothing_is_written(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no answer"}\n')
    out = tmp_path / "train.jsonl"
    assert main([str(out), str(bad), str(tmp_path / "missing.parquet")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {tmp_path / 'missing.parquet'}: no such file (allowed: a .jsonl or "
                   ".parquet shard)"]
    assert main([str(out), str(bad)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {bad}") and "Traceback" not in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
