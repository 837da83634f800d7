"""Loading question/answer records: both shapes, JSONL and parquet, and bad records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtgrpo.errors import UserError
from mtgrpo.trainer.data import find_data_file, load_records, split_eval
from mtgrpo.trainer.types import QARecord

QA = Path(__file__).resolve().parent / "fixtures" / "qa"


def write_parquet(rows: list[dict], path: Path) -> Path:
    """The fixture's parquet file, written at test time (no binary file in the repository)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_fixture_train_file_both_shapes():
    records = load_records(QA / "train.jsonl")
    assert len(records) == 14
    # raw TriviaQA: value first, then aliases, deduplicated; normalized_aliases not repeated
    assert records[0] == QARecord(
        id="tqa-001",
        question="Which engineer's company built the tower for the 1889 World's Fair in Paris?",
        aliases=("Gustave Eiffel", "Eiffel", "Alexandre Gustave Eiffel"))
    # flat with aliases / answers / a single string, with and without an id
    by_id = {r.id: r for r in records}
    assert by_id["flat-007"].aliases == ("The Louvre", "Louvre", "Louvre Museum",
                                         "Musée du Louvre")
    assert by_id["flat-009"].aliases == ("photoelectric effect", "the photoelectric effect")
    assert by_id["train-13"].question == "Which girl group was Beyoncé the lead singer of?"
    assert by_id["train-14"].aliases == ("Alexander Fleming",)
    assert len(by_id) == len(records)


def test_eval_fixture():
    records = load_records(QA / "eval.jsonl")
    assert [r.id for r in records] == ["tqa-101", "flat-102", "flat-103", "flat-104",
                                       "flat-105", "flat-106"]


def test_parquet_gives_the_same_records_as_jsonl(tmp_path):
    rows = [json.loads(l) for l in (QA / "train.jsonl").read_text().splitlines()]
    # One parquet file per shape (a column has one type): the raw TriviaQA rows, with the
    # answer as a struct column, and the flat rows with aliases as a list column.
    raw = [r for r in rows if "answer" in r]
    flat = [{"id": r.get("id"), "question": r["question"],
             "aliases": r.get("aliases", r.get("answers"))} for r in rows if "answer" not in r]
    flat = [dict(r, aliases=[r["aliases"]] if isinstance(r["aliases"], str) else r["aliases"])
            for r in flat]
    keys = sorted({k for r in raw for k in r})
    raw = [{k: r.get(k) for k in keys} for r in raw]  # missing keys as nulls
    from_parquet = (load_records(write_parquet(raw, tmp_path / "raw.parquet"))
                    + load_records(write_parquet(flat, tmp_path / "flat.parquet")))
    from_jsonl = load_records(QA / "train.jsonl")
    assert [r.aliases for r in from_parquet] == [r.aliases for r in from_jsonl]
    assert [r.question for r in from_parquet] == [r.question for r in from_jsonl]
    assert from_parquet[0].id == "tqa-001"
    assert from_parquet[-1].id == "flat-7"  # row 7 of flat.parquet has a null id


def test_raw_triviaqa_fallbacks(tmp_path):
    path = tmp_path / "tqa.jsonl"
    path.write_text(json.dumps({"question": "Q?", "question_id": "tc_1",
                                "answer": {"aliases": [], "normalized_aliases": ["paris"]}})
                    + "\n\n")  # blank lines are skipped
    assert load_records(path) == [QARecord("tc_1", "Q?", ("paris",))]


