"""Scoring texts: per-text polarity, relevance to an asset, aggregation, labels and topics.

Everything here is pure (no network, no storage) so that a fixed set of headlines always
scores the same. Two lexicon scorers are averaged because they fail differently: VADER knows
social-media intensity ("soars!!", emoticons) but not finance words like "surges"; TextBlob's
pattern lexicon knows adjectives ("record", "strong", "weak") but not negation subtleties.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from textblob import TextBlob
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

__all__ = [
    "ASSET_ALIASES",
    "ComponentScore",
    "TextScore",
    "aggregate",
    "asset_terms",
    "base_asset",
    "classify",
    "fine_label",
    "key_topics",
    "mentions_asset",
    "recency_weight",
    "score_text",
]

#: Words that name an asset in news and posts. Any other asset is matched by its code alone.
ASSET_ALIASES: dict[str, tuple[str, ...]] = {
    "BTC": ("bitcoin", "btc"),
    "ETH": ("ethereum", "ether", "eth"),
    "SOL": ("solana", "sol"),
    "XRP": ("ripple", "xrp"),
    "DOGE": ("dogecoin", "doge"),
    "ADA": ("cardano", "ada"),
    "LTC": ("litecoin", "ltc"),
}

#: Quote currencies stripped from concatenated symbols such as ``BTCUSDT``; longest first.
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "GBP", "TRY", "BTC", "ETH", "BNB")

#: Above this absolute score a label is "strongly" bullish/bearish. Headline scores rarely
#: exceed 0.5 (they are short and factual), so 0.35 already means emphatic language.
STRONG_THRESHOLD = 0.35


@dataclass(frozen=True)
class TextScore:
    """One text's polarity from each scorer and their mean (all in [-1, 1])."""

    vader: float
    textblob: float

    @property
    def score(self) -> float:
        return (self.vader + self.textblob) / 2


@dataclass(frozen=True)
class ComponentScore:
    """A group of texts (news, or one social network) reduced to one figure."""

    sentiment: float
    count: int
    confidence: float
    vader: float
    textblob: float


@lru_cache(maxsize=1)
def _vader() -> SentimentIntensityAnalyzer:
    # Loading the lexicon takes ~50 ms; one analyzer is reused (it keeps no per-call state).
    return SentimentIntensityAnalyzer()


def score_text(text: str) -> TextScore:
    """VADER compound and TextBlob polarity of ``text``; their mean is :attr:`TextScore.score`."""
    if not isinstance(text, str):
        raise TypeError(f"score_text expects a str, got {type(text).__name__}")
    vader = float(_vader().polarity_scores(text)["compound"])
    textblob = float(TextBlob(text).sentiment.polarity)
    return TextScore(vader=vader, textblob=textblob)


