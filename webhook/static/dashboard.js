// tvgw dashboard: reads /dashboard/data (every 10 s) and the live prediction feed (every 3 s).
// Every value from the record is written with textContent, never as HTML: alert fields come
// from whoever posted to the webhook.
"use strict";

const DATA_EVERY_MS = 10000;
const FEED_EVERY_MS = 3000;
const LAYOUT = {
  margin: { l: 48, r: 12, t: 8, b: 36 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
  font: { color: "#e6e6e6", size: 11 }, xaxis: { gridcolor: "#263140" }, yaxis: { gridcolor: "#263140" },
  showlegend: false,
};
const CONFIG = { displayModeBar: false, responsive: true };
let lastPrediction = 0;

async function getJson(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) { window.location.assign("/"); return null; }
  if (!response.ok) throw new Error(url + " answered " + response.status);
  return response.json();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tableId, items, render) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...items.map((item) => { const tr = document.createElement("tr"); render(tr, item); return tr; }));
}

function time(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : ""; }
// "—": a figure that does not apply (no resolved predictions, no hold-out), never a blank or a 0.
const NA = "—";
function pct(x) { return x === null || x === undefined ? NA : (100 * x).toFixed(1) + "%"; }
function num(x) { return x === null || x === undefined ? NA : String(x); }
const SYNTHETIC = "SYNTHETIC";

// A table with no rows says what will fill it, in one cell across the table.
function emptyRow(tableId, text) {
  const body = document.querySelector("#" + tableId + " tbody");
  const tr = document.createElement("tr");
  const td = cell(tr, text, "empty");
  td.colSpan = document.querySelectorAll("#" + tableId + " thead th").length;
  body.replaceChildren(tr);
}

// A chart with nothing to draw says so instead of drawing empty axes (Plotly's default range is
// the year 2000, or 1970 for an empty time axis).
function chartOrMessage(id, hasData, text, draw) {
  const el = document.getElementById(id);
  const note = document.getElementById(id + "-empty");
  if (hasData) {
    note.hidden = true; el.hidden = false; draw();
  } else {
    Plotly.purge(el); el.hidden = true; note.hidden = false; note.textContent = text;
  }
}

function renderFeeds(feeds, daily) {
  const flagged = feeds.filter((f) => f.status === "gap" || f.status === "overdue");
  const flag = document.getElementById("feed-flag");
  flag.textContent = flagged.length
    ? "MISSING ALERTS: " + flagged.map((f) => (f.gaps.length ? f.gaps[0].text : f.strategy_id + " " + f.symbol + " overdue")).join(" | ")
    : feeds.length ? "Every chart feed is on time." : "No chart has sent a heartbeat or an order alert yet.";
  flag.className = flagged.length ? "warn flag" : "";
  fill("feeds", feeds, (tr, f) => {
    tr.dataset.feed = f.strategy_id + " " + f.symbol + " " + f.timeframe;
    const last = f.last_heartbeat;
    cell(tr, f.strategy_id); cell(tr, f.symbol); cell(tr, f.timeframe); cell(tr, f.status, "status-" + f.status);
    cell(tr, last ? "#" + last.sequence + " " + time(last.bar_time) : "");
    cell(tr, f.next ? time(f.next.overdue_after) : "");
    cell(tr, f.gaps.map((g) => g.kind + " bar " + time(g.bar_time)).join("; "), "reason");
  });
  fill("daily", daily, (tr, d) => {
    cell(tr, d.day); cell(tr, d.strategy_id); cell(tr, d.expected); cell(tr, d.received); cell(tr, d.missed);
    cell(tr, d.repaired); cell(tr, d.fired_to_received_ms); cell(tr, d.received_to_filled_ms);
  });
}

function detailText(detail) {
  return Object.entries(detail || {}).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => k + "=" + v).join(" ");
}

async function showTimeline(alertId) {
  const data = await getJson("/dashboard/alerts/" + encodeURIComponent(alertId) + "/timeline");
  if (!data) return;
  document.getElementById("timeline-view").hidden = false;
  document.getElementById("timeline-alert").textContent = String(data.alert_id);
  document.getElementById("timeline-summary").textContent = [data.strategy_id, data.symbol, data.action, data.status,
    data.alert_price === null ? "" : "alert price " + data.alert_price].join("  ");
  fill("timeline", data.steps, (tr, s) => {
    tr.dataset.step = s.step;
    cell(tr, s.step); cell(tr, time(s.at)); cell(tr, s.step_ms); cell(tr, s.since_received_ms); cell(tr, detailText(s.detail), "reason");
  });
}

