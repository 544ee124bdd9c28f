"""The report: a walk-forward writes the HTML and the JSON with every arm, and the HTML opens in
a headless browser, offline, with every plot drawn and no console error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from backtest.report import write_report
from backtest.run import BacktestResult, run_backtest
from tests.backtest.browser import find_chromium, render
from tests.backtest.conftest import small_config
from tests.conftest import make_settings

ARMS = {"buy_and_hold", "pine", "baseline", "ml"}
FIGURES = 4  # equity and drawdown, calibration, feature importance, Monte Carlo


@pytest.fixture(scope="module")
def result(walk_candles, tmp_path_factory) -> BacktestResult:
    return run_backtest(small_config(), make_settings(tmp_path_factory.mktemp("bt")), candles=walk_candles)


@pytest.fixture(scope="module")
def report(result, tmp_path_factory) -> Path:
    html, _ = write_report(result, tmp_path_factory.mktemp("report") / "out.html")
    return html


@pytest.mark.slow
def test_the_json_summary_holds_every_arm_and_metric(report):
    summary = json.loads(report.with_suffix(".json").read_text())
    assert set(summary["trading"]) == ARMS and set(summary["arms"]) == ARMS
    for metrics in summary["trading"].values():
        assert {
            "total_return",
            "annualised_return",
            "sharpe",
            "sortino",
            "max_drawdown",
            "calmar",
            "win_rate",
            "profit_factor",
            "average_win",
            "average_loss",
            "trades",
            "exposure",
            "fees",
        } <= set(metrics)
    assert summary["trading"]["pine"]["fees"] > 0  # costs on every fill
    for name in ("baseline", "ml"):
        prediction = summary["prediction"][name]
        for key in ("accuracy_block_ci", "auc_ci", "brier_ci", "log_loss_ci"):
            low, high = prediction[key]
            assert low <= high
        assert prediction["majority_accuracy"] is not None and prediction["base_rate_brier"] > 0
        assert len(prediction["calibration"]) == 10
        assert isinstance(prediction["verdict"]["cannot_tell_from_coin"], bool)
    assert {"pine", "baseline", "ml"} <= set(summary["monte_carlo"])
    assert len(summary["windows"]) >= 2 and all("auc_ml" in w for w in summary["windows"])


@pytest.mark.slow
def test_every_arm_trades_the_same_alerts(result):
    counts = {name: len(arm.decisions) for name, arm in result.arms.items()}
    assert len(set(counts.values())) == 1 and result.summary["alerts"] == counts["pine"]
    # the models change what happens to them (their mode gates entries)
    assert result.summary["decisions"]["pine"] != result.summary["decisions"]["ml"]


@pytest.mark.slow
def test_the_report_opens_offline_with_every_plot_drawn(report):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no headless browser: install Debian's chromium package (.ci/run does)")
    import plotly.offline

    ours = report.read_text().replace(plotly.offline.get_plotlyjs(), "")  # the inlined library aside
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", ours)  # nothing to fetch
    page = render(chromium, report)
    assert page.console == [], page.console
    plots = re.split(r'class="[^"]*js-plotly-plot[^"]*"', page.dom)[1:]
    assert len(plots) == FIGURES
    for plot in plots:
        assert '<svg class="main-svg"' in plot.split("js-plotly-plot")[0]
    for section in ("Trading metrics", "Per window", "Calibration", "Feature importance", "Monte Carlo"):
        assert section in page.dom


def test_the_browser_check_sees_console_errors(tmp_path):
    """The check above can fail: a page that logs an error or throws is caught."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no headless browser: install Debian's chromium package (.ci/run does)")
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('boom'); missing();</script></body></html>")
    console = render(chromium, page, budget_ms=2000).console
    assert any("boom" in line for line in console) and any("missing" in line for line in console)