def base_asset(symbol: str) -> str:
    """The base asset code of a trading symbol, upper case.

    Accepts the spellings alerts and exchanges use: ``BTC/USDT``, ``BTC/USDT:USDT``,
    ``BTC-USD``, ``BINANCE:BTCUSDT``, ``BTCUSDT``, ``BTCUSDT.P`` and a bare ``BTC``.
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"symbol must be a non-empty string such as 'BTC/USDT', got {symbol!r}")
    text = symbol.strip().upper()
    if ":" in text and "/" not in text:  # TradingView's EXCHANGE:TICKER
        text = text.split(":", 1)[1]
    text = text.split(":", 1)[0]  # ccxt's settle suffix, BTC/USDT:USDT
    text = re.sub(r"\.P$", "", text)  # TradingView perpetual suffix
    for separator in ("/", "-", "_"):
        if separator in text:
            text = text.split(separator, 1)[0]
            break
    else:
        for quote in _QUOTES:
            if text.endswith(quote) and len(text) > len(quote):
                text = text[: -len(quote)]
                break
    if not re.fullmatch(r"[A-Z0-9]+", text):
        raise ValueError(f"cannot find a base asset in symbol {symbol!r}; expected e.g. 'BTC/USDT'")
    return text


def asset_terms(asset: str) -> tuple[str, ...]:
    """Lower-case words that mean ``asset`` in a text (its aliases, else its code)."""
    return ASSET_ALIASES.get(asset.upper(), (asset.lower(),))


@lru_cache(maxsize=256)
def _asset_pattern(asset: str) -> re.Pattern[str]:
    words = "|".join(re.escape(t) for t in asset_terms(asset))
    # \b on both sides: "BTC" matches "$BTC" and "BTC-denominated" but not "BTCS" or "WBTC".
    return re.compile(rf"\b(?:{words})\b", re.IGNORECASE)


def mentions_asset(text: str, asset: str) -> bool:
    """Whether ``text`` names ``asset`` as a whole word (case-insensitive)."""
    return _asset_pattern(asset.upper()).search(text) is not None


def recency_weight(age_s: float | None, half_life_s: float | None) -> float:
    """Weight halving every ``half_life_s`` of age; 1.0 when undated or weighting is off.

    Undated texts count as fresh: a feed that omits dates is still showing them now.
    """
    if half_life_s is None or age_s is None:
        return 1.0
    return 0.5 ** (max(age_s, 0.0) / half_life_s)


#: Texts at which count-confidence reaches 1 - 1/e (~0.63); 30 texts give ~0.95.
CONFIDENCE_SCALE = 10.0


def aggregate(scores: Sequence[TextScore], weights: Sequence[float] | None = None) -> ComponentScore | None:
    """Weighted mean of per-text scores, with a confidence in [0, 1]; None when empty.

    ``confidence = (1 - exp(-n / 10)) * (1 - sd)`` where ``n`` is the number of texts and
    ``sd`` is the weighted standard deviation of their scores (at most 1 since scores lie in
    [-1, 1]). More texts, and texts that agree with each other, both raise confidence; a
    single text never exceeds ~0.1.
    """
    if not scores:
        return None
    w = [1.0] * len(scores) if weights is None else [float(x) for x in weights]
    if len(w) != len(scores):
        raise ValueError(f"got {len(w)} weights for {len(scores)} scores")
    if any(x < 0 or not math.isfinite(x) for x in w) or sum(w) <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    total = sum(w)
    values = [s.score for s in scores]
    mean = sum(wi * v for wi, v in zip(w, values, strict=True)) / total
    variance = sum(wi * (v - mean) ** 2 for wi, v in zip(w, values, strict=True)) / total
    spread = min(1.0, math.sqrt(variance))
    n = len(scores)
    confidence = (1.0 - math.exp(-n / CONFIDENCE_SCALE)) * (1.0 - spread)
    return ComponentScore(
        sentiment=_clip(mean),
        count=n,
        confidence=round(confidence, 4),
        vader=_clip(sum(wi * s.vader for wi, s in zip(w, scores, strict=True)) / total),
        textblob=_clip(sum(wi * s.textblob for wi, s in zip(w, scores, strict=True)) / total),
    )


def _clip(x: float) -> float:
    return round(max(-1.0, min(1.0, x)), 4)


def classify(score: float, neutral_band: float) -> str:
    """``bullish`` above ``neutral_band``, ``bearish`` below ``-neutral_band``, else ``neutral``."""
    if neutral_band < 0:
        raise ValueError(f"neutral_band must be >= 0, got {neutral_band}")
    if score > neutral_band:
        return "bullish"
    if score < -neutral_band:
        return "bearish"
    return "neutral"


def fine_label(score: float, neutral_band: float) -> str:
    """Five levels: ``strongly_bearish`` .. ``strongly_bullish`` (strong beyond 0.35)."""
    coarse = classify(score, neutral_band)
    if coarse != "neutral" and abs(score) > max(STRONG_THRESHOLD, neutral_band):
        return f"strongly_{coarse}"
    return coarse


# A compact English stopword list plus words every crypto headline carries. NLTK's list would
# need a corpus download, which the gateway cannot rely on.
_STOPWORD_LINES = (
    "a about above after again against all am an and any are as at be because been before being",
    "below between both but by can could did do does doing down during each few for from further",
    "had has have having he her here hers him his how i if in into is it its itself just me more",
    "most my no nor not now of off on once only or other our out over own same she should so some",
    "such than that the their them then there these they this those through to too under until up",
    "very was we were what when where which while who whom why will with would you your yours",
    "new says said say report reports may might per via amid set sets get gets got year years",
    "week weeks day days today time times one two three first last next also still back",
    "don doesn isn aren wasn weren won crypto cryptocurrency price prices market markets",
    "news coin coins token tokens usd usdt",
)
_STOPWORDS = frozenset(word for line in _STOPWORD_LINES for word in line.split())
_WORD = re.compile(r"[a-z][a-z0-9'\-]*[a-z0-9]|[a-z]")


def _tokens(text: str, drop: frozenset[str]) -> list[str | None]:
    """Lower-case words; stopwords become None so that bigrams never span them."""
    out: list[str | None] = []
    for raw in _WORD.findall(text.lower()):
        word = raw.strip("'-").removesuffix("'s")
        keep = len(word) > 2 and word not in _STOPWORDS and word not in drop and not word.isdigit()
        out.append(word if keep else None)
    return out


def key_topics(texts: Iterable[str], *, asset: str | None = None, limit: int = 8) -> list[str]:
    """The most frequent meaningful words and two-word phrases across ``texts``.

    Stopwords and the asset's own names are dropped (every relevant headline contains them).
    A phrase must occur at least twice; a word is not listed again when a phrase already
    covers all of its occurrences. Ties break alphabetically so the result is deterministic.
    """
    drop = frozenset(asset_terms(asset)) if asset else frozenset()
    words: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    for text in texts:
        tokens = _tokens(text, drop)
        words.update(t for t in tokens if t)
        phrases.update(f"{a} {b}" for a, b in itertools.pairwise(tokens) if a and b)
    ranked = [(c, p) for p, c in phrases.items() if c >= 2]
    covered: Counter[str] = Counter()
    for c, p in ranked:
        for w in p.split():
            covered[w] = max(covered[w], c)
    ranked += [(c, w) for w, c in words.items() if c > covered[w]]
    ranked.sort(key=lambda ct: (-ct[0], ct[1]))
    return [t for _, t in ranked[:limit]]
