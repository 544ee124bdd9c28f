"""Where texts come from: RSS feeds, NewsAPI, Reddit and X.

Each source turns one HTTP conversation into a list of :class:`TextItem`. Anything that goes
wrong on the wire or in the payload (connection refused, timeout, HTTP status, bad JSON, a
feed that does not parse, an unexpected shape) becomes one :class:`SourceError` whose message
says what happened, so the analysis can record which source failed and carry on with the
others. Base URLs are parameters: tests point them at a local server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import calendar
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit

import feedparser
import requests

from ml_integration.exceptions import MLError
from ml_integration.sentiment.scoring import asset_terms

__all__ = [
    "DEFAULT_RSS_FEEDS",
    "HttpGet",
    "HttpPost",
    "Kind",
    "NewsApiSource",
    "RedditSource",
    "RssSource",
    "Source",
    "SourceError",
    "TextItem",
    "XSource",
]

log = logging.getLogger(__name__)

#: Well-known crypto news feeds that need no key.
DEFAULT_RSS_FEEDS: tuple[str, ...] = (
    "https://www.coindesk.com/arc/outboundfeeds/rss/",
    "https://cointelegraph.com/rss",
    "https://decrypt.co/feed",
)

#: Upper bound on texts taken from one source in one fetch.
MAX_ITEMS = 100

Kind = Literal["news", "social"]
#: ``requests.get``-compatible: ``(url, *, params=, headers=, timeout=) -> Response``.
HttpGet = Callable[..., requests.Response]
#: ``requests.post``-compatible: ``(url, *, data=, headers=, timeout=) -> Response``.
HttpPost = Callable[..., requests.Response]


class SourceError(MLError, RuntimeError):
    """One source could not deliver texts this time; the message says why."""


@dataclass(frozen=True)
class TextItem:
    """One headline or post.

    ``text`` is what gets scored (a headline, a post title with the start of its body);
    ``context`` is extra text used only to decide whether the item is about the asset
    (an article summary).
    """

    text: str
    source: str
    kind: Kind
    published_at: float | None = None
    context: str = ""
    url: str = ""


class Source(Protocol):
    """Anything with a ``name``, a ``kind`` and ``fetch(asset)``."""

    name: str
    kind: Kind

    def fetch(self, asset: str) -> list[TextItem]:
        """Texts about ``asset`` (e.g. ``BTC``); raises :class:`SourceError` on any failure."""
        ...

    def describe(self) -> str:
        """What identifies this source in a cache key (URL, not secrets)."""
        ...


# --- HTTP helpers ----------------------------------------------------------------------------
def _checked(response: requests.Response, what: str) -> requests.Response:
    if response.status_code >= 400:
        snippet = response.text[:200].replace("\n", " ")
        raise SourceError(f"{what}: HTTP {response.status_code} from {response.url}: {snippet}")
    return response


def _request(call: Callable[[], requests.Response], what: str) -> requests.Response:
    try:
        return _checked(call(), what)
    except requests.RequestException as e:
        raise SourceError(f"{what}: {type(e).__name__}: {e}") from e


def _json(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as e:  # requests.JSONDecodeError is a ValueError
        raise SourceError(f"{what}: response from {response.url} is not JSON: {e}") from e


def _or_query(asset: str) -> str:
    """``bitcoin OR btc``: the search query that matches any of the asset's names."""
    return " OR ".join(asset_terms(asset))


