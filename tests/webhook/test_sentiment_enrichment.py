"""A model that uses sentiment gets it from a background refresh, never on the webhook path."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ml_integration import load_latest_strategy, save_version, synthetic_candles
from storage import Storage
from storage.candles import upsert_candles
from tests.conftest import make_settings, sample_alert
from tests.ml_integration.sentiment_fakes import rss_document, running_server
from webhook import create_app, get_gateway

BULLISH = [
    "Bitcoin soars to record high as investors cheer strong ETF inflows",
    "Bitcoin rally gains strength, analysts upbeat on breakout",
    "BTC surges as confidence grows and buyers return",
]


def test_sentiment_reaches_ml_analysis_from_the_background(tmp_path: Path, model_store: Path) -> None:
    # The suite's one tiny model, saved again as a version that blends in sentiment.
    strategy = load_latest_strategy(model_store, "BTC/USDT", "1h")
    strategy.config = replace(strategy.config, use_sentiment=True)
    save_version(strategy, tmp_path / "models", "BTC/USDT", "1h")
    now_hour = int(time.time() // 3600 * 3600)
    start = pd.Timestamp(now_hour - 1499 * 3600, unit="s", tz="UTC").isoformat()
    candles = synthetic_candles(1500, seed=3, n_gaps=0, start=start)
    with running_server() as feed:
        feed.serve("GET", "/feed", rss_document(BULLISH), content_type="application/rss+xml")
        settings = make_settings(
            tmp_path, TVGW_ML_ENABLED="true", TVGW_MODEL_DIR=str(tmp_path / "models"),
            TVGW_STRATEGY_MODE="annotate", TVGW_RSS_FEEDS=f"{feed.url}/feed", TVGW_SENTIMENT_REFRESH_S="0.2",
        )  # fmt: skip
        storage = Storage(settings.database)
        storage.migrate()
        upsert_candles(
            storage,
            "BTC/USDT",
            "1h",
            [
                [int(t.timestamp() * 1000), *v]
                for t, v in zip(candles.index, candles.itertuples(index=False), strict=True)
            ],
            "synthetic",
        )
        app = create_app(settings)
        client = app.test_client()
        # The first alert for the market starts its background refresh; the webhook path itself
        # only ever reads the cache, so this alert may see no sentiment yet.
        client.post("/webhook", data=json.dumps(sample_alert(order_id="first")))
        assert get_gateway(app).signals.wait_for_sentiment("BTC/USDT", timeout=60), "no refresh in 60 s"
        assert feed.hits("/feed"), "the background refresh never fetched the feed"
        body = client.post("/webhook", data=json.dumps(sample_alert(order_id="after"))).json
        assert body["ml_analysis"]["sentiment_score"] > 0, body["ml_analysis"]
