"""Scoring a fixed set of headlines: per-text polarity, relevance, aggregation, labels, topics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ml_integration.sentiment.scoring import (
    TextScore,
    aggregate,
    base_asset,
    classify,
    fine_label,
    key_topics,
    mentions_asset,
    recency_weight,
    score_text,
)

HEADLINES = json.loads((Path(__file__).resolve().parent / "data" / "sentiment_headlines.json").read_text())


def _mean_score(texts: list[str]) -> float:
    component = aggregate([score_text(t) for t in texts])
    assert component is not None
    return component.sentiment


def test_recorded_bullish_set_scores_above_zero_and_bearish_below() -> None:
    bullish = _mean_score(HEADLINES["bullish"])
    bearish = _mean_score(HEADLINES["bearish"])
    neutral = _mean_score(HEADLINES["neutral"])
    assert bullish > 0.2
    assert bearish < -0.2
    assert abs(neutral) < 0.05
    assert bullish > neutral > bearish


@pytest.mark.parametrize("case", HEADLINES["clear"], ids=lambda c: c["text"][:40])
def test_clear_headlines_get_their_exact_classification(case: dict[str, str]) -> None:
    assert classify(score_text(case["text"]).score, 0.05) == case["expected"]


def test_score_is_the_mean_of_vader_and_textblob() -> None:
    s = score_text("Bitcoin hits record high as ETF inflows surge to best week ever")
    assert -1 <= s.vader <= 1 and -1 <= s.textblob <= 1
    assert s.score == pytest.approx((s.vader + s.textblob) / 2)
    assert s.vader > 0 and s.textblob > 0


def test_score_text_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="expects a str"):
        score_text(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("symbol", "asset"),
    [
        ("BTC/USDT", "BTC"),
        ("BTC/USDT:USDT", "BTC"),
        ("BINANCE:BTCUSDT", "BTC"),
        ("BTCUSDT.P", "BTC"),
        ("ETHUSDT", "ETH"),
        ("eth-usd", "ETH"),
        ("SOLBTC", "SOL"),
        ("doge", "DOGE"),
        ("1000PEPEUSDT", "1000PEPE"),
    ],
)
def test_base_asset_reads_the_spellings_alerts_use(symbol: str, asset: str) -> None:
    assert base_asset(symbol) == asset


@pytest.mark.parametrize("symbol", ["", "   ", "BTC$/USDT"])
def test_base_asset_rejects_unreadable_symbols(symbol: str) -> None:
    with pytest.raises(ValueError, match="symbol"):
        base_asset(symbol)


@pytest.mark.parametrize(
    ("text", "asset", "expected"),
    [
        ("Bitcoin hits record high", "BTC", True),
        ("$BTC breaks out", "BTC", True),
        ("BTC-denominated funds grow", "BTC", True),
        ("WBTC bridge volumes climb", "BTC", False),
        ("BTCS shares rise", "BTC", False),
        ("Ether climbs as staking grows", "ETH", True),
        ("Ethereum upgrade ships", "ETH", True),
        ("Etherscan adds a feature", "ETH", False),
        ("Solana outage ends", "SOL", True),
        ("Solaris stock falls", "SOL", False),
        ("PEPE memecoin surges", "PEPE", True),
        ("Bitcoin hits record high", "ETH", False),
    ],
)
def test_relevance_is_a_case_insensitive_word_match(text: str, asset: str, expected: bool) -> None:
    assert mentions_asset(text, asset) is expected


def test_aggregate_weighted_mean_and_confidence_formula() -> None:
    scores = [TextScore(0.5, 0.3), TextScore(0.1, 0.1)]  # per-text scores 0.4 and 0.1
    plain = aggregate(scores)
    assert plain is not None
    assert plain.sentiment == pytest.approx(0.25)
    assert plain.count == 2
    # confidence = (1 - exp(-n/10)) * (1 - sd); sd of {0.4, 0.1} is 0.15
    assert plain.confidence == pytest.approx((1 - math.exp(-0.2)) * 0.85, abs=1e-4)
    weighted = aggregate(scores, [3.0, 1.0])
    assert weighted is not None
    assert weighted.sentiment == pytest.approx((3 * 0.4 + 0.1) / 4)
    assert aggregate([]) is None


def test_confidence_grows_with_count_and_agreement() -> None:
    agreeing_few = aggregate([TextScore(0.4, 0.4)] * 3)
    agreeing_many = aggregate([TextScore(0.4, 0.4)] * 30)
    disagreeing_many = aggregate([TextScore(0.8, 0.8), TextScore(-0.8, -0.8)] * 15)
    assert agreeing_few and agreeing_many and disagreeing_many
    assert agreeing_many.confidence > agreeing_few.confidence
    assert agreeing_many.confidence > disagreeing_many.confidence
    assert 0 <= disagreeing_many.confidence <= 1


@pytest.mark.parametrize("weights", [[1.0], [-1.0, 1.0], [0.0, 0.0], [math.nan, 1.0]])
def test_aggregate_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        aggregate([TextScore(0.1, 0.1), TextScore(0.2, 0.2)], weights)


def test_recency_weight_halves_every_half_life() -> None:
    assert recency_weight(0, 3600) == 1.0
    assert recency_weight(3600, 3600) == pytest.approx(0.5)
    assert recency_weight(7200, 3600) == pytest.approx(0.25)
    assert recency_weight(None, 3600) == 1.0
    assert recency_weight(7200, None) == 1.0


@pytest.mark.parametrize(
    ("score", "coarse", "fine"),
    [
        (0.6, "bullish", "strongly_bullish"),
        (0.2, "bullish", "bullish"),
        (0.05, "neutral", "neutral"),
        (0.0, "neutral", "neutral"),
        (-0.05, "neutral", "neutral"),
        (-0.06, "bearish", "bearish"),
        (-0.5, "bearish", "strongly_bearish"),
    ],
)
def test_classification_with_neutral_band(score: float, coarse: str, fine: str) -> None:
    assert classify(score, 0.05) == coarse
    assert fine_label(score, 0.05) == fine


def test_classify_rejects_negative_band() -> None:
    with pytest.raises(ValueError, match="neutral_band"):
        classify(0.1, -0.1)


def test_key_topics_drop_stopwords_and_asset_names_and_prefer_phrases() -> None:
    texts = [
        "Bitcoin spot ETF inflows hit a record",
        "Spot ETF approval lifts Bitcoin",
        "SEC delays spot ETF decision on Bitcoin",
        "Bitcoin miners sell reserves",
    ]
    topics = key_topics(texts, asset="BTC", limit=5)
    assert topics[0] == "spot etf"
    assert "bitcoin" not in topics
    assert not {"the", "a", "on"} & set(topics)
    assert "etf" not in topics and "spot" not in topics  # every occurrence is inside "spot etf"
    assert len(topics) == 5
    assert key_topics([], asset="BTC") == []
