"""Figures behind the sentiment module: scorer agreement with human labels, speed, hot-path latency.

Prints:

* classification accuracy of VADER alone, TextBlob alone and their mean (what the module uses)
  on the hand-labelled headline set in ``tests/ml_integration/data/sentiment_headlines.json``,
  next to the majority-class baseline, with Wilson 95% intervals. The set is small and written
  in the style of crypto headlines (no live feed was recorded) by the engineer who wrote the
  scorer, so the figures are optimistic: they check that the scorers read headlines the way a
  person does, and say nothing about whether sentiment predicts prices;
* scoring throughput (texts per second, one core);
* latency of ``get_combined_sentiment(symbol, allow_fetch=False)`` from a warm SQLite cache,
  which is what the webhook path pays.

Run: ``.venv/bin/python -m bench.bench_sentiment``
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ml_integration.evaluation import wilson_interval
from ml_integration.sentiment import SentimentAnalysis, TextItem
from ml_integration.sentiment.scoring import classify, score_text
from ml_integration.sentiment.sources import Kind
from storage.database import Storage

DATA = Path(__file__).resolve().parents[1] / "tests" / "ml_integration" / "data" / "sentiment_headlines.json"
BAND = 0.05


def labelled() -> list[tuple[str, str]]:
    sets = json.loads(DATA.read_text())
    return [(text, label) for label in ("bullish", "bearish", "neutral") for text in sets[label]]


def accuracy_table() -> None:
    rows = labelled()
    scores = [score_text(text) for text, _ in rows]
    truth = [label for _, label in rows]
    majority = max(sorted(set(truth)), key=truth.count)
    scorers = {
        "vader": [s.vader for s in scores],
        "textblob": [s.textblob for s in scores],
        "mean (used)": [s.score for s in scores],
    }
    n = len(rows)
    print(f"labelled headlines: {n} ({', '.join(f'{k}={truth.count(k)}' for k in sorted(set(truth)))})")
    print(f"{'scorer':<16}{'accuracy':>9}  95% interval")
    hits = truth.count(majority)
    lo, hi = wilson_interval(hits, n)
    print(f"{'majority ' + majority:<16}{hits / n:>9.3f}  [{lo:.3f}, {hi:.3f}]")
    for name, values in scorers.items():
        hits = sum(classify(v, BAND) == t for v, t in zip(values, truth, strict=True))
        lo, hi = wilson_interval(hits, n)
        print(f"{name:<16}{hits / n:>9.3f}  [{lo:.3f}, {hi:.3f}]")


def throughput() -> None:
    texts = [text for text, _ in labelled()]
    score_text(texts[0])  # load lexicons
    rounds = 20
    start = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            score_text(text)
    elapsed = time.perf_counter() - start
    print(f"scoring: {rounds * len(texts) / elapsed:,.0f} texts/s")


class _Fixed:
    name = "fixed"
    kind: Kind = "news"

    def fetch(self, asset: str) -> list[TextItem]:
        return [TextItem(text=t, source=self.name, kind="news") for t, _ in labelled()]

    def describe(self) -> str:
        return "fixed"


def hot_path_latency() -> None:
    with tempfile.TemporaryDirectory() as folder:
        storage = Storage(Path(folder) / "bench.sqlite")
        storage.migrate()
        analysis = SentimentAnalysis(storage, sources=[_Fixed()])
        analysis.refresh("BTC/USDT")
        timings = []
        for _ in range(2000):
            start = time.perf_counter()
            result = analysis.get_combined_sentiment("BTC/USDT", allow_fetch=False)
            timings.append(time.perf_counter() - start)
        assert result["cached"] is True
        storage.close()
    timings.sort()
    p50, p99 = timings[len(timings) // 2], timings[int(len(timings) * 0.99)]
    print(f"hot path (cached, allow_fetch=False): p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms")


if __name__ == "__main__":
    accuracy_table()
    throughput()
    hot_path_latency()
