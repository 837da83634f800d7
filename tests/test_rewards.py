"""Answer normalisation, matching and episode scoring on tricky cases."""

from __future__ import annotations

import unicodedata

import pytest

from mtgrpo.contract.config import TrainerConfig
from mtgrpo.trainer.parsers import get_parser
from mtgrpo.trainer.rewards import (COMPONENTS, RewardWeights, answer_contains, exact_match,
                                    normalize_answer, score_episode, token_f1)
from mtgrpo.trainer.types import Episode, QARecord, Turn

XML = get_parser("xml")


@pytest.mark.parametrize("raw, normalized", [
    ("The Beatles", "beatles"),
    ("  the   BEATLES. ", "beatles"),
    ("A Tale of Two Cities", "tale of two cities"),
    ("An Officer and a Gentleman", "officer and gentleman"),
    ("Theatre", "theatre"),  # an article only as a whole word
    ("Rock_and_Roll", "rock and roll"),
    ("Destiny's Child", "destiny s child"),  # punctuation becomes a space, as in the official
    ("Destiny\u2019s Child", "destiny s child"),  # curly apostrophe (official list)
    ("Jean-Paul Sartre", "jean paul sartre"),
    ("Jean\u2013Paul Sartre", "jean paul sartre"),  # en dash: any Unicode punctuation
    ("\u00abLes Mis\u00e9rables\u00bb", "les mis\u00e9rables"),  # guillemets; accents kept
    ("1,000", "1 000"),
    ("3.14", "3 14"),
    ("U.S.A.", "u s"),  # the official script drops the "a" of U.S.A. too
    ("", ""),
    ("The", ""),
])
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_normalize_composes_unicode():
    decomposed = unicodedata.normalize("NFD", "Beyonc\u00e9")
    assert decomposed != "Beyonc\u00e9"
    assert normalize_answer(decomposed) == normalize_answer("BEYONC\u00c9") == "beyonc\u00e9"
    assert normalize_answer("Beyonce") != normalize_answer("Beyonc\u00e9")  # accents matter


@pytest.mark.parametrize("pred, aliases, expected", [
    ("the beatles", ["The Beatles"], True),
    ("Beatles!", ["The Beatles"], True),
    ("Liverpool", ["City of Liverpool", "Liverpool"], True),
    ("Liverpool, England", ["Liverpool"], False),
    ("1,000", ["1,000"], True),
    ("1000", ["1,000"], False),  # numbers are compared as text, as the official script does
    ("64", ["64", "sixty-four"], True),
    ("Sixty four", ["64", "sixty-four"], True),
    ("Destinys Child", ["Destiny's Child"], False),
    ("the", ["The"], False),  # an alias that normalises to nothing matches nothing
    ("", ["x"], False),
    (None, ["x"], False),
])
def test_exact_match(pred, aliases, expected):
    assert exact_match(pred, aliases) is expected


def test_token_f1_best_alias():
    # "edmund hillary" vs "sir edmund hillary": p = 2/2, r = 2/3 -> f1 = 0.8
    assert token_f1("Edmund Hillary", ["Sir Edmund Hillary"]) == pytest.approx(0.8)
    assert token_f1("Edmund Hillary", ["Sir Edmund Hillary", "Edmund Hillary"]) == 1.0
    # "the photo effect" -> ["photo", "effect"] vs ["photoelectric", "effect"]: p = r = 1/2
    assert token_f1("the photo effect", ["the photoelectric effect"]) == pytest.approx(0.5)
    assert token_f1("Paris", ["London"]) == 0.0
    assert token_f1(None, ["London"]) == 0.0
    assert token_f1("the", ["London"]) == 0.0


@pytest.mark.parametrize("text, aliases, expected", [
    ("It was Edmund Hillary, with Tenzing.", ["Hillary"], True),
    ("Hillary's climb", ["Hillary"], True),
    ("It was Hillaryson.", ["Hillary"], False),  # whole words only
    ("the start of the art", ["Art"], True),
    ("the start", ["Art"], False),
    ("built in 19845", ["1984"], False),
    ("In 1984, Orwell", ["1984"], True),
    ("THE LOUVRE, PARIS", ["Musée du Louvre", "The Louvre"], True),
    ("", ["x"], False),
    (None, ["x"], False),
])
def test_answer_contains(text, aliases, expected):
    assert answer_contains(text, aliases) is expected