function renderAlerts(alerts) {
  if (!alerts.length) { emptyRow("alerts", "No alerts yet: send the curl that tvgw quickstart printed, or a TradingView alert."); return; }
  fill("alerts", alerts, (tr, a) => {
    tr.dataset.alertId = a.id;
    tr.className = "clickable";
    tr.addEventListener("click", () => showTimeline(a.id).catch((err) => {
      document.getElementById("updated").textContent = "timeline failed: " + err.message;
    }));
    cell(tr, a.id); cell(tr, time(a.received_at)); cell(tr, a.strategy_id); cell(tr, a.symbol);
    cell(tr, a.action); cell(tr, a.status, "status-" + a.status); cell(tr, a.decision);
    cell(tr, a.grade || (a.ml_error ? "n/a" : "")); cell(tr, a.reason || a.ml_error, "reason");
  });
}

function renderPositions(positions) {
  if (!positions.length) { emptyRow("positions", "No open positions: an executed buy or sell opens one."); return; }
  fill("positions", positions, (tr, p) => {
    cell(tr, p.account); cell(tr, p.symbol + (p.synthetic ? " (" + SYNTHETIC + ")" : ""), p.synthetic ? "warn" : "");
    cell(tr, p.amount); cell(tr, p.avg_price); cell(tr, num(p.stop_loss)); cell(tr, p.realized_pnl);
  });
}

function renderSynthetic(markets) {
  const line = document.getElementById("synthetic");
  line.hidden = !markets.length;
  line.textContent = markets.length
    ? "SYNTHETIC prices for " + markets.join(", ") + ": the offline quickstart's generated candles, not a market. " +
      "Figures drawn from them (marks, equity, model accuracy) are not a market's."
    : "";
}

function renderBooks(books) {
  const line = document.getElementById("books");
  const off = books.off || [];
  line.textContent = off.length
    ? "Books disagree with the exchange: " + off.map((c) => c.account + " " + c.detail).join("; ") +
      " (tvgw reconcile shows it; --adopt takes the exchange's view)"
    : books.checked ? "Books agree with the exchange (" + books.checked + " market(s) checked)" : "";
  line.className = off.length ? "warn" : "";
}

function renderModels(models, health, drift) {
  const loaded = (health && health.worker && health.worker.models) || {};
  if (!models.length) emptyRow("models", "No registered models: tvgw train, or POST /api/ml/models.");
  else fill("models", models, (tr, m) => {
    const state = m.role === "champion" ? (loaded[m.symbol + " " + m.timeframe] === m.version ? "champion, serving" : "champion") : m.role;
    const mark = m.synthetic ? " (" + SYNTHETIC + ")" : "";
    cell(tr, m.symbol + " " + m.timeframe + mark, m.synthetic ? "warn" : ""); cell(tr, m.version); cell(tr, m.type); cell(tr, state);
    const holdout = m.holdout && m.holdout.direction ? m.holdout.direction.accuracy : null;
    // A hold-out score on generated candles measures the generator, not a market: it says so.
    cell(tr, holdout === null ? NA : pct(holdout) + (m.synthetic ? " on synthetic candles" : ""), m.synthetic ? "warn" : "");
    cell(tr, pct(m.live.accuracy)); cell(tr, num(m.live.brier));
  });
  const driftLine = document.getElementById("drift");
  driftLine.textContent = drift.needs_retraining
    ? "Drift: retraining advised (" + drift.reasons.join("; ") + ")"
    : "Drift: none flagged (" + drift.samples + " resolved predictions in " + drift.days + " days)";
  driftLine.className = drift.needs_retraining ? "warn" : "";
}

function signed(x) { return (x >= 0 ? "+" : "") + x.toFixed(4); }

function pairedTest(test) {
  if (!test || !test.n) return "no resolved alerts both predicted yet";
  return "log loss " + test.candidate_log_loss.toFixed(4) + " vs " + test.reference_log_loss.toFixed(4) +
    ", difference " + signed(test.difference) + " [" + signed(test.ci95[0]) + ", " + signed(test.ci95[1]) +
    "], n=" + test.n;
}