def _iso_epoch(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 time such as ``2024-05-01T12:00:00Z``; None if unusable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _shape_error(what: str, detail: str) -> SourceError:
    return SourceError(f"{what}: unexpected response shape: {detail}")


# --- RSS -------------------------------------------------------------------------------------
class RssSource:
    """One RSS or Atom feed, fetched with ``requests`` (for the timeout) and parsed by feedparser."""

    kind: Kind = "news"

    def __init__(self, url: str, *, http_get: HttpGet, timeout_s: float, name: str | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"RSS feed URL must be http(s)://host/..., got {url!r}")
        self.url = url
        self.name = name or f"rss:{parts.netloc}"
        self._get = http_get
        self._timeout_s = timeout_s

    def describe(self) -> str:
        return f"rss {self.url}"

    def fetch(self, asset: str) -> list[TextItem]:
        what = f"RSS feed {self.url}"
        response = _request(lambda: self._get(self.url, timeout=self._timeout_s), what)
        feed = feedparser.parse(response.content)
        if feed.bozo and not feed.entries:
            raise SourceError(f"{what} does not parse as RSS/Atom: {feed.get('bozo_exception')}")
        if feed.bozo:
            log.debug("%s parsed with a warning: %s", what, feed.get("bozo_exception"))
        items = []
        for entry in feed.entries[:MAX_ITEMS]:
            title = str(entry.get("title", "")).strip()
            if not title:
                continue
            parsed = entry.get("published_parsed") or entry.get("updated_parsed")
            items.append(
                TextItem(
                    text=title,
                    source=self.name,
                    kind=self.kind,
                    published_at=float(calendar.timegm(parsed)) if parsed else None,
                    context=str(entry.get("summary", "")),
                    url=str(entry.get("link", "")),
                )
            )
        return items


# --- NewsAPI ---------------------------------------------------------------------------------
class NewsApiSource:
    """NewsAPI ``/v2/everything``: English articles naming the asset, newest first."""

    name = "newsapi"
    kind: Kind = "news"

    def __init__(
        self, api_key: str, *, http_get: HttpGet, timeout_s: float, base_url: str = "https://newsapi.org"
    ):
        if not api_key:
            raise ValueError("NewsAPI needs an API key (TVGW_NEWSAPI_KEY)")
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self._get = http_get
        self._timeout_s = timeout_s

    def describe(self) -> str:
        return f"newsapi {self.base_url}"

    def fetch(self, asset: str) -> list[TextItem]:
        what = "NewsAPI"
        url = f"{self.base_url}/v2/everything"
        params = {"q": _or_query(asset), "language": "en", "sortBy": "publishedAt", "pageSize": 50}
        response = _request(
            lambda: self._get(url, params=params, headers={"X-Api-Key": self._key}, timeout=self._timeout_s),
            what,
        )
        body = _json(response, what)
        if not isinstance(body, dict) or body.get("status") != "ok":
            message = body.get("message") if isinstance(body, dict) else body
            raise SourceError(f"{what}: status is not ok: {message}")
        articles = body.get("articles")
        if not isinstance(articles, list):
            raise _shape_error(what, "'articles' is not a list")
        items = []
        for article in articles[:MAX_ITEMS]:
            # NewsAPI keeps withdrawn articles in results with the title "[Removed]".
            if not isinstance(article, dict) or article.get("title") in (None, "", "[Removed]"):
                continue
            items.append(
                TextItem(
                    text=str(article["title"]).strip(),
                    source=self.name,
                    kind=self.kind,
                    published_at=_iso_epoch(article.get("publishedAt")),
                    context=str(article.get("description") or ""),
                    url=str(article.get("url") or ""),
                )
            )
        return items


# --- Reddit ----------------------------------------------------------------------------------
#: Subreddits searched for every asset, plus the asset's own where it has a well-known one.
REDDIT_SUBREDDITS: tuple[str, ...] = ("CryptoCurrency", "CryptoMarkets")
REDDIT_ASSET_SUBREDDITS: dict[str, str] = {"BTC": "Bitcoin", "ETH": "ethereum", "SOL": "solana"}


class RedditSource:
    """Reddit's OAuth API with application-only (client credentials) access.

    The bearer token is fetched once and reused until shortly before it expires; a lock keeps
    two threads refreshing at once from fetching two tokens.
    """

    name = "reddit"
    kind: Kind = "social"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        http_get: HttpGet,
        http_post: HttpPost,
        timeout_s: float,
        auth_url: str = "https://www.reddit.com",
        api_url: str = "https://oauth.reddit.com",
        subreddits: Sequence[str] = REDDIT_SUBREDDITS,
        user_agent: str = "tvgw-sentiment/0.1",
    ):
        if not client_id or not client_secret:
            raise ValueError("Reddit needs both TVGW_REDDIT_CLIENT_ID and TVGW_REDDIT_CLIENT_SECRET")
        self._client_id = client_id
        self._client_secret = client_secret
        self.auth_url = auth_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.subreddits = tuple(subreddits)
        self._get = http_get
        self._post = http_post
        self._timeout_s = timeout_s
        self._user_agent = user_agent
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"reddit {self.api_url} {','.join(self.subreddits)}"

    def _bearer(self) -> str:
        with self._lock:
            if self._token and time.time() < self._token_expires:
                return self._token
            what = "Reddit OAuth"
            basic = base64.b64encode(f"{self._client_id}:{self._client_secret}".encode()).decode()
            response = _request(
                lambda: self._post(
                    f"{self.auth_url}/api/v1/access_token",
                    data={"grant_type": "client_credentials"},
                    headers={"Authorization": f"Basic {basic}", "User-Agent": self._user_agent},
                    timeout=self._timeout_s,
                ),
                what,
            )
            body = _json(response, what)
            if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
                raise SourceError(f"{what}: no access_token in response: {str(body)[:200]}")
            self._token = body["access_token"]
            self._token_expires = time.time() + float(body.get("expires_in", 3600)) - 60
            return self._token

    def fetch(self, asset: str) -> list[TextItem]:
        token = self._bearer()
        headers = {"Authorization": f"bearer {token}", "User-Agent": self._user_agent}
        subreddits = list(self.subreddits)
        own = REDDIT_ASSET_SUBREDDITS.get(asset.upper())
        if own and own not in subreddits:
            subreddits.append(own)
        items: list[TextItem] = []
        for sub in subreddits:
            items.extend(self._search(sub, asset, headers))
        return items[:MAX_ITEMS]

    def _search(self, sub: str, asset: str, headers: dict[str, str]) -> list[TextItem]:
        what = f"Reddit r/{sub}"
        url = f"{self.api_url}/r/{quote(sub)}/search"
        params = {"q": _or_query(asset), "restrict_sr": "1", "sort": "new", "t": "day", "limit": 50}
        response = _request(
            lambda: self._get(url, params=params, headers=headers, timeout=self._timeout_s), what
        )
        body = _json(response, what)
        try:
            children = body["data"]["children"]
        except (KeyError, TypeError) as e:
            raise _shape_error(what, f"no data.children ({e})") from e
        items = []
        for child in children:
            post = child.get("data") if isinstance(child, dict) else None
            if not isinstance(post, dict) or not post.get("title"):
                continue
            body_text = str(post.get("selftext") or "")[:280]
            created = post.get("created_utc")
            items.append(
                TextItem(
                    text=f"{post['title']} {body_text}".strip(),
                    source=self.name,
                    kind=self.kind,
                    published_at=float(created) if isinstance(created, int | float) else None,
                    url=str(post.get("permalink") or ""),
                )
            )
        return items


