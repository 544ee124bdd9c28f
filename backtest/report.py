"""The report: one self-contained HTML file (Plotly, its JavaScript inlined: it opens with no
network) and the JSON summary beside it (``out.html`` → ``out.json``).

Sections: the verdict in words, trading metrics per arm, equity and drawdown of every arm,
prediction metrics with their intervals, the calibration curve, feature importance, the
per-window table, Monte Carlo over the trades, and the run's settings and limitations.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from backtest.run import BacktestResult

__all__ = ["NOT_APPLICABLE", "clean_json", "json_path", "page_header", "write_report"]

#: A figure that does not apply (a win rate without a closed trade): a dash, never a 0.
NOT_APPLICABLE = "—"

_COLOURS = {"buy_and_hold": "#7f7f7f", "pine": "#1f77b4", "baseline": "#ff7f0e", "ml": "#2ca02c"}

_TRADING_ROWS = (
    ("total_return", "Total return", "pct"), ("annualised_return", "Annualised return", "pct"),
    ("sharpe", "Sharpe (annualised)", "num"), ("sortino", "Sortino (annualised)", "num"),
    ("max_drawdown", "Maximum drawdown", "pct"), ("calmar", "Calmar", "num"),
    ("win_rate", "Win rate", "pct"), ("profit_factor", "Profit factor", "num"),
    ("average_win", "Average win", "money"), ("average_loss", "Average loss", "money"),
    ("trades", "Trades", "int"), ("exposure", "Exposure (share of bars in a position)", "pct"),
    ("fees", "Fees paid", "money"), ("final_equity", "Final equity", "money"),
)  # fmt: skip


def json_path(report: Path) -> Path:
    """Where the JSON summary of ``report`` goes: beside it, same name, ``.json``."""
    return report.with_suffix(".json")


def write_report(result: BacktestResult, path: Path) -> tuple[Path, Path]:
    """Write the HTML report to ``path`` and the JSON summary beside it; return both paths.

    Each file appears whole (written aside, then renamed), the summary last: whoever sees the
    summary (the operator API's list of backtests) finds the report complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    summary_path = json_path(path)
    _write_whole(path, _html(result))
    _write_whole(summary_path, json.dumps(clean_json(result.summary), indent=2, allow_nan=False))
    return path, summary_path


def _write_whole(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


def clean_json(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (a profit factor with no loss, say)."""
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _html(result: BacktestResult) -> str:
    import plotly.offline

    s = result.summary
    sections = [
        _section("Verdict", _verdict(s)),
        _section("Trading metrics", _trading_table(s)),
        _section("Equity and drawdown", _figure(_equity_figure(result))),
        _section("Prediction, out of sample (pooled over windows)", _prediction_table(s)),
        _section("Calibration", _figure(_calibration_figure(s))),
        _section("Feature importance", _figure(_importance_figure(s))),
        _section("Per window", _window_table(s)),
        _section("Monte Carlo over the trades", _figure(_monte_carlo_figure(s)) + _monte_carlo_table(s)),
        _section("Run", _run_table(s)),
    ]
    title, banner = page_header(s)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(title)}</h1>{banner}{''.join(sections)}</body></html>"
    )


def page_header(s: dict[str, Any]) -> tuple[str, str]:
    """The report's title, and the banner that opens it when its candles are synthetic."""
    title = f"tvgw backtest: {s['symbol']} {s['timeframe']}, {s['period'][0][:10]} .. {s['period'][1][:10]}"
    if not s.get("candles", {}).get("synthetic"):
        return title, ""
    return f"{title} (SYNTHETIC candles)", f"<p class='synthetic' id='synthetic'>{SYNTHETIC_BANNER}</p>"


#: The report's first words when its candles are generated.
SYNTHETIC_BANNER = (
    "These candles are SYNTHETIC: the candle store holds the offline quickstart's generated history "
    "(or <code>tvgw train --synthetic</code>'s), not a market's. Every figure below measures the "
    "generator, not a strategy: fetch real candles (<code>tvgw data fetch</code>) before reading them."
)


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:right}th:first-child,td:first-child{text-align:left}h2{margin-top:1.6em}"
    ".note{color:#555;font-size:.92em}"
    ".synthetic{border:2px solid #d29922;background:#fff8e5;padding:.6em .9em;font-weight:600}"
)


def _section(title: str, body: str) -> str:
    anchor = title.lower().split()[0]
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{body}</section>"


def _figure(fig: Any) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NOT_APPLICABLE if value is None else ("∞" if value > 0 else "−∞")
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "int":
        return f"{int(value)}"
    return f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(s: dict[str, Any]) -> str:
    trading = s["trading"]
    best = max(trading, key=lambda name: trading[name]["total_return"])
    best_return = _fmt(trading[best]["total_return"], "pct")
    lines = [f"Best total return: <b>{html.escape(s['arms'][best])}</b> ({best_return})."]
    for name in ("baseline", "ml"):
        report = s["prediction"].get(name)
        if report is not None:
            lines.append(f"{html.escape(s['arms'][name])}: {html.escape(report['verdict']['text'])}.")
    for name, counts in s["decisions"].items():
        risk = {k.removeprefix("risk:"): v for k, v in counts.items() if k.startswith("risk:")}
        if risk:
            rules = ", ".join(f"{code} ×{n}" for code, n in sorted(risk.items(), key=lambda t: -t[1]))
            lines.append(
                f"{html.escape(s['arms'][name])}: the risk manager refused alerts ({html.escape(rules)})."
            )
    if "ml" in trading:
        diff = trading["ml"]["total_return"] - trading["baseline"]["total_return"]
        lines.append(f"The full ML strategy's total return differs from the plain baseline's by "
                     f"{100 * diff:+.2f} percentage points (same alerts, windows and costs).")  # fmt: skip
    return "".join(f"<p>{line}</p>" for line in lines)


def _trading_table(s: dict[str, Any]) -> str:
    names = list(s["trading"])
    rows = [
        [label, *(_fmt(s["trading"][n].get(key), kind) for n in names)] for key, label, kind in _TRADING_ROWS
    ]
    return _table(["metric", *(s["arms"][n] for n in names)], rows)


def _equity_figure(result: BacktestResult) -> Any:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    times = list(result.times.to_pydatetime())
    for name, curve in result.curves.items():
        label = result.summary["arms"][name]
        colour = _COLOURS.get(name)
        fig.add_scatter(x=times, y=curve, name=label, line={"color": colour}, row=1, col=1)
        drawdown = curve / np.maximum.accumulate(curve) - 1.0
        fig.add_scatter(x=times, y=drawdown, name=f"{label} drawdown", line={"color": colour, "width": 1},
                        showlegend=False, row=2, col=1)  # fmt: skip
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    fig.update_layout(height=620, margin={"t": 30})
    return fig


def _prediction_table(s: dict[str, Any]) -> str:
    reports = {name: r for name, r in s["prediction"].items() if r is not None}
    if not reports:
        return "<p>Too few scored rows for prediction metrics.</p>"

    def ci(pair: list[float] | tuple[float, float]) -> str:
        return f"[{pair[0]:.3f}, {pair[1]:.3f}]"

    rows = []
    for name, r in reports.items():
        rows.append([
            html.escape(s["arms"][name]), str(r["n"]),
            f"{r['accuracy']:.3f} {ci(r['accuracy_block_ci'])}", f"{r['majority_accuracy']:.3f}",
            f"{r['auc']:.3f} {ci(r['auc_ci'])}", f"{r['brier']:.4f} {ci(r['brier_ci'])}",
            f"{r['base_rate_brier']:.4f}", f"{r['log_loss']:.4f} {ci(r['log_loss_ci'])}",
            "yes" if r["verdict"]["cannot_tell_from_coin"] else "no",
        ])  # fmt: skip
    header = ["model", "rows", "accuracy [95%]", "majority class", "AUC [95%]", "Brier [95%]",
              "base-rate Brier", "log loss [95%]", "cannot tell from a coin"]  # fmt: skip
    notes = "".join(f"<p class='note'>{html.escape(s['arms'][n])}: {html.escape(r['verdict']['text'])}</p>"
                    for n, r in reports.items())  # fmt: skip
    return _table(header, rows) + notes


def _calibration_figure(s: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], name="perfect calibration", line={"dash": "dot", "color": "#999"})
    for name, report in s["prediction"].items():
        if report is None:
            continue
        bins = report["calibration"]
        fig.add_scatter(
            x=[b["mean_predicted"] for b in bins], y=[b["observed"] for b in bins], mode="lines+markers",
            name=s["arms"][name], line={"color": _COLOURS.get(name)},
            error_y={"type": "data", "symmetric": False,
                     "array": [b["observed_ci"][1] - b["observed"] for b in bins],
                     "arrayminus": [b["observed"] - b["observed_ci"][0] for b in bins]},
        )  # fmt: skip
    fig.update_layout(
        xaxis_title="mean predicted P(up), by decile", yaxis_title="observed up-rate", height=450
    )
    return fig


