"""Each source against a local server replaying recorded responses (real requests + parsing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from ml_integration.sentiment.sources import (
    NewsApiSource,
    RedditSource,
    RssSource,
    SourceError,
    XSource,
)
from tests.conftest import refused_port
from tests.ml_integration.sentiment_fakes import ReplayServer, running_server


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with running_server() as replay:
        yield replay


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def test_rss_feed_items_carry_title_summary_date_and_link(
    server: ReplayServer, session: requests.Session
) -> None:
    server.serve_file("GET", "/rss", "coindesk_rss.xml")
    source = RssSource(f"{server.url}/rss", http_get=session.get, timeout_s=2)
    items = source.fetch("BTC")
    assert len(items) == 8
    first = items[0]
    assert first.text == "Bitcoin Gains 8% as Institutional Demand Remains Strong"
    assert first.kind == "news" and first.source == f"rss:127.0.0.1:{server.url.rsplit(':', 1)[1]}"
    assert "Spot ETF inflows" in first.context
    assert first.published_at == 1715701200.0  # Tue, 14 May 2024 15:40:00 +0000
    assert first.url.startswith("https://www.coindesk.com/")


def test_rss_that_does_not_parse_is_a_source_error(server: ReplayServer, session: requests.Session) -> None:
    server.serve("GET", "/rss", "<html><body>Access denied", content_type="text/html")
    with pytest.raises(SourceError, match="does not parse as RSS"):
        RssSource(f"{server.url}/rss", http_get=session.get, timeout_s=2).fetch("BTC")


def test_rss_http_error_status_is_a_source_error(server: ReplayServer, session: requests.Session) -> None:
    server.serve("GET", "/rss", "rate limited", status=429, content_type="text/plain")
    with pytest.raises(SourceError, match="HTTP 429"):
        RssSource(f"{server.url}/rss", http_get=session.get, timeout_s=2).fetch("BTC")


def test_rss_refused_port_is_a_source_error(session: requests.Session) -> None:
    with refused_port() as port, pytest.raises(SourceError, match="ConnectionError"):
        RssSource(f"http://127.0.0.1:{port}/rss", http_get=session.get, timeout_s=2).fetch("BTC")


def test_rss_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        RssSource("ftp://example.com/feed", http_get=requests.get, timeout_s=2)


def test_newsapi_sends_key_and_query_and_skips_removed_articles(
    server: ReplayServer, session: requests.Session
) -> None:
    server.serve_file("GET", "/v2/everything", "newsapi_everything.json")
    source = NewsApiSource("k-123", base_url=server.url, http_get=session.get, timeout_s=2)
    items = source.fetch("BTC")
    assert items[0].text == "Bitcoin Crashes 15% as Panic Selling Wipes Out Leveraged Traders"
    assert len(items) == 3  # the "[Removed]" article is dropped
    assert items[0].published_at == 1722849120.0  # 2024-08-05T09:12:00Z
    (hit,) = server.hits("/v2/everything")
    assert hit.headers["X-Api-Key"] == "k-123"
    assert hit.query["q"] == ["bitcoin OR btc"]
    assert hit.query["language"] == ["en"]


def test_newsapi_invalid_key_reports_the_api_message(server: ReplayServer, session: requests.Session) -> None:
    server.serve_file("GET", "/v2/everything", "newsapi_error.json", status=401)
    source = NewsApiSource("bad", base_url=server.url, http_get=session.get, timeout_s=2)
    with pytest.raises(SourceError, match=r"HTTP 401.*API key is invalid"):
        source.fetch("BTC")


def test_newsapi_non_json_body_is_a_source_error(server: ReplayServer, session: requests.Session) -> None:
    server.serve("GET", "/v2/everything", "<html>maintenance</html>", content_type="text/html")
    source = NewsApiSource("k", base_url=server.url, http_get=session.get, timeout_s=2)
    with pytest.raises(SourceError, match="not JSON"):
        source.fetch("BTC")


def test_reddit_gets_a_token_once_and_searches_each_subreddit(
    server: ReplayServer, session: requests.Session
) -> None:
    server.serve_file("POST", "/api/v1/access_token", "reddit_token.json")
    for sub in ("CryptoCurrency", "CryptoMarkets", "Bitcoin"):
        server.serve_file("GET", f"/r/{sub}/search", "reddit_search.json")
    source = RedditSource(
        "id",
        "secret",
        auth_url=server.url,
        api_url=server.url,
        http_get=session.get,
        http_post=session.post,
        timeout_s=2,
    )
    items = source.fetch("BTC")
    assert len(items) == 9  # three subreddits, three posts each
    assert items[0].text.startswith("Bitcoin just broke out") and "Love to see it." in items[0].text
    assert items[0].kind == "social" and items[0].source == "reddit"
    source.fetch("BTC")
    (token_request,) = server.hits("/api/v1/access_token")  # reused on the second fetch
    assert token_request.headers["Authorization"] == "Basic aWQ6c2VjcmV0"  # base64("id:secret")
    assert token_request.body == b"grant_type=client_credentials"
    search = server.hits("/r/Bitcoin/search")[0]
    assert search.headers["Authorization"].startswith("bearer eyJ")
    assert search.query["restrict_sr"] == ["1"]


def test_reddit_requires_both_credentials() -> None:
    with pytest.raises(ValueError, match="TVGW_REDDIT_CLIENT_SECRET"):
        RedditSource("id", "", http_get=requests.get, http_post=requests.post, timeout_s=2)


def test_x_recent_search(server: ReplayServer, session: requests.Session) -> None:
    server.serve_file("GET", "/2/tweets/search/recent", "x_recent_search.json")
    items = XSource("tok", base_url=server.url, http_get=session.get, timeout_s=2).fetch("BTC")
    assert len(items) == 3
    assert items[0].source == "twitter" and items[0].published_at == 1715698860.0
    (hit,) = server.hits("/2/tweets/search/recent")
    assert hit.headers["Authorization"] == "Bearer tok"
    assert hit.query["query"] == ["(bitcoin OR btc) lang:en -is:retweet"]


def test_x_with_no_matches_returns_nothing(server: ReplayServer, session: requests.Session) -> None:
    server.serve("GET", "/2/tweets/search/recent", '{"meta": {"result_count": 0}}')
    assert XSource("tok", base_url=server.url, http_get=session.get, timeout_s=2).fetch("BTC") == []
