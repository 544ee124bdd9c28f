"""News and social sentiment for a symbol, cached in SQLite, safe to call on the webhook path.

The webhook path calls ``get_combined_sentiment(symbol, allow_fetch=False)``: it reads the
cache and never touches the network, so it cannot eat the 3-second budget TradingView gives
us. A background job (or ``tvgw`` CLI) calls :meth:`SentimentAnalysis.refresh`, which fetches
every configured source in parallel with explicit timeouts, scores the texts and caches the
result for ``cache_ttl_s``. A source that fails is recorded in ``failed_sources`` and the
others carry on; when nothing usable arrives the result is neutral with ``no_data: True`` and a
``reason``. Nothing here raises into the caller except a symbol with no recognisable asset.

Result keys (a plain dict, the shape users of the original API know):

``symbol``, ``asset``, ``combined_sentiment`` (-1..1), ``sentiment_classification``
(bullish/bearish/neutral), ``sentiment_label`` (five levels), ``confidence`` (0..1),
``sentiment_trend`` and ``sentiment_change``, ``news_component`` (``overall_sentiment``,
``news_count``, ``key_topics``, ``confidence``, ``sentiment_trend``), ``social_component``
(``twitter``, ``reddit``: score or None, ``overall``, ``mention_count``, ``twitter_count``,
``reddit_count``, ``key_topics``, ``sentiment_trend``), ``recommendation`` (``action_bias``
buy/sell/hold, ``strength``, ``reason``), ``no_data``, ``reason``, ``sources`` (names that
contributed texts), ``failed_sources`` (name → error), ``fetched_at`` (ISO-8601 UTC), ``cached``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from ml_integration.sentiment.scoring import (
    ComponentScore,
    aggregate,
    base_asset,
    classify,
    fine_label,
    key_topics,
    mentions_asset,
    recency_weight,
    score_text,
)
from ml_integration.sentiment.sources import (
    DEFAULT_RSS_FEEDS,
    HttpGet,
    NewsApiSource,
    RedditSource,
    RssSource,
    Source,
    SourceError,
    TextItem,
    XSource,
)
from storage import sentiment as sentiment_store
from storage.database import Storage, database_errors

__all__ = ["ENVIRONMENT_KEYS", "SentimentAnalysis", "keys_from_environ"]

log = logging.getLogger(__name__)

#: Environment variable → ``configure_apis`` keyword.
ENVIRONMENT_KEYS: dict[str, str] = {
    "TVGW_NEWSAPI_KEY": "newsapi_key",
    "TVGW_REDDIT_CLIENT_ID": "reddit_client_id",
    "TVGW_REDDIT_CLIENT_SECRET": "reddit_client_secret",
    "TVGW_X_BEARER_TOKEN": "x_bearer_token",
    "TVGW_RSS_FEEDS": "rss_feeds",
}

#: Below this confidence the recommendation stays ``hold`` whatever the sign. With news alone
#: (weight 0.6) about a dozen fairly consistent headlines are needed to pass it.
MIN_CONFIDENCE_TO_ACT = 0.25
#: Trend snapshots kept per asset and source set (a ring, one slot per cache window).
TREND_SLOTS = 24


def keys_from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """``configure_apis`` keyword arguments from a ``TVGW_*`` mapping read once at start-up.

    Unset or empty variables are left out (so the defaults apply), except ``TVGW_RSS_FEEDS``:
    set but empty means "no RSS feeds". Feeds are a comma-separated list of http(s) URLs.
    """
    kwargs: dict[str, Any] = {}
    for variable, keyword in ENVIRONMENT_KEYS.items():
        value = environ.get(variable)
        if value is None:
            continue
        value = value.strip()
        if keyword == "rss_feeds":
            feeds = [f.strip() for f in value.split(",") if f.strip()]
            bad = [f for f in feeds if not f.startswith(("http://", "https://"))]
            if bad:
                raise ValueError(f"{variable} must list http(s) URLs separated by commas; not a URL: {bad}")
            kwargs[keyword] = feeds
        elif value:
            kwargs[keyword] = value
    return kwargs


# --- cache -----------------------------------------------------------------------------------
class _Cache(Protocol):
    def get(self, key: str, max_age_s: float) -> dict[str, Any] | None: ...
    def put(self, key: str, payload: dict[str, Any]) -> None: ...
    def history(self, prefix: str) -> list[tuple[float, dict[str, Any]]]: ...


class _SqliteCache:
    """The shared cache: every gunicorn worker and the background refresher see one table."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def get(self, key: str, max_age_s: float) -> dict[str, Any] | None:
        return sentiment_store.get_cached(self.storage, key, max_age_s)

    def put(self, key: str, payload: dict[str, Any]) -> None:
        sentiment_store.put_cached(self.storage, key, payload)

    def history(self, prefix: str) -> list[tuple[float, dict[str, Any]]]:
        return sentiment_store.history(self.storage, prefix)