def _importance_figure(s: dict[str, Any]) -> Any:
    from plotly.subplots import make_subplots

    parts = {k: v for k, v in s["feature_importance"].items() if v}
    fig = make_subplots(rows=1, cols=max(1, len(parts)), subplot_titles=[s["arms"].get(k, k) for k in parts])
    for col, (name, weights) in enumerate(parts.items(), start=1):
        ordered = sorted(weights.items(), key=lambda t: t[1])
        fig.add_bar(x=[w for _, w in ordered], y=[n for n, _ in ordered], orientation="h", name=name,
                    marker={"color": _COLOURS.get(name)}, showlegend=False, row=1, col=col)  # fmt: skip
    fig.update_layout(height=500, margin={"l": 160})
    return fig


def _window_table(s: dict[str, Any]) -> str:
    names = list(s["trading"])
    header = ["#", "train", "test", "train rows", "train s", "alerts",
              *(f"return: {s['arms'][n]}" for n in names), "AUC baseline",
              *(["AUC ML"] if "ml" in s["prediction"] else [])]  # fmt: skip
    rows = []
    for w in s["windows"]:
        row = [str(w["number"]), f"{w['train_start'][:10]} .. {w['train_end'][:10]}",
               f"{w['test_start'][:10]} .. {w['test_end'][:10]}", str(w["train_rows"]),
               f"{w['train_seconds']:.1f}", str(w["alerts"]),
               *(_fmt(w[f"return_{n}"], "pct") for n in names), _fmt(w["auc_baseline"], "num")]  # fmt: skip
        if "ml" in s["prediction"]:
            row.append(_fmt(w.get("auc_ml"), "num"))
        rows.append(row)
    return _table(header, rows)


