"""The moderator's models: a profanity word list (better-profanity) and VADER sentiment, offline.

Both load once per process, on first use: the word list (~900 entries with their spelling
variants) takes ~40 ms and a few MB, the VADER lexicon ~10 ms. `moderate` is plain CPU work
(better-profanity scans word by word: ~1.4 s for 5,000 characters), so the step runs it in a
thread, off the event loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from better_profanity import Profanity
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

Reason = Literal["profanity", "negative_sentiment"]


@dataclass(frozen=True)
class Verdict:
    status: Literal["approved", "flagged"]
    reason: Reason | None
    # VADER's compound score: -1 (most negative) to 1 (most positive).
    score: float

    @property
    def flagged(self) -> bool:
        return self.status == "flagged"


_lock = threading.Lock()
_profanity: Profanity | None = None
_analyzer: SentimentIntensityAnalyzer | None = None


def profanity_filter() -> Profanity:
    """The process's word-list filter. A private instance, not the package's global
    `profanity`: what another module loads into that one (custom words) cannot change ours."""
    global _profanity
    if _profanity is None:
        with _lock:
            if _profanity is None:
                from better_profanity import Profanity

                _profanity = Profanity()  # loads the default word list, once
    return _profanity


def sentiment_analyzer() -> SentimentIntensityAnalyzer:
    global _analyzer
    if _analyzer is None:
        with _lock:
            if _analyzer is None:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                _analyzer = SentimentIntensityAnalyzer()
    return _analyzer


def sentiment_score(text: str) -> float:
    return round(float(sentiment_analyzer().polarity_scores(text)["compound"]), 4)


def contains_profanity(text: str) -> bool:
    return bool(profanity_filter().contains_profanity(text))


def moderate(text: str, *, negative_threshold: float) -> Verdict:
    """Profanity flags first; else a compound score at or below `negative_threshold` flags;
    else the text is approved. The score is always given."""
    score = sentiment_score(text)
    if contains_profanity(text):
        return Verdict("flagged", "profanity", score)
    if score <= negative_threshold:
        return Verdict("flagged", "negative_sentiment", score)
    return Verdict("approved", None, score)
