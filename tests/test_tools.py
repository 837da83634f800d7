"""wiki_search over the fixture corpus, tool execution error paths, and build_corpus."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mtgrpo.errors import UserError
from mtgrpo.trainer.parsers import get_parser
from mtgrpo.trainer.tools import WikiSearch, execute_tool_call, tokenizer_budget
from mtgrpo.trainer.tools.base import MAX_ERROR_CHARS
from mtgrpo.trainer.tools.build_corpus import chunk_words, main as build_main
from mtgrpo.trainer.tools.wiki_search import count_words, truncate_words
from mtgrpo.trainer.types import ParsedTurn, ToolCall

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "corpus"


@pytest.fixture(scope="module")
def search():
    with WikiSearch(CORPUS, top_k=1, max_tokens=256) as tool:
        yield tool


def call(tool, **args):
    return execute_tool_call({tool.name: tool}, ParsedTurn(tool_call=ToolCall(tool.name, args)))


# -- search -------------------------------------------------------------------------------------

def test_top1_finds_the_passage_with_its_title(search):
    text = search("first ascent of Everest 1953")
    assert text.startswith("Title: Mount Everest\n")
    assert "Edmund Hillary and Tenzing Norgay" in text
    assert text.count("Title:") == 1
    assert search.name == "wiki_search" and len(search) == 32 and not search.prebuilt


def test_top_k_orders_by_score_and_is_deterministic(search):
    hits = search.search("Eiffel tower Paris", k=3)
    assert [p.title for p, _ in hits[:2]] == ["Eiffel Tower", "Eiffel Tower"]
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    with WikiSearch(CORPUS, top_k=3, max_tokens=1000) as tool:
        text = tool("Eiffel tower Paris")
        assert text.count("Title:") == 3
        assert text == tool("Eiffel tower Paris")


def test_top_k_larger_than_the_corpus_returns_only_matching_passages():
    with WikiSearch(CORPUS, top_k=100, max_tokens=10_000) as tool:
        hits = tool.search("Everest")
        assert [p.id for p, _ in hits] == ["mount-everest-2", "mount-everest-1"]
        assert tool("Everest").count("Title:") == 2


def test_every_fixture_question_is_answerable_by_search(search):
    # The fixtures are a tiny task where the tool finds every answer (other tests rely on it).
    from mtgrpo.trainer.data import load_records
    from mtgrpo.trainer.rewards import answer_contains

    for name in ("train.jsonl", "eval.jsonl"):
        for record in load_records(REPO / "tests" / "fixtures" / "qa" / name):
            assert answer_contains(search(record.question), record.aliases), record.id


def test_token_budget_cuts_the_result():
    with WikiSearch(CORPUS, top_k=1, max_tokens=12) as tool:
        text = tool("first ascent of Everest 1953")
        assert count_words(text) == 12
        assert text == "Title: Mount Everest\nEdmund Hillary and Tenzing Norgay made the first confirmed"


def test_budget_drops_a_later_passage_that_would_be_a_stub():
    # passage 1 is 39 words with its title; 44 leaves 5 words (< 44 // 4) for passage 2: dropped
    with WikiSearch(CORPUS, top_k=2, max_tokens=44) as tool:
        text = tool("Who built the Eiffel tower for the World's Fair")
        assert text.count("Title:") == 1 and count_words(text) == 39
    # 70 leaves 31 words (>= 70 // 4): kept, cut
    with WikiSearch(CORPUS, top_k=2, max_tokens=70) as tool:
        text = tool("Who built the Eiffel tower for the World's Fair")
        assert text.count("Title:") == 2 and count_words(text) == 70


def test_budget_with_a_tokenizer():
    class CharTokenizer:  # one token per character: easy to count by hand
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    count, cut = tokenizer_budget(CharTokenizer())
    with WikiSearch(CORPUS, max_tokens=30, count_tokens=count, truncate=cut) as tool:
        text = tool("Everest 1953 ascent")
        assert text == "Title: Mount Everest\nEdmund Hi"  # 21 + 9 characters
        assert len(text) == 30


def test_truncate_words_keeps_spacing():
    assert truncate_words("a  b\nc d", 3) == "a  b\nc"
    assert truncate_words("a b", 5) == "a b"
    assert truncate_words("a b", 0) == ""


def test_no_results(search):
    assert search("the of and") == "No results found."  # stopwords only
    assert search("xylophonist zzzq") == "No results found."  # unknown words


def test_concurrent_calls_match_sequential(search):
    queries = ["Everest", "Nile Mediterranean", "Mona Lisa Louvre", "Beatles Liverpool",
               "Polonium Poland", "Titanic iceberg", "Sahara desert", "chess squares"] * 8
    sequential = [search(q) for q in queries]
    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(search, queries))
    assert concurrent == sequential


# -- construction errors ----------------------------------------------------------------------

def test_missing_corpus_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="corpus directory not found"):
        WikiSearch(tmp_path / "nope")
    with pytest.raises(UserError, match="passage file not found"):
        WikiSearch(tmp_path)


def test_bad_passage_line_names_file_line_and_key(tmp_path):
    good = (CORPUS / "passages.jsonl").read_text().splitlines()
    (tmp_path / "passages.jsonl").write_text("\n".join(good[:3] + ['{"id": "x", "title": "T"}']))
    with pytest.raises(UserError) as err:
        WikiSearch(tmp_path)
    assert err.value.lines() == [f"{tmp_path / 'passages.jsonl'}:4: text: required key is missing "
                                 '(allowed: a JSON object {"id": string, "title": string, '
                                 '"text": non-empty string})']
    (tmp_path / "passages.jsonl").write_text(good[0] + "\n{not json\n")
    with pytest.raises(UserError, match=r"passages.jsonl:2: invalid JSON"):
        WikiSearch(tmp_path)


def test_bad_arguments_to_the_constructor():
    with pytest.raises(ValueError, match="top_k"):
        WikiSearch(CORPUS, top_k=0)
    with pytest.raises(ValueError, match="both count_tokens and truncate"):
        WikiSearch(CORPUS, count_tokens=len)


# -- prebuilt index ---------------------------------------------------------------------------

def test_prebuilt_index_gives_the_same_results(tmp_path, search):
    shutil.copy(CORPUS / "passages.jsonl", tmp_path / "passages.jsonl")
    assert build_main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "index" / "mtgrpo-index.json").is_file()
    with WikiSearch(tmp_path) as tool:
        assert tool.prebuilt and len(tool) == len(search)
        for q in ("Everest", "Nobel Prize physics", "capital of Australia"):
            assert tool(q) == search(q)


def test_stale_index_is_refused(tmp_path):
    shutil.copy(CORPUS / "passages.jsonl", tmp_path / "passages.jsonl")
    assert build_main(["--out", str(tmp_path)]) == 0
    with (tmp_path / "passages.jsonl").open("a") as f:
        f.write(json.dumps({"id": "new", "title": "New", "text": "A new passage."}) + "\n")
    with pytest.raises(UserError, match="index was built for a .*rebuild it"):
        WikiSearch(tmp_path)


# -- execute_tool_call: never raises ------------------------------------------------------------

def test_execute_success(search):
    text, ok = call(search, query="Everest 1953")
    assert ok and "Hillary" in text


@pytest.mark.parametrize("args, message", [
    ({}, "Error: invalid arguments for wiki_search: 'query' is required"),
    ({"query": 5}, "Error: invalid arguments for wiki_search: argument 'query': 5 is not of "
                   "type 'string'"),
    ({"query": ""}, "Error: invalid arguments for wiki_search: argument 'query': '' should be "
                    "non-empty"),
    ({"query": "x", "k": 3}, "Error: invalid arguments for wiki_search: Additional properties "
                             "are not allowed ('k' was unexpected) (allowed: query)"),
])
def test_execute_bad_arguments(search, args, message):
    assert call(search, **args) == (message, False)


def test_execute_parse_error_unknown_tool_and_no_call(search):
    tools = {"wiki_search": search}
    assert execute_tool_call(tools, ParsedTurn(tool_error="invalid JSON in <tool>: x")) == \
        ("Error: invalid JSON in <tool>: x", False)
    assert execute_tool_call(tools, ParsedTurn(tool_call=ToolCall("calc", {}))) == \
        ("Error: unknown tool 'calc' (available: wiki_search)", False)
    assert execute_tool_call(tools, ParsedTurn(answer="x")) == \
        ("Error: no tool call found in the turn", False)


def test_execute_tool_exceptions_and_empty_output():
    class Broken:
        name = "broken"
        description = "fails"
        parameters = {"type": "object", "properties": {"mode": {"type": "string"}}}

        def __call__(self, mode="raise"):
            if mode == "raise":
                raise RuntimeError("disk\non fire " + "x" * 1000)
            if mode == "empty":
                return "   "
            return 42

    tool = Broken()
    text, ok = call(tool, mode="raise")
    assert not ok and text.startswith("Error: broken failed: RuntimeError: disk on fire x")
    assert "\n" not in text and len(text) == len("Error: ") + MAX_ERROR_CHARS
    assert call(tool, mode="empty") == ("Error: broken returned empty output", False)
    assert call(tool, mode="number") == ("42", True)


def test_parsed_turn_end_to_end(search):
    parser = get_parser("xml")
    parsed = parser.parse('<reasoning>r</reasoning><tool>{"name": "wiki_search", '
                          '"args": {"query": "Canberra capital"}}</tool>')
    text, ok = execute_tool_call({"wiki_search": search}, parsed)
    assert ok and text.startswith("Title: Canberra")


# -- build_corpus -----------------------------------------------------------------------------

def test_chunk_words():
    text = "one two three\nfour five six seven\n\n" + " ".join(f"w{i}" for i in range(9)) + "\nend"
    assert chunk_words(text, 4) == ["one two three", "four five six seven",
                                    "w0 w1 w2 w3", "w4 w5 w6 w7", "w8 end"]
    # a short tail joins the passage before it
    assert chunk_words(" ".join(f"w{i}" for i in range(9)), 8) == [
        " ".join(f"w{i}" for i in range(9))]
    assert chunk_words("", 5) == []


def _fake_extractor_dump(root: Path) -> None:
    (root / "AA").mkdir(parents=True)
    (root / "AB").mkdir()
    body = " ".join(f"word{i}" for i in range(250))
    articles_aa = [{"id": "12", "url": "u", "title": "Anarchism", "text": "Anarchism\n" + body},
                   {"id": "25", "url": "u", "title": "Stub", "text": "Too short."}]
    articles_ab = [{"id": "39", "url": "u", "title": "Albedo",
                    "text": "Albedo is the fraction of sunlight that is reflected. " * 10}]
    (root / "AA" / "wiki_00").write_text("\n".join(json.dumps(a) for a in articles_aa) + "\n")
    (root / "AB" / "wiki_00").write_text("\n".join(json.dumps(a) for a in articles_ab) + "\n")


def test_build_from_wikiextractor_dump(tmp_path):
    dump, out = tmp_path / "dump", tmp_path / "corpus"
    _fake_extractor_dump(dump)
    assert build_main(["--wiki-dump", str(dump), "--out", str(out), "--words", "100"]) == 0
    passages = [json.loads(l) for l in (out / "passages.jsonl").read_text().splitlines()]
    # 250 words -> 100 + 100 + 50; the stub is skipped; Albedo (90 words) is one passage
    assert [p["id"] for p in passages] == ["12_0", "12_1", "12_2", "39_0"]
    assert passages[0]["title"] == "Anarchism"
    assert not passages[0]["text"].startswith("Anarchism")  # the repeated title line is dropped
    assert len(passages[2]["text"].split()) == 50
    with WikiSearch(out) as tool:
        assert tool.prebuilt
        assert tool("sunlight reflected").startswith("Title: Albedo")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_build_from_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": ["1", "2"], "url": ["u", "u"], "title": ["Ada Lovelace", "Zebra"],
                      "text": ["Ada Lovelace wrote the first computer program. " * 5,
                               "Zebras are African equines with black and white stripes. " * 4]})
    pq.write_table(table, tmp_path / "wiki.parquet")
    out = tmp_path / "corpus"
    assert build_main(["--wiki-dump", str(tmp_path / "wiki.parquet"), "--out", str(out)]) == 0
    with WikiSearch(out) as tool:
        assert tool("stripes").startswith("Title: Zebra")


def test_build_errors_are_one_line(tmp_path, capsys):
    assert build_main(["--wiki-dump", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: Wikipedia dump not found " \
        "(allowed: a WikiExtractor output directory, a .jsonl or a .parquet file)\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "A", "text": "x"}\n{"title": 3, "text": "y"}\n')
    assert build_main(["--wiki-dump", str(bad), "--out", str(tmp_path / "c")]) == 1
    assert f"{bad}:2: title: must be a string" in capsys.readouterr().err
    assert not (tmp_path / "c" / "passages.jsonl").exists()  # nothing half-written


def test_module_entry_point(tmp_path):
    shutil.copy(CORPUS / "passages.jsonl", tmp_path / "passages.jsonl")
    done = subprocess.run([sys.executable, "-m", "mtgrpo.trainer.tools.build_corpus", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tmp_path}: 32 indexed"


def test_build_from_triviaqa_evidence_pages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    eiffel = "Gustave Eiffel was a French civil engineer whose company built the tower. " * 3
    everest = "Edmund Hillary was a New Zealand mountaineer who climbed Everest in 1953. " * 3
    rows = [{"question": "Who built the tower?", "question_id": "tc_1",
             "answer": {"value": "Gustave Eiffel", "aliases": ["Eiffel"]},
             "entity_pages": {"title": ["Gustave Eiffel"], "wiki_context": [eiffel]}},
            {"question": "Who climbed Everest?", "question_id": "tc_2",
             "answer": {"value": "Edmund Hillary", "aliases": ["Hillary"]},
             "entity_pages": {"title": ["Edmund Hillary", "Gustave Eiffel"],
                              "wiki_context": [everest, eiffel]}}]
    jsonl = tmp_path / "rc.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rc.parquet")
    for dump in (jsonl, tmp_path / "rc.parquet"):
        out = tmp_path / f"corpus-{dump.suffix[1:]}"
        assert build_main(["--wiki-dump", str(dump), "--out", str(out)]) == 0
        passages = [json.loads(l) for l in (out / "passages.jsonl").read_text().splitlines()]
        # each evidence page once (Gustave Eiffel appears in both rows)
        assert [(p["id"], p["title"]) for p in passages] == [("0_0", "Gustave Eiffel"),
                                                             ("1_0", "Edmund Hillary")]
        with WikiSearch(out) as tool:
            assert tool("mountaineer 1953").startswith("Title: Edmund Hillary")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "entity_pages": {"title": ["A"]}}) + "\n")
    assert build_main(["--wiki-dump", str(bad), "--out", str(tmp_path / "x")]) == 1


def test_incomplete_index_is_a_user_error(tmp_path):
    shutil.copy(CORPUS / "passages.jsonl", tmp_path / "passages.jsonl")
    assert build_main(["--out", str(tmp_path)]) == 0
    (tmp_path / "index" / "offsets.npy").unlink()  # e.g. an interrupted upload
    with pytest.raises(UserError, match=r"index: unreadable index \(FileNotFoundError"):
        WikiSearch(tmp_path)
    (tmp_path / "index" / "mtgrpo-index.json").write_text("{")
    with pytest.raises(UserError, match="unreadable index metadata"):
        WikiSearch(tmp_path)


def test_build_from_compressed_and_broken_dumps(tmp_path, capsys):
    import gzip

    article = {"id": "7", "title": "Albedo", "text": "Albedo is reflected sunlight. " * 10}
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps(article) + "\n")
    assert build_main(["--wiki-dump", str(tmp_path / "a.jsonl.gz"), "--out",
                       str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "passages.jsonl").read_text())["id"] == "7_0"
    (tmp_path / "b.jsonl.gz").write_bytes(b"not gzip at all")
    assert build_main(["--wiki-dump", str(tmp_path / "b.jsonl.gz"), "--out",
                       str(tmp_path / "d")]) == 1
    assert "b.jsonl.gz: unreadable (BadGzipFile" in capsys.readouterr().err