def _monte_carlo_figure(s: dict[str, Any]) -> Any:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["final equity", "maximum drawdown"])
    for name, mc in s["monte_carlo"].items():
        if mc is None:
            continue
        colour = _COLOURS.get(name)
        fig.add_histogram(x=mc["final_equity"], name=s["arms"][name], marker={"color": colour}, opacity=0.6,
                          row=1, col=1)  # fmt: skip
        fig.add_histogram(x=mc["max_drawdown"], name=s["arms"][name], marker={"color": colour}, opacity=0.6,
                          showlegend=False, row=1, col=2)  # fmt: skip
    fig.update_layout(barmode="overlay", height=380)
    return fig


def _monte_carlo_table(s: dict[str, Any]) -> str:
    rows = []
    for name, mc in s["monte_carlo"].items():
        if mc is None:
            rows.append([html.escape(s["arms"][name]), "fewer than two trades", "", ""])
            continue
        fe, dd = mc["final_equity_percentiles"], mc["max_drawdown_percentiles"]
        rows.append([html.escape(s["arms"][name]), f"{fe['p5']:,.0f} / {fe['p50']:,.0f} / {fe['p95']:,.0f}",
                     f"{_fmt(dd['p5'], 'pct')} / {_fmt(dd['p50'], 'pct')} / {_fmt(dd['p95'], 'pct')}",
                     _fmt(mc["probability_of_loss"], "pct")])  # fmt: skip
    return _table(
        ["arm", "final equity p5 / p50 / p95", "max drawdown p5 / p50 / p95", "chance of a loss"], rows
    )


def _run_table(s: dict[str, Any]) -> str:
    keys = ("symbol", "timeframe", "mode", "period", "bars", "horizon", "embargo_bars",
            "train_window_days", "test_window_days", "fees", "slippage_bps", "starting_equity", "lstm",
            "alerts", "decisions")  # fmt: skip
    rows = [[k, html.escape(str(s[k]))] for k in keys]
    limits = "".join(f"<li>{html.escape(x)}</li>" for x in s["limitations"])
    return _table(["setting", "value"], rows) + f"<ul class='note'>{limits}</ul>"
