"""News and social sentiment: VADER + TextBlob on RSS headlines, NewsAPI, Reddit and X.

``SentimentAnalysis`` is the entry point; ``keys_from_environ`` maps the ``TVGW_*`` variables
the gateway reads at start-up to ``configure_apis`` arguments.
"""

from ml_integration.sentiment.analysis import SentimentAnalysis, keys_from_environ
from ml_integration.sentiment.sources import (
    DEFAULT_RSS_FEEDS,
    NewsApiSource,
    RedditSource,
    RssSource,
    Source,
    SourceError,
    TextItem,
    XSource,
)

__all__ = [
    "DEFAULT_RSS_FEEDS",
    "NewsApiSource",
    "RedditSource",
    "RssSource",
    "SentimentAnalysis",
    "Source",
    "SourceError",
    "TextItem",
    "XSource",
    "keys_from_environ",
]