# --- X (Twitter) -----------------------------------------------------------------------------
class XSource:
    """X API v2 recent search (last 7 days), English, retweets excluded."""

    name = "twitter"
    kind: Kind = "social"

    def __init__(
        self, bearer_token: str, *, http_get: HttpGet, timeout_s: float, base_url: str = "https://api.x.com"
    ):
        if not bearer_token:
            raise ValueError("X needs a bearer token (TVGW_X_BEARER_TOKEN)")
        self._token = bearer_token
        self.base_url = base_url.rstrip("/")
        self._get = http_get
        self._timeout_s = timeout_s

    def describe(self) -> str:
        return f"x {self.base_url}"

    def fetch(self, asset: str) -> list[TextItem]:
        what = "X recent search"
        url = f"{self.base_url}/2/tweets/search/recent"
        params = {
            "query": f"({_or_query(asset)}) lang:en -is:retweet",
            "max_results": 50,
            "tweet.fields": "created_at",
        }
        headers = {"Authorization": f"Bearer {self._token}"}
        response = _request(
            lambda: self._get(url, params=params, headers=headers, timeout=self._timeout_s), what
        )
        body = _json(response, what)
        if not isinstance(body, dict):
            raise _shape_error(what, "body is not an object")
        if "errors" in body and "data" not in body:
            raise SourceError(f"{what}: {body['errors']}")
        tweets = body.get("data", [])  # absent when nothing matched (meta.result_count == 0)
        if not isinstance(tweets, list):
            raise _shape_error(what, "'data' is not a list")
        return [
            TextItem(
                text=str(t["text"]),
                source=self.name,
                kind=self.kind,
                published_at=_iso_epoch(t.get("created_at")),
                url=f"https://x.com/i/web/status/{t.get('id', '')}",
            )
            for t in tweets[:MAX_ITEMS]
            if isinstance(t, dict) and t.get("text")
        ]