class _MemoryCache:
    """A process-local cache for scripts and notebooks that pass no Storage."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, max_age_s: float) -> dict[str, Any] | None:
        with self._lock:
            row = self._rows.get(key)
        if row is None or time.time() - row[0] > max_age_s:
            return None
        return row[1]

    def put(self, key: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._rows[key] = (time.time(), payload)

    def history(self, prefix: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return sorted((row for k, row in self._rows.items() if k.startswith(prefix)), key=lambda r: r[0])


# --- the analysis ----------------------------------------------------------------------------
class SentimentAnalysis:
    """Combined news and social sentiment per symbol.

    ``storage``: the gateway's :class:`Storage` (migrated); without it the cache lives in this
    process only. ``sources``: explicit source objects (replaced by :meth:`configure_apis`);
    by default the well-known crypto RSS feeds. ``http_get``: a ``requests.get``-compatible
    callable used for every GET (a shared ``requests.Session`` by default).
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        sources: Sequence[Source] | None = None,
        cache_ttl_s: float = 3600.0,
        timeout_s: float = 3.0,
        news_weight: float = 0.6,
        social_weight: float = 0.4,
        neutral_band: float = 0.05,
        http_get: HttpGet | None = None,
        failure_ttl_s: float = 300.0,
        recency_half_life_s: float | None = 12 * 3600.0,
        trend_window_s: float = 24 * 3600.0,
        trend_threshold: float = 0.05,
        now: Callable[[], float] = time.time,
    ):
        _require(cache_ttl_s > 0, f"cache_ttl_s must be > 0, got {cache_ttl_s}")
        _require(failure_ttl_s > 0, f"failure_ttl_s must be > 0, got {failure_ttl_s}")
        _require(0 < timeout_s <= 60, f"timeout_s must be in (0, 60], got {timeout_s}")
        _require(
            news_weight >= 0 and social_weight >= 0 and news_weight + social_weight > 0,
            f"news_weight and social_weight must be >= 0 and not both 0, got {news_weight}, {social_weight}",
        )
        _require(0 <= neutral_band < 1, f"neutral_band must be in [0, 1), got {neutral_band}")
        _require(
            recency_half_life_s is None or recency_half_life_s > 0,
            f"recency_half_life_s must be > 0 or None, got {recency_half_life_s}",
        )
        _require(trend_window_s > 0, f"trend_window_s must be > 0, got {trend_window_s}")
        _require(trend_threshold >= 0, f"trend_threshold must be >= 0, got {trend_threshold}")
        self.cache_ttl_s = float(cache_ttl_s)
        self.failure_ttl_s = float(failure_ttl_s)
        self.timeout_s = float(timeout_s)
        self.news_weight = float(news_weight)
        self.social_weight = float(social_weight)
        self.neutral_band = float(neutral_band)
        self.recency_half_life_s = recency_half_life_s
        self.trend_window_s = float(trend_window_s)
        self.trend_threshold = float(trend_threshold)
        #: Wall-clock epoch seconds: when a result was fetched and whether it is still fresh (a
        #: test passes its own clock instead of waiting out a TTL).
        self.now = now
        self._session = requests.Session()
        self._http_get: HttpGet = http_get or self._session.get
        self._cache: _Cache = _SqliteCache(storage) if storage is not None else _MemoryCache()
        self.sources: list[Source] = (
            list(sources) if sources is not None else [self._rss(url) for url in DEFAULT_RSS_FEEDS]
        )

    # --- configuration ---------------------------------------------------------------------
    def configure_apis(
        self,
        newsapi_key: str | None = None,
        reddit_client_id: str | None = None,
        reddit_client_secret: str | None = None,
        x_bearer_token: str | None = None,
        rss_feeds: Sequence[str] | None = None,
        *,
        newsapi_url: str = "https://newsapi.org",
        reddit_auth_url: str = "https://www.reddit.com",
        reddit_api_url: str = "https://oauth.reddit.com",
        x_api_url: str = "https://api.x.com",
    ) -> list[str]:
        """Replace the sources with those the given keys allow; returns their names.

        RSS needs no key: ``rss_feeds=None`` means the default feeds, ``[]`` means none. Each
        keyed source is enabled only when its key is given (Reddit needs id and secret).
        """
        if bool(reddit_client_id) != bool(reddit_client_secret):
            raise ValueError(
                "Reddit needs both TVGW_REDDIT_CLIENT_ID and TVGW_REDDIT_CLIENT_SECRET; only one is set"
            )
        if isinstance(rss_feeds, str):
            raise TypeError("rss_feeds must be a list of URLs, not one string (split comma lists first)")
        feeds = DEFAULT_RSS_FEEDS if rss_feeds is None else tuple(rss_feeds)
        sources: list[Source] = [self._rss(url) for url in feeds]
        get, timeout = self._http_get, self.timeout_s
        if newsapi_key:
            sources.append(NewsApiSource(newsapi_key, base_url=newsapi_url, http_get=get, timeout_s=timeout))
        if reddit_client_id and reddit_client_secret:
            sources.append(
                RedditSource(
                    reddit_client_id,
                    reddit_client_secret,
                    http_post=self._session.post,
                    auth_url=reddit_auth_url,
                    api_url=reddit_api_url,
                    http_get=get,
                    timeout_s=timeout,
                )
            )
        if x_bearer_token:
            sources.append(XSource(x_bearer_token, base_url=x_api_url, http_get=get, timeout_s=timeout))
        self.sources = sources
        return [s.name for s in sources]

    def _rss(self, url: str) -> RssSource:
        return RssSource(url, http_get=self._http_get, timeout_s=self.timeout_s)

    def _sources_hash(self) -> str:
        """Identifies the configured source set (URLs, never keys) so a new set starts fresh."""
        described = "\n".join(sorted(s.describe() for s in self.sources))
        return hashlib.sha256(described.encode()).hexdigest()[:12]

    def _cache_key(self, asset: str) -> str:
        return f"sentiment:{asset}:{self._sources_hash()}"

    def _history_prefix(self, asset: str) -> str:
        return f"sentiment-history:{asset}:{self._sources_hash()}:"

    # --- public calls ----------------------------------------------------------------------
    def get_combined_sentiment(self, symbol: str, *, allow_fetch: bool = True) -> dict[str, Any]:
        """The cached result if fresh; else a fresh fetch, or with ``allow_fetch=False`` a
        neutral ``no_data`` result (no network at all, for the webhook path)."""
        asset = base_asset(symbol)
        cached = self._read_cache(asset)
        if cached is not None:
            return {**cached, "symbol": symbol, "cached": True}
        if not allow_fetch:
            return _no_data(
                symbol, asset, f"no fresh cached sentiment for {asset}; refresh runs in background",
                now=self.now(),
            )  # fmt: skip
        return self.refresh(symbol)

    def refresh(self, symbol: str) -> dict[str, Any]:
        """Fetch every source now, score, cache, and return the result (never raises for I/O).

        Sources run in parallel and every request has ``timeout_s``; Reddit makes a few requests
        in a row (token, then one search per subreddit), so a refresh can take a few times
        ``timeout_s`` in the worst case. That is why the webhook path never calls this.
        """
        asset = base_asset(symbol)
        now = self.now()
        if not self.sources:
            result = _no_data(symbol, asset, "no sentiment sources configured", now=now)
            self._write_cache(asset, result, now, self.failure_ttl_s)
            return result
        items, failed = self._fetch_all(asset)
        relevant = _relevant(items, asset)
        if not relevant:
            reason = (
                f"every source failed: {'; '.join(failed.values())}"
                if len(failed) == len(self.sources)
                else f"no headlines or posts mention {asset}"
            )
            result = _no_data(symbol, asset, reason, failed=failed, now=now)
            ttl = self.failure_ttl_s if failed else self.cache_ttl_s
            self._write_cache(asset, result, now, ttl)
            return result
        result = self._score(symbol, asset, relevant, failed, now)
        self._write_cache(asset, result, now, self.cache_ttl_s)
        self._write_snapshot(asset, result, now)
        return result

    # --- fetching --------------------------------------------------------------------------
    def _fetch_all(self, asset: str) -> tuple[list[TextItem], dict[str, str]]:
        """All sources in parallel; the slowest bounds the wait, not the sum."""
        with ThreadPoolExecutor(
            max_workers=min(8, len(self.sources)), thread_name_prefix="sentiment"
        ) as pool:
            outcomes = list(pool.map(lambda s: _fetch_one(s, asset), self.sources))
        items: list[TextItem] = []
        failed: dict[str, str] = {}
        for source, (fetched, error) in zip(self.sources, outcomes, strict=True):
            if error is not None:
                failed[source.name] = error
            items.extend(fetched)
        return items, failed

    # --- scoring ---------------------------------------------------------------------------
    def _component(self, items: Sequence[TextItem]) -> ComponentScore | None:
        """Recency-weighted mean of the items' scores.

        Age is measured from the newest dated item of the group, not from the clock: a feed
        whose every item is two days old must still average its items, not underflow to zero
        weights. (Staleness of the whole fetch is the cache's concern.)
        """
        scores = [score_text(i.text) for i in items]
        dated = [i.published_at for i in items if i.published_at is not None]
        newest = max(dated) if dated else None
        weights = [
            recency_weight(
                None if i.published_at is None or newest is None else newest - i.published_at,
                self.recency_half_life_s,
            )
            for i in items
        ]
        return aggregate(scores, weights)

    def _score(
        self, symbol: str, asset: str, items: list[TextItem], failed: dict[str, str], now: float
    ) -> dict[str, Any]:
        news_items = [i for i in items if i.kind == "news"]
        social_items = [i for i in items if i.kind == "social"]
        news = self._component(news_items)
        social = self._component(social_items)
        reddit = self._component([i for i in social_items if i.source == "reddit"])
        twitter = self._component([i for i in social_items if i.source == "twitter"])

        parts = [(self.news_weight, news), (self.social_weight, social)]
        present = [(w, c) for w, c in parts if c is not None and w > 0]
        # present is empty only when the texts all fell in a zero-weighted component.
        combined = sum(w * c.sentiment for w, c in present) / sum(w for w, _ in present) if present else 0.0
        # A missing component counts as zero confidence: news alone is less sure than both.
        confidence = sum(w * c.confidence for w, c in present) / (self.news_weight + self.social_weight)
        combined = round(combined, 4)
        confidence = round(confidence, 4)

        previous = self._previous_snapshot(asset, now)
        classification = classify(combined, self.neutral_band)
        return {
            "symbol": symbol,
            "asset": asset,
            "combined_sentiment": combined,
            "sentiment_classification": classification,
            "sentiment_label": fine_label(combined, self.neutral_band),
            "confidence": confidence,
            "sentiment_trend": self._trend(combined, previous.get("combined")),
            "sentiment_change": _change(combined, previous.get("combined")),
            "news_component": {
                "overall_sentiment": news.sentiment if news else 0.0,
                "news_count": len(news_items),
                "key_topics": key_topics([i.text for i in news_items], asset=asset),
                "confidence": news.confidence if news else 0.0,
                "vader": news.vader if news else 0.0,
                "textblob": news.textblob if news else 0.0,
                "sentiment_trend": self._trend(news.sentiment if news else None, previous.get("news")),
            },
            "social_component": {
                "twitter": twitter.sentiment if twitter else None,
                "reddit": reddit.sentiment if reddit else None,
                "overall": social.sentiment if social else 0.0,
                "mention_count": len(social_items),
                "twitter_count": twitter.count if twitter else 0,
                "reddit_count": reddit.count if reddit else 0,
                "key_topics": key_topics([i.text for i in social_items], asset=asset),
                "confidence": social.confidence if social else 0.0,
                "sentiment_trend": self._trend(social.sentiment if social else None, previous.get("social")),
            },
            "recommendation": _recommendation(combined, classification, confidence),
            "no_data": False,
            "reason": None,
            "sources": sorted({i.source for i in items}),
            "failed_sources": failed,
            "fetched_at": _iso(now),
            "cached": False,
        }

    def _trend(self, current: float | None, previous: float | None) -> str:
        """improving / stable / worsening against the previous snapshot; unknown without one."""
        if current is None or previous is None:
            return "unknown"
        delta = current - previous
        if delta > self.trend_threshold:
            return "improving"
        if delta < -self.trend_threshold:
            return "worsening"
        return "stable"

    # --- cache -----------------------------------------------------------------------------
    def _read_cache(self, asset: str) -> dict[str, Any] | None:
        try:
            entry = self._cache.get(self._cache_key(asset), max(self.cache_ttl_s, self.failure_ttl_s))
        except database_errors() as e:
            log.warning("sentiment cache read failed for %s: %s", asset, e)
            return None
        if not isinstance(entry, dict) or not {"result", "fetched_epoch", "ttl_s"} <= entry.keys():
            return None  # nothing cached, or a row in an older layout: fetch afresh
        if self.now() - float(entry["fetched_epoch"]) > float(entry["ttl_s"]):
            return None
        result: dict[str, Any] = entry["result"]
        return result

    def _write_cache(self, asset: str, result: dict[str, Any], now: float, ttl_s: float) -> None:
        entry = {"result": result, "fetched_epoch": now, "ttl_s": ttl_s}
        try:
            self._cache.put(self._cache_key(asset), entry)
        except database_errors() as e:
            log.warning("sentiment cache write failed for %s: %s", asset, e)

    def _write_snapshot(self, asset: str, result: dict[str, Any], now: float) -> None:
        """Keep the component figures for later trends, in a ring of ``TREND_SLOTS`` keys.

        The cache table has one row per key and no delete; cycling through a fixed set of
        keys (one per cache window) bounds the rows per asset without one.
        """
        slot = int(now // self.cache_ttl_s) % TREND_SLOTS
        snapshot = {
            "combined": result["combined_sentiment"],
            "news": result["news_component"]["overall_sentiment"]
            if result["news_component"]["news_count"]
            else None,
            "social": result["social_component"]["overall"]
            if result["social_component"]["mention_count"]
            else None,
            "fetched_epoch": now,
        }
        try:
            self._cache.put(f"{self._history_prefix(asset)}{slot}", snapshot)
        except database_errors() as e:
            log.warning("sentiment trend snapshot write failed for %s: %s", asset, e)

    def _previous_snapshot(self, asset: str, now: float) -> dict[str, Any]:
        """The newest earlier snapshot within ``trend_window_s``, or {} when there is none."""
        try:
            rows = self._cache.history(self._history_prefix(asset))
        except database_errors() as e:
            log.warning("sentiment history read failed for %s: %s", asset, e)
            return {}
        earlier = [p for _, p in rows if now - self.trend_window_s <= float(p["fetched_epoch"]) < now]
        return max(earlier, key=lambda p: float(p["fetched_epoch"])) if earlier else {}


# --- helpers ---------------------------------------------------------------------------------
def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _fetch_one(source: Source, asset: str) -> tuple[list[TextItem], str | None]:
    """One source's texts, or its error message; never raises (see the comment below)."""
    try:
        return source.fetch(asset), None
    except SourceError as e:
        log.warning("sentiment source %s failed: %s", source.name, e)
        return [], str(e)
    except Exception as e:
        # Sources can be user-supplied objects; a bug in one must cost its texts, not the
        # trading signal. It is logged with its traceback and reported in failed_sources.
        log.exception("sentiment source %s raised unexpectedly", source.name)
        return [], f"unexpected {type(e).__name__}: {e}"


def _relevant(items: Sequence[TextItem], asset: str) -> list[TextItem]:
    """Items naming the asset in their text or context, each distinct text once."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = " ".join(item.text.lower().split())
        if key in seen or not mentions_asset(f"{item.text} {item.context}", asset):
            continue
        seen.add(key)
        out.append(item)
    return out


def _change(current: float, previous: float | None) -> float | None:
    return None if previous is None else round(current - previous, 4)


def _recommendation(combined: float, classification: str, confidence: float) -> dict[str, Any]:
    strength = round(combined * confidence, 4)
    if confidence < MIN_CONFIDENCE_TO_ACT:
        reason = f"confidence {confidence:.2f} below {MIN_CONFIDENCE_TO_ACT}: too few or disagreeing texts"
        return {"action_bias": "hold", "strength": strength, "reason": reason}
    if classification == "bullish":
        return {"action_bias": "buy", "strength": strength, "reason": f"bullish sentiment {combined:+.2f}"}
    if classification == "bearish":
        return {"action_bias": "sell", "strength": strength, "reason": f"bearish sentiment {combined:+.2f}"}
    return {"action_bias": "hold", "strength": strength, "reason": f"neutral sentiment {combined:+.2f}"}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _no_data(
    symbol: str, asset: str, reason: str, *, now: float, failed: dict[str, str] | None = None
) -> dict[str, Any]:
    """The neutral result: same keys as a scored one, zero confidence, says why."""
    return {
        "symbol": symbol,
        "asset": asset,
        "combined_sentiment": 0.0,
        "sentiment_classification": "neutral",
        "sentiment_label": "neutral",
        "confidence": 0.0,
        "sentiment_trend": "unknown",
        "sentiment_change": None,
        "news_component": {
            "overall_sentiment": 0.0,
            "news_count": 0,
            "key_topics": [],
            "confidence": 0.0,
            "vader": 0.0,
            "textblob": 0.0,
            "sentiment_trend": "unknown",
        },
        "social_component": {
            "twitter": None,
            "reddit": None,
            "overall": 0.0,
            "mention_count": 0,
            "twitter_count": 0,
            "reddit_count": 0,
            "key_topics": [],
            "confidence": 0.0,
            "sentiment_trend": "unknown",
        },
        "recommendation": {"action_bias": "hold", "strength": 0.0, "reason": f"no data: {reason}"},
        "no_data": True,
        "reason": reason,
        "sources": [],
        "failed_sources": dict(failed or {}),
        "fetched_at": _iso(now),
        "cached": False,
    }
