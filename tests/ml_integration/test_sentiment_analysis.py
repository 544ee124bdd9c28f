"""SentimentAnalysis end to end: real SQLite cache, sources on a loopback replay server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ml_integration.sentiment import SentimentAnalysis, SourceError, TextItem, keys_from_environ
from ml_integration.sentiment.sources import Kind
from storage.database import Storage
from tests.conftest import ManualClock, refused_port
from tests.ml_integration.sentiment_fakes import ReplayServer, rss_document, running_server

HEADLINES = json.loads((Path(__file__).resolve().parent / "data" / "sentiment_headlines.json").read_text())
BTC_BULLISH = [h for h in HEADLINES["bullish"] if "Bitcoin" in h or "BTC" in h]
BTC_BEARISH = [h for h in HEADLINES["bearish"] if "Bitcoin" in h or "BTC" in h]


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with running_server() as replay:
        yield replay


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    db = Storage(tmp_path / "tvgw.sqlite")
    db.migrate()
    yield db
    db.close()


def _rss_only(storage: Storage, server: ReplayServer, **kwargs: Any) -> SentimentAnalysis:
    analysis = SentimentAnalysis(storage, timeout_s=2, **kwargs)
    analysis.configure_apis(rss_feeds=[f"{server.url}/rss"])
    return analysis


def test_rss_end_to_end(storage: Storage, server: ReplayServer) -> None:
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    result = _rss_only(storage, server).get_combined_sentiment("BTC/USDT")
    assert result["no_data"] is False and result["reason"] is None
    # five of the eight items name bitcoin/BTC (one only in its summary; WBTC does not count)
    assert result["news_component"]["news_count"] == 5
    assert result["sources"] == [f"rss:{server.url.removeprefix('http://')}"]
    assert result["failed_sources"] == {}
    assert result["social_component"]["mention_count"] == 0
    assert result["social_component"]["twitter"] is None and result["social_component"]["reddit"] is None
    assert result["combined_sentiment"] == result["news_component"]["overall_sentiment"] > 0.05
    assert result["sentiment_classification"] == "bullish"
    assert 0 < result["confidence"] < 0.6  # news alone carries at most its 0.6 weight
    assert result["news_component"]["key_topics"]
    assert "bitcoin" not in result["news_component"]["key_topics"]
    assert result["recommendation"]["action_bias"] in {"buy", "hold"}
    assert datetime.fromisoformat(result["fetched_at"]).tzinfo is not None
    assert result["cached"] is False
    json.dumps(result)  # the result is plain JSON


def test_other_assets_pick_their_own_headlines(storage: Storage, server: ReplayServer) -> None:
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    analysis = _rss_only(storage, server)
    eth = analysis.get_combined_sentiment("ETHUSDT")
    sol = analysis.get_combined_sentiment("BINANCE:SOLUSDT")
    assert eth["news_component"]["news_count"] == 1 and eth["sentiment_classification"] == "bullish"
    assert sol["news_component"]["news_count"] == 1 and sol["sentiment_classification"] == "bearish"
    doge = analysis.get_combined_sentiment("DOGE/USDT")
    assert doge["no_data"] is True and "no headlines or posts mention DOGE" in doge["reason"]


def test_newsapi_end_to_end(storage: Storage, server: ReplayServer) -> None:
    server.serve_file("GET", "/v2/everything", "newsapi_everything.json")
    analysis = SentimentAnalysis(storage, timeout_s=2)
    names = analysis.configure_apis(newsapi_key="k-1", rss_feeds=[], newsapi_url=server.url)
    assert names == ["newsapi"]
    result = analysis.get_combined_sentiment("BTC/USDT")
    assert result["sources"] == ["newsapi"]
    assert result["news_component"]["news_count"] == 3
    assert result["sentiment_classification"] == "bearish"
    assert server.hits("/v2/everything")[0].headers["X-Api-Key"] == "k-1"


def test_all_sources_weighted_into_combined(storage: Storage, server: ReplayServer) -> None:
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    server.serve_file("GET", "/v2/everything", "newsapi_everything.json")
    server.serve_file("POST", "/api/v1/access_token", "reddit_token.json")
    for sub in ("CryptoCurrency", "CryptoMarkets", "Bitcoin"):
        server.serve_file("GET", f"/r/{sub}/search", "reddit_search.json")
    server.serve_file("GET", "/2/tweets/search/recent", "x_recent_search.json")
    analysis = SentimentAnalysis(storage, timeout_s=2)
    analysis.configure_apis(
        newsapi_key="k",
        reddit_client_id="id",
        reddit_client_secret="secret",
        x_bearer_token="tok",
        rss_feeds=[f"{server.url}/rss"],
        newsapi_url=server.url,
        reddit_auth_url=server.url,
        reddit_api_url=server.url,
        x_api_url=server.url,
    )
    result = analysis.refresh("BTC/USDT")
    social = result["social_component"]
    assert set(result["sources"]) == {
        f"rss:{server.url.removeprefix('http://')}",
        "newsapi",
        "reddit",
        "twitter",
    }
    assert result["news_component"]["news_count"] == 8  # 5 RSS + 3 NewsAPI
    # the same two relevant Reddit posts appear in three subreddits: counted once; the "gm" tweet
    # and the daily thread do not name bitcoin
    assert social["reddit_count"] == 2 and social["twitter_count"] == 2
    assert social["mention_count"] == 4
    assert social["reddit"] > 0 > social["twitter"]
    expected = 0.6 * result["news_component"]["overall_sentiment"] + 0.4 * social["overall"]
    assert result["combined_sentiment"] == pytest.approx(expected, abs=1e-3)
    expected_confidence = 0.6 * result["news_component"]["confidence"] + 0.4 * social["confidence"]
    assert result["confidence"] == pytest.approx(expected_confidence, abs=1e-3)


def test_no_keys_and_no_network_gives_neutral_no_data_without_raising(storage: Storage) -> None:
    analysis = SentimentAnalysis(storage, timeout_s=1)
    with refused_port() as port:
        analysis.configure_apis(rss_feeds=[f"http://127.0.0.1:{port}/rss"])
        result = analysis.get_combined_sentiment("BTC/USDT")
    assert result["no_data"] is True
    assert result["combined_sentiment"] == 0.0 and result["confidence"] == 0.0
    assert result["sentiment_classification"] == "neutral"
    assert result["recommendation"]["action_bias"] == "hold"
    assert "every source failed" in result["reason"]
    (error,) = result["failed_sources"].values()
    assert "ConnectionError" in error
    assert result["sources"] == []


def test_no_sources_at_all_is_no_data(storage: Storage) -> None:
    analysis = SentimentAnalysis(storage)
    assert analysis.configure_apis(rss_feeds=[]) == []
    result = analysis.get_combined_sentiment("BTC/USDT")
    assert result["no_data"] is True and result["reason"] == "no sentiment sources configured"


def test_hot_path_never_fetches(storage: Storage, server: ReplayServer) -> None:
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    analysis = _rss_only(storage, server)
    cold = analysis.get_combined_sentiment("BTC/USDT", allow_fetch=False)
    assert cold["no_data"] is True and "no fresh cached sentiment" in cold["reason"]
    assert server.requests == []
    analysis.refresh("BTC/USDT")
    warm = analysis.get_combined_sentiment("BTC/USDT", allow_fetch=False)
    assert warm["no_data"] is False and warm["cached"] is True
    assert len(server.requests) == 1


def test_cache_hit_within_ttl_is_shared_through_sqlite(
    storage: Storage, server: ReplayServer, tmp_path: Path
) -> None:
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    first = _rss_only(storage, server).get_combined_sentiment("BTC/USDT")
    assert len(server.hits("/rss")) == 1
    again = _rss_only(storage, server).get_combined_sentiment("BTC/USDT")
    # another instance on another connection to the same file: what a second worker sees
    other_worker = Storage(tmp_path / "tvgw.sqlite")
    from_other = _rss_only(other_worker, server).get_combined_sentiment("BTC/USDT")
    other_worker.close()
    assert len(server.hits("/rss")) == 1
    assert again["cached"] is True and from_other["cached"] is True
    assert again["combined_sentiment"] == from_other["combined_sentiment"] == first["combined_sentiment"]


def test_cache_expires_after_ttl(storage: Storage, server: ReplayServer) -> None:
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    # A TTL far above the time between two back-to-back calls even on a busy machine (0.2 s was
    # not: a slow first call made the second one miss the cache).
    clock = ManualClock()
    analysis = _rss_only(storage, server, cache_ttl_s=60.0, now=clock)
    analysis.get_combined_sentiment("BTC/USDT")
    clock.now += 60  # the TTL's last second: still fresh
    assert analysis.get_combined_sentiment("BTC/USDT")["cached"] is True
    assert len(server.hits("/rss")) == 1
    clock.now += 1
    assert analysis.get_combined_sentiment("BTC/USDT")["cached"] is False
    assert len(server.hits("/rss")) == 2


def test_failed_fetch_is_retried_after_the_shorter_failure_ttl(
    storage: Storage, server: ReplayServer
) -> None:
    server.serve("GET", "/rss", "down", status=503, content_type="text/plain")
    clock = ManualClock()
    analysis = _rss_only(storage, server, cache_ttl_s=3600.0, failure_ttl_s=60.0, now=clock)
    assert analysis.get_combined_sentiment("BTC/USDT")["no_data"] is True
    clock.now += 60
    assert analysis.get_combined_sentiment("BTC/USDT")["cached"] is True
    assert len(server.hits("/rss")) == 1
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    clock.now += 1  # past the failure TTL, long before the success TTL
    assert analysis.get_combined_sentiment("BTC/USDT")["no_data"] is False
    assert len(server.hits("/rss")) == 2


def test_one_failing_source_is_reported_and_the_others_count(storage: Storage, server: ReplayServer) -> None:
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    server.serve_file("GET", "/v2/everything", "newsapi_error.json", status=401)
    analysis = SentimentAnalysis(storage, timeout_s=2)
    analysis.configure_apis(newsapi_key="bad", rss_feeds=[f"{server.url}/rss"], newsapi_url=server.url)
    result = analysis.get_combined_sentiment("BTC/USDT")
    assert result["no_data"] is False
    assert list(result["failed_sources"]) == ["newsapi"]
    assert "HTTP 401" in result["failed_sources"]["newsapi"]
    assert result["news_component"]["news_count"] == 5


class _BrokenSource:
    name = "broken"
    kind: Kind = "news"

    def fetch(self, asset: str) -> list[TextItem]:
        raise KeyError("a bug in a plug-in source")

    def describe(self) -> str:
        return "broken"


class _StaticSource:
    name = "static"
    kind: Kind = "news"

    def __init__(self, texts: list[str]):
        self.texts = texts

    def fetch(self, asset: str) -> list[TextItem]:
        return [TextItem(text=t, source=self.name, kind="news") for t in self.texts]

    def describe(self) -> str:
        return "static " + "|".join(self.texts)


class _FailingSource(_StaticSource):
    def fetch(self, asset: str) -> list[TextItem]:
        raise SourceError("upstream said no")


def test_a_buggy_plugged_in_source_is_recorded_not_raised(storage: Storage) -> None:
    analysis = SentimentAnalysis(storage, sources=[_BrokenSource(), _StaticSource(BTC_BULLISH)])
    result = analysis.refresh("BTC/USDT")
    assert result["no_data"] is False and result["sources"] == ["static"]
    assert "unexpected KeyError" in result["failed_sources"]["broken"]


def test_trend_follows_the_change_against_the_previous_result(storage: Storage, server: ReplayServer) -> None:
    analysis = _rss_only(storage, server)
    server.serve("GET", "/rss", rss_document(BTC_BULLISH))
    first = analysis.refresh("BTC/USDT")
    assert first["sentiment_trend"] == "unknown" and first["sentiment_change"] is None
    assert first["news_component"]["sentiment_trend"] == "unknown"

    server.serve("GET", "/rss", rss_document(BTC_BEARISH))
    worse = analysis.refresh("BTC/USDT")
    assert worse["sentiment_trend"] == "worsening"
    assert worse["news_component"]["sentiment_trend"] == "worsening"
    assert worse["sentiment_change"] == pytest.approx(
        worse["combined_sentiment"] - first["combined_sentiment"], abs=1e-3
    )
    assert worse["social_component"]["sentiment_trend"] == "unknown"  # no social texts either time

    same = analysis.refresh("BTC/USDT")
    assert same["sentiment_trend"] == "stable" and same["sentiment_change"] == 0.0

    server.serve("GET", "/rss", rss_document(BTC_BULLISH))
    assert analysis.refresh("BTC/USDT")["sentiment_trend"] == "improving"
    # the hot path returns the trend computed at refresh time
    assert analysis.get_combined_sentiment("BTC/USDT", allow_fetch=False)["sentiment_trend"] == "improving"


def test_trend_ignores_snapshots_older_than_the_window(storage: Storage) -> None:
    clock = ManualClock()
    analysis = SentimentAnalysis(storage, sources=[_StaticSource(BTC_BULLISH)], trend_window_s=600, now=clock)
    analysis.refresh("BTC/USDT")
    clock.now += 600  # the window's edge: the snapshot still counts
    assert analysis.refresh("BTC/USDT")["sentiment_trend"] == "stable"
    clock.now += 601  # the newest snapshot is now 601 s old
    assert analysis.refresh("BTC/USDT")["sentiment_trend"] == "unknown"


@pytest.mark.parametrize(("texts", "action"), [(BTC_BULLISH, "buy"), (BTC_BEARISH, "sell")])
def test_recommendation_follows_confident_sentiment(storage: Storage, texts: list[str], action: str) -> None:
    analysis = SentimentAnalysis(storage, sources=[_StaticSource(texts)], news_weight=1, social_weight=0)
    recommendation = analysis.refresh("BTC/USDT")["recommendation"]
    assert recommendation["action_bias"] == action, recommendation


def test_one_headline_is_not_enough_to_act(storage: Storage) -> None:
    analysis = SentimentAnalysis(storage, sources=[_StaticSource(BTC_BULLISH[:1])])
    result = analysis.refresh("BTC/USDT")
    assert result["sentiment_classification"] == "bullish"
    assert result["recommendation"]["action_bias"] == "hold"
    assert "confidence" in result["recommendation"]["reason"]


def test_without_storage_the_cache_lives_in_the_process() -> None:
    calls: list[str] = []

    class CountingSource(_StaticSource):
        def fetch(self, asset: str) -> list[TextItem]:
            calls.append(asset)
            return super().fetch(asset)

    analysis = SentimentAnalysis(sources=[CountingSource(BTC_BULLISH)])
    assert analysis.get_combined_sentiment("BTC/USDT")["cached"] is False
    assert analysis.get_combined_sentiment("BTC/USDT")["cached"] is True
    assert calls == ["BTC"]


def test_a_different_source_set_does_not_reuse_the_cache(storage: Storage) -> None:
    SentimentAnalysis(storage, sources=[_StaticSource(BTC_BULLISH)]).refresh("BTC/USDT")
    other = SentimentAnalysis(storage, sources=[_FailingSource(["x"])])
    result = other.get_combined_sentiment("BTC/USDT")
    assert result["cached"] is False and result["no_data"] is True
    assert result["failed_sources"] == {"static": "upstream said no"}


def test_keys_from_environ_maps_variables_to_configure_apis() -> None:
    environ = {
        "TVGW_NEWSAPI_KEY": " n ",
        "TVGW_REDDIT_CLIENT_ID": "i",
        "TVGW_REDDIT_CLIENT_SECRET": "s",
        "TVGW_X_BEARER_TOKEN": "",
        "TVGW_RSS_FEEDS": "https://a.example/rss, http://b.example/feed ,",
        "PATH": "/usr/bin",
    }
    assert keys_from_environ(environ) == {
        "newsapi_key": "n",
        "reddit_client_id": "i",
        "reddit_client_secret": "s",
        "rss_feeds": ["https://a.example/rss", "http://b.example/feed"],
    }
    assert keys_from_environ({}) == {}
    assert keys_from_environ({"TVGW_RSS_FEEDS": ""}) == {"rss_feeds": []}
    with pytest.raises(ValueError, match=r"TVGW_RSS_FEEDS.*not a URL"):
        keys_from_environ({"TVGW_RSS_FEEDS": "coindesk"})


def test_configure_apis_enables_sources_by_key() -> None:
    analysis = SentimentAnalysis()
    assert [s.name for s in analysis.sources] == [
        "rss:www.coindesk.com",
        "rss:cointelegraph.com",
        "rss:decrypt.co",
    ]
    names = analysis.configure_apis(**keys_from_environ({"TVGW_X_BEARER_TOKEN": "t", "TVGW_RSS_FEEDS": ""}))
    assert names == ["twitter"]
    with pytest.raises(ValueError, match="only one is set"):
        analysis.configure_apis(reddit_client_id="id")
    with pytest.raises(TypeError, match="list of URLs"):
        analysis.configure_apis(rss_feeds="https://a.example/rss")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache_ttl_s": 0}, "cache_ttl_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"news_weight": 0, "social_weight": 0}, "news_weight"),
        ({"news_weight": -1}, "news_weight"),
        ({"neutral_band": 1.5}, "neutral_band"),
        ({"recency_half_life_s": 0}, "recency_half_life_s"),
    ],
)
def test_bad_settings_are_refused_with_the_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SentimentAnalysis(**kwargs)


def test_unreadable_symbol_is_a_clear_error(storage: Storage) -> None:
    with pytest.raises(ValueError, match="symbol"):
        SentimentAnalysis(storage).get_combined_sentiment("", allow_fetch=False)