def test_weights_from_config_defaults_are_the_papers():
    weights = RewardWeights.from_config(TrainerConfig(model_name_or_path="m"))
    assert weights == RewardWeights(tool_execution=0.2, answer_in_result=0.5,
                                    answer_contains=0.5, exact_match=1.0, format=0.2,
                                    xml_count=0.2, f1=0.0)
    custom = RewardWeights.from_config(TrainerConfig(model_name_or_path="m", reward_f1=0.3,
                                                     reward_exact_match=2.0))
    assert custom.f1 == 0.3 and custom.exact_match == 2.0


TOOL_TURN = ('<reasoning>\nSearch.\n</reasoning>\n<tool>\n'
             '{"name": "wiki_search", "args": {"query": "Everest ascent"}}\n</tool>')
ANSWER_TURN = "<reasoning>\nFound it.\n</reasoning>\n<answer>\nEdmund Hillary\n</answer>"
RECORD = QARecord("tqa-2", "Who first climbed Everest?", ("Sir Edmund Hillary", "Hillary"))


def _episode(*turns: tuple[str, str, bool | None]) -> Episode:
    return Episode(record=RECORD, prompt_ids=[1],
                   turns=[Turn(role, text, [0], tool_ok=ok) for role, text, ok in turns])


def test_score_full_episode_by_hand():
    ep = _episode(("assistant", TOOL_TURN, None),
                  ("tool", "<result>\nHillary and Norgay reached the summit.\n</result>", True),
                  ("assistant", ANSWER_TURN, None))
    got = score_episode(ep, XML, RewardWeights())
    assert got.components == {"tool_execution": 1.0, "answer_in_result": 1.0,
                              "answer_contains": 1.0, "exact_match": 0.0, "format": 1.0,
                              "xml_count": 1.0, "f1": pytest.approx(0.8)}
    assert got.turn == pytest.approx(0.2 * 1.0 + 0.5 * 1.0)
    # contains 0.5 + em 0 + format 0.2 + xml 0.2 + f1 weight 0
    assert got.outcome == pytest.approx(0.9)
    assert got.total == pytest.approx(1.6)
    assert set(got.components) == set(COMPONENTS)


def test_score_failed_calls_and_error_results():
    # two calls: one failed (its error text even quotes the alias), one worked without it
    ep = _episode(("assistant", TOOL_TURN, None),
                  ("tool", "<result>\nError: unknown tool 'Hillary'\n</result>", False),
                  ("assistant", TOOL_TURN, None),
                  ("tool", "<result>\nEverest is the highest mountain.\n</result>", True),
                  ("assistant", "<reasoning>\nGuess.\n</reasoning>\n<answer>\nhillary\n</answer>",
                   None))
    weights = RewardWeights(f1=1.0)
    got = score_episode(ep, XML, weights)
    assert got.components["tool_execution"] == 0.5
    assert got.components["answer_in_result"] == 0.0  # error results never count
    assert got.components["exact_match"] == 1.0 and got.components["f1"] == 1.0
    assert got.turn == pytest.approx(0.2 * 0.5)
    assert got.outcome == pytest.approx(0.5 + 1.0 + 0.2 + 0.2 + 1.0)


def test_score_no_tool_no_answer():
    ep = _episode(("assistant", "I am not sure.", None))
    got = score_episode(ep, XML, RewardWeights())
    assert got.turn == 0.0 and got.outcome == 0.0
    assert all(v == 0.0 for v in got.components.values())


def test_zero_weights_still_log_components():
    ep = _episode(("assistant", ANSWER_TURN, None))
    got = score_episode(ep, XML, RewardWeights(**{name: 0.0 for name in COMPONENTS}))
    assert got.turn == 0.0 and got.outcome == 0.0
    assert got.components["answer_contains"] == 1.0 and got.components["format"] == 1.0


def test_episode_answer_wins_over_parsing():
    ep = _episode(("assistant", ANSWER_TURN, None))
    ep.answer = "Tenzing Norgay"
    assert score_episode(ep, XML, RewardWeights()).components["answer_contains"] == 0.0


def test_qwen_episode_scores_with_qwen_tags():
    qwen = get_parser("qwen")
    ep = _episode(("assistant", '<think>\ns\n</think>\n<tool_call>\n{"name": "wiki_search", '
                                '"arguments": {"query": "Everest"}}\n</tool_call>', None),
                  ("tool", qwen.format_tool_result("Hillary climbed it."), True),
                  ("assistant", "<think>\nok\n</think>\n<answer>\nHillary\n</answer>", None))
    got = score_episode(ep, qwen, RewardWeights())
    assert got.components["answer_in_result"] == 1.0
    assert got.components["exact_match"] == 1.0
    assert got.components["format"] == pytest.approx(1.0)


def test_docstring_examples():
    import doctest

    from mtgrpo.trainer import rewards

    result = doctest.testmod(rewards)
    assert result.attempted >= 2 and result.failed == 0
