"""Rewards of one episode: TriviaQA answer matching, tool use and format.

Turn-level reward (credited to the first turn by MT-GRPO)::

    R_turn    = w_tool * tool_execution + w_in_result * answer_in_result

Outcome reward (the whole episode)::

    R_outcome = w_contains * answer_contains + w_em * exact_match + w_format * format
              + w_xml * xml_count + w_f1 * f1

Every component is in [0, 1]; the weights are the ``reward_*`` hyperparameters (defaults: the
paper's). ``RewardBreakdown.components`` keeps the unweighted values so that a weight of 0 still
logs its component. See docs/rewards.md for the differences from the reference implementation.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Iterable

from mtgrpo.trainer.types import Episode, RewardBreakdown

if TYPE_CHECKING:
    from mtgrpo.contract.config import TrainerConfig
    from mtgrpo.trainer.parsers import Parser

COMPONENTS = ("tool_execution", "answer_in_result", "answer_contains", "exact_match",
              "format", "xml_count", "f1")

# The official TriviaQA evaluation's punctuation: ASCII punctuation plus four quote marks.
_OFFICIAL_PUNCT = frozenset(string.punctuation + "\u2018\u2019\u00b4`")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punct(ch: str) -> bool:
    # Beyond the official set, any Unicode punctuation (dashes, guillemets, curly double
    # quotes) splits words too: "Jean–Paul" must match "Jean-Paul".
    return ch in _OFFICIAL_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(s: str) -> str:
    """TriviaQA's answer normalisation (official evaluation script), Unicode-safe.

    NFC-composes the text (so a decomposed "é" equals a composed one), replaces underscores
    and punctuation by spaces, lower-cases, drops the articles a/an/the and collapses
    whitespace. Accents are kept, as in the official script.

    >>> normalize_answer("The  Beatles!")
    'beatles'
    >>> normalize_answer("Rock_and_Roll")
    'rock and roll'
    """
    text = unicodedata.normalize("NFC", s).replace("_", " ").lower()
    text = "".join(" " if _is_punct(ch) else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _normalized_aliases(aliases: Iterable[str]) -> list[str]:
    # An alias that normalises to nothing (e.g. "The") can match nothing.
    return [n for n in (normalize_answer(a) for a in aliases) if n]


def exact_match(pred: str | None, aliases: Iterable[str]) -> bool:
    """The normalised prediction equals a normalised alias."""
    if pred is None:
        return False
    norm = normalize_answer(pred)
    return bool(norm) and norm in _normalized_aliases(aliases)


def token_f1(pred: str | None, aliases: Iterable[str]) -> float:
    """SQuAD/TriviaQA token F1 of the normalised prediction, the best over aliases."""
    if pred is None:
        return 0.0
    pred_tokens = normalize_answer(pred).split()
    best = 0.0
    for alias in _normalized_aliases(aliases):
        gold = alias.split()
        same = sum((Counter(pred_tokens) & Counter(gold)).values())
        if same == 0:
            continue
        precision, recall = same / len(pred_tokens), same / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_contains(text: str | None, aliases: Iterable[str]) -> bool:
    """A normalised alias appears in the normalised text as whole words.

    Whole words: "art" is not in "start", "1984" is not in "19845".
    """
    if not text:
        return False
    haystack = f" {normalize_answer(text)} "
    return any(f" {alias} " in haystack for alias in _normalized_aliases(aliases))


@dataclass(frozen=True)
class RewardWeights:
    """Weight of each reward component (0 = logged, not optimised). Defaults: the paper's."""

    tool_execution: float = 0.2
    answer_in_result: float = 0.5
    answer_contains: float = 0.5
    exact_match: float = 1.0
    format: float = 0.2
    xml_count: float = 0.2
    f1: float = 0.0

    @classmethod
    def from_config(cls, cfg: "TrainerConfig") -> "RewardWeights":
        """The weights of a trainer config's ``reward_*`` hyperparameters."""
        return cls(**{f.name: float(getattr(cfg, f"reward_{f.name}")) for f in fields(cls)})


def score_episode(episode: Episode, parser: "Parser", weights: RewardWeights) -> RewardBreakdown:
    """The turn and outcome rewards of one episode, with every unweighted component."""
    aliases = episode.record.aliases
    calls = episode.tool_calls
    tool_execution = episode.tool_successes / calls if calls else 0.0
    # Only results of calls that worked count: an error text may quote the model's own
    # arguments, and a guess repeated back must not earn the reward.
    results = [parser.extract_tool_result(t.text) for t in episode.turns
               if t.role == "tool" and t.tool_ok]
    answer_in_result = any(answer_contains(r, aliases) for r in results)
    answer = parser.final_answer(episode)
    components = {
        "tool_execution": float(tool_execution),
        "answer_in_result": float(answer_in_result),
        "answer_contains": float(answer_contains(answer, aliases)),
        "exact_match": float(exact_match(answer, aliases)),
        "format": float(parser.format_reward(episode)),
        "xml_count": float(parser.xml_count_reward(episode)),
        "f1": float(token_f1(answer, aliases)),
    }
    turn = (weights.tool_execution * components["tool_execution"]
            + weights.answer_in_result * components["answer_in_result"])
    outcome = (weights.answer_contains * components["answer_contains"]
               + weights.exact_match * components["exact_match"]
               + weights.format * components["format"]
               + weights.xml_count * components["xml_count"]
               + weights.f1 * components["f1"])
    return RewardBreakdown(turn=turn, outcome=outcome, components=components)