@pytest.mark.parametrize("line, message", [
    ('{"question": "Q?"', "2: invalid JSON"),
    ('["Q?", "A"]', "2: must be a JSON object, got list"),
    ('{"aliases": ["A"]}', "2: question: required key is missing"),
    ('{"question": "  ", "aliases": ["A"]}', "2: question: must be a non-empty string"),
    ('{"question": "Q?"}', "2: aliases: required key is missing"),
    ('{"question": "Q?", "aliases": [1, 2]}', "2: aliases: must be a string or a list of strings"),
    ('{"question": "Q?", "answers": ["", " "]}', "2: answers: has no non-empty answer"),
    ('{"question": "Q?", "answer": {"value": 3}}', "2: answer.value: must be a string"),
    ('{"question": "Q?", "answer": {"aliases": []}}', "2: answer.aliases: has no non-empty"),
    ('{"question": "Q?", "aliases": ["A"], "id": [1]}', "2: id: must be a string, got list"),
])
def test_bad_records_name_file_line_and_key(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok?", "aliases": ["yes"]}\n' + line + "\n")
    with pytest.raises(UserError) as err:
        load_records(path)
    (text,) = err.value.lines()
    assert text.startswith(f"{path}:{message}")
    assert "(allowed:" in text


def test_bad_parquet_row_names_the_row(tmp_path):
    path = write_parquet([{"question": "ok?", "aliases": ["yes"]},
                          {"question": None, "aliases": ["no"]}], tmp_path / "d.parquet")
    with pytest.raises(UserError, match=r"d\.parquet:row 1: question: required key is missing"):
        load_records(path)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        load_records(tmp_path / "none.jsonl")
    (tmp_path / "d.csv").write_text("q,a\n")
    with pytest.raises(UserError, match=r"unsupported file type '\.csv' \(allowed: \.jsonl, "
                                        r"\.parquet\)"):
        load_records(tmp_path / "d.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="has no records"):
        load_records(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "ok?", "aliases": ["y"]}\n'
                                            b'{"question": "Caf\xe9?", "aliases": ["x"]}\n')
    with pytest.raises(UserError, match=r"latin1.jsonl:2: not UTF-8 \(invalid continuation"):
        load_records(tmp_path / "latin1.jsonl")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="unreadable parquet file"):
        load_records(tmp_path / "junk.parquet")


def test_find_data_file(tmp_path):
    with pytest.raises(UserError, match="no .jsonl or .parquet file found"):
        find_data_file(tmp_path)
    (tmp_path / ".hidden.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "train.jsonl").write_text("")
    assert find_data_file(tmp_path) == tmp_path / "train.jsonl"
    (tmp_path / "more.parquet").write_text("")
    with pytest.raises(UserError, match=r"several data files \(more.parquet, train.jsonl\)"):
        find_data_file(tmp_path)
    with pytest.raises(UserError, match="data directory not found"):
        find_data_file(tmp_path / "missing")


def test_split_eval_is_deterministic_and_disjoint():
    records = [QARecord(str(i), f"q{i}", ("a",)) for i in range(20)]
    train, evals = split_eval(records, 0.25, seed=7)
    assert len(evals) == 5 and len(train) == 15
    assert {r.id for r in train}.isdisjoint({r.id for r in evals})
    assert [int(r.id) for r in train] == sorted(int(r.id) for r in train)  # input order kept
    assert split_eval(records, 0.25, seed=7) == (train, evals)
    assert split_eval(records, 0.25, seed=8)[1] != evals
    # at least one held out when asked for any; none when fraction is 0
    assert len(split_eval(records[:3], 0.05, seed=0)[1]) == 1
    assert split_eval(records, 0.0, seed=0) == (records, [])
    assert split_eval(records[:1], 0.5, seed=0) == (records[:1], [])
    with pytest.raises(ValueError):
        split_eval(records, 1.0, seed=0)


def test_parquet_reads_only_the_record_columns(tmp_path, monkeypatch):
    # TriviaQA's rc parquet carries whole pages per question; they must not be loaded.
    import pyarrow as pa
    import pyarrow.parquet as pq

    read = pq.read_table
    asked: list = []
    monkeypatch.setattr(pq, "read_table", lambda path, columns=None: asked.append(columns)
                        or read(path, columns=columns))

    table = pa.table({"question": ["Q?"], "question_id": ["tc_9"],
                      "answer": [{"value": "Paris", "aliases": ["Paris", "Paree"]}],
                      "entity_pages": [{"wiki_context": ["x" * 1000]}]})
    pq.write_table(table, tmp_path / "rc.parquet")
    assert load_records(tmp_path / "rc.parquet") == [QARecord("tc_9", "Q?", ("Paris", "Paree"))]
    assert asked == [["question", "question_id", "answer"]]
