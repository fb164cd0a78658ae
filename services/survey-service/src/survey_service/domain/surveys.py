"""Survey kinds, their scales, who counts as a detractor, and the default surveys every shop gets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

LOCALES = ("ja", "en")
COMMENT_MAX_CHARS = 2000
QUESTION_MAX_CHARS = 500


class Kind(StrEnum):
    NPS = "nps"
    CSAT = "csat"
    CES = "ces"


@dataclass(frozen=True)
class Scale:
    low: int
    high: int

    def __contains__(self, score: object) -> bool:
        return isinstance(score, int) and not isinstance(score, bool) and self.low <= score <= self.high

    @property
    def points(self) -> list[int]:
        return list(range(self.low, self.high + 1))


SCALES: dict[Kind, Scale] = {Kind.NPS: Scale(0, 10), Kind.CSAT: Scale(1, 5), Kind.CES: Scale(1, 7)}


def is_detractor(kind: Kind, score: int) -> bool:
    """The answers that start service recovery: NPS 0-6, CSAT 1-2, CES 5 and above (7 = most effort)."""
    if kind is Kind.NPS:
        return score <= 6
    if kind is Kind.CSAT:
        return score <= 2
    return score >= 5


# Where the customer met the shop before being asked; results break down by it.
TOUCHPOINTS = {"order": "purchase", "ticket": "ticket", "playbook_run": "playbook"}


def touchpoint_for(context_type: str) -> str:
    return TOUCHPOINTS[context_type]


def normalise_locale(locale: str | None) -> str | None:
    """'ja-JP' -> 'ja'; None for a language the surveys are not written in."""
    if not locale:
        return None
    language = locale.replace("_", "-").split("-", 1)[0].lower()
    return language if language in LOCALES else None


# Control characters but tab and newline (carriage returns go too: a line ends with \n alone).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def clean_comment(comment: str | None) -> str | None:
    """Strip surrounding blanks and control characters (PostgreSQL refuses NUL); blank means none."""
    if comment is None:
        return None
    kept = _CONTROL.sub("", comment).strip()
    return kept or None


# `{shop}` in a question is replaced by the shop's name on the page.
DEFAULT_TEXTS: dict[Kind, dict[str, dict[str, str]]] = {
    Kind.NPS: {
        "ja": {
            "question": "{shop}を友人や知人に薦める可能性はどのくらいありますか？",
            "comment_question": "そのスコアを付けたいちばんの理由を教えてください。",
        },
        "en": {
            "question": "How likely are you to recommend {shop} to a friend or colleague?",
            "comment_question": "What is the main reason for your score?",
        },
    },
    Kind.CSAT: {
        "ja": {
            "question": "このたびの{shop}のご利用にどの程度満足されましたか？",
            "comment_question": "そのスコアを付けたいちばんの理由を教えてください。",
        },
        "en": {
            "question": "How satisfied were you with your recent experience with {shop}?",
            "comment_question": "What is the main reason for your score?",
        },
    },
    Kind.CES: {
        "ja": {
            "question": "{shop}でご用件を済ませるのに、どの程度の手間がかかりましたか？",
            "comment_question": "そのスコアを付けたいちばんの理由を教えてください。",
        },
        "en": {
            "question": "How much effort did it take to get what you needed from {shop}?",
            "comment_question": "What is the main reason for your score?",
        },
    },
}

DEFAULT_NAMES = {
    Kind.NPS: "Net Promoter Score",
    Kind.CSAT: "Customer satisfaction",
    Kind.CES: "Customer effort",
}


def default_survey(kind: Kind) -> dict[str, Any]:
    """The document of a shop's default survey of this kind (ja and en, with the free-text question)."""
    return {
        "kind": kind.value,
        "name": DEFAULT_NAMES[kind],
        "comment_enabled": True,
        "texts": {locale: dict(texts) for locale, texts in DEFAULT_TEXTS[kind].items()},
    }


def pick_locale(texts: dict[str, Any], *preferences: str | None) -> str:
    """The first preferred locale the survey is written in, else Japanese, else whatever it has."""
    for preference in (*preferences, "ja", "en"):
        if preference and preference in texts:
            return preference
    return next(iter(texts))