function renderChampions(markets) {
  if (!markets.length) {
    emptyRow("champions", "No champion yet: the first model trained for a market (tvgw train, tvgw quickstart) becomes its champion.");
    return;
  }
  fill("champions", markets, (tr, m) => {
    const why = m.champion.why;
    const challenger = m.challenger;
    tr.dataset.market = m.symbol + " " + m.timeframe;
    cell(tr, m.symbol + " " + m.timeframe); cell(tr, m.champion.version);
    cell(tr, why ? why.kind + " by " + why.actor + ": " + why.reason : "", "reason");
    cell(tr, challenger ? challenger.version : "none");
    cell(tr, challenger ? pairedTest(challenger.test) : "", "reason");
    cell(tr, challenger ? challenger.verdict : "", "reason");
    cell(tr, m.ml_sizing.on ? "on" : "OFF: " + m.ml_sizing.reason, m.ml_sizing.on ? "reason" : "reason warn");
  });
}

function renderCharts(data) {
  const equityText = data.equity_error
    ? "Equity unavailable: " + data.equity_error
    : "No equity yet.";
  chartOrMessage("equity-chart", data.equity.length > 0, equityText, () => Plotly.react("equity-chart", [{
    x: data.equity.map((p) => p.at), y: data.equity.map((p) => p.equity), type: "scatter", mode: "lines+markers",
    line: { color: "#3fb950" },
  }], { ...LAYOUT, yaxis: { ...LAYOUT.yaxis, title: "equity" } }, CONFIG));
  chartOrMessage("accuracy-chart", data.accuracy.length > 0,
    "No resolved predictions yet: a prediction is scored once its horizon has passed (tvgw resolve, or every minute in the gateway).",
    () => Plotly.react("accuracy-chart", [{
      x: data.accuracy.map((d) => d.day), y: data.accuracy.map((d) => d.accuracy), type: "bar",
      text: data.accuracy.map((d) => "n=" + d.n), marker: { color: "#1f6feb" },
    }], { ...LAYOUT, yaxis: { ...LAYOUT.yaxis, range: [0, 1], title: "hit rate" } }, CONFIG));
  chartOrMessage("calibration-chart", data.calibration.length > 0,
    "No resolved predictions yet: calibration needs predictions whose outcome is known.",
    () => Plotly.react("calibration-chart", [
      { x: [0, 1], y: [0, 1], type: "scatter", mode: "lines", line: { dash: "dot", color: "#8a949e" } },
      { x: data.calibration.map((b) => b.predicted), y: data.calibration.map((b) => b.observed),
        text: data.calibration.map((b) => "n=" + b.n), type: "scatter", mode: "lines+markers",
        marker: { color: "#d29922" } },
    ], { ...LAYOUT, xaxis: { ...LAYOUT.xaxis, range: [0, 1], title: "predicted P(up)" },
         yaxis: { ...LAYOUT.yaxis, range: [0, 1], title: "observed" } }, CONFIG));
}

async function refresh() {
  try {
    const data = await getJson("/dashboard/data");
    if (!data) return;
    renderFeeds(data.feeds, data.daily); renderAlerts(data.alerts); renderPositions(data.positions);
    renderSynthetic(data.synthetic_markets);
    renderBooks(data.books); renderModels(data.models, data.model_health, data.drift);
    renderChampions(data.champions); renderCharts(data);
    document.getElementById("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  } catch (err) {
    document.getElementById("updated").textContent = "update failed: " + err.message;
  }
}

async function pollPredictions() {
  try {
    const rows = await getJson("/dashboard/predictions?after_id=" + lastPrediction);
    if (!rows) return;
    const feed = document.getElementById("predictions");
    for (const p of rows.slice().reverse()) {
      lastPrediction = Math.max(lastPrediction, p.id);
      const li = document.createElement("li");
      li.dataset.predictionId = p.id;
      li.textContent = time(p.timestamp) + "  " + p.symbol + " " + p.timeframe + "  P(up) " +
        pct(p.direction_prob) + "  model " + (p.model_version || "?");
      feed.prepend(li);
    }
    while (feed.children.length > 100) feed.lastChild.remove();
  } catch (err) {
    document.getElementById("updated").textContent = "feed failed: " + err.message;
  }
}

refresh();
pollPredictions();
setInterval(refresh, DATA_EVERY_MS);
setInterval(pollPredictions, FEED_EVERY_MS);
