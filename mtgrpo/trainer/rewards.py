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


def tool_execution(episode: Episode) -> float:
    """Turn reward: the share of the episode's tool calls that executed without error."""
    calls = episode.tool_calls
    return float(episode.tool_successes / calls) if calls else 0.0


def answer_in_result(episode: Episode, parser: "Parser") -> float:
    """Turn reward: a gold alias appears in the result of a call that worked."""
    # Only results of calls that worked count: an error text may quote the model's own
    # arguments, and a guess repeated back must not earn the reward.
    results = [parser.extract_tool_result(t.text) for t in episode.turns
               if t.role == "tool" and t.tool_ok]
    return float(any(answer_contains(r, episode.record.aliases) for r in results))


def answer_contains_reward(episode: Episode, parser: "Parser") -> float:
    """Outcome reward: the final answer contains a gold alias as whole words."""
    return float(answer_contains(parser.final_answer(episode), episode.record.aliases))


def exact_match_reward(episode: Episode, parser: "Parser") -> float:
    """Outcome reward: the normalised final answer equals a normalised alias."""
    return float(exact_match(parser.final_answer(episode), episode.record.aliases))


def format_reward(episode: Episode, parser: "Parser") -> float:
    """Outcome reward: the parser's own format score (the tag parsers' ``format_reward``)."""
    return float(parser.format_reward(episode))


def xml_count_reward(episode: Episode, parser: "Parser") -> float:
    """Outcome reward: the parser's tag-count score (the tag parsers' ``xml_count_reward``)."""
    return float(parser.xml_count_reward(episode))


def f1_reward(episode: Episode, parser: "Parser") -> float:
    """Outcome reward: token F1 of the final answer against the best alias."""
    return float(token_f1(parser.final_answer(episode), episode.record.aliases))


# The built-in reward functions: name -> (level, function), in COMPONENTS order.
BUILTIN_REWARDS = {
    "tool_execution": ("turn", tool_execution),
    "answer_in_result": ("turn", answer_in_result),
    "answer_contains": ("outcome", answer_contains_reward),
    "exact_match": ("outcome", exact_match_reward),
    "format": ("outcome", format_reward),
    "xml_count": ("outcome", xml_count_reward),
    "f1": ("outcome", f1_reward),
}
# Components that call parser methods beyond the Parser protocol (the tag parsers have them).
PARSER_METHODS = {"format": "format_reward", "xml_count": "xml_count_reward"}


def builtin_reward(name: str, weight: float):
    """The built-in reward ``name`` as a :class:`mtgrpo.task.api.RewardFunction`."""
    from mtgrpo.task.api import RewardFunction

    level, fn = BUILTIN_REWARDS[name]
    return RewardFunction(name, fn, level, float(weight))


def builtin_rubric(weights: RewardWeights):
    """The paper's seven rewards with ``weights``: the built-in TriviaQA task's rubric."""
    from mtgrpo.task.api import Rubric

    return Rubric(tuple(builtin_reward(name, getattr(weights, name)) for name in COMPONENTS))


def score_episode(episode: Episode, parser: "Parser", weights: RewardWeights) -> RewardBreakdown:
    """The turn and outcome rewards of one episode, with every unweighted component."""
    return builtin_rubric(weights).score(episode, parser)
