"""Versioned schema. ``MIGRATIONS[i]`` upgrades version i to i + 1; never edit a shipped one,
append a new one. Times are stored as UTC epoch seconds (REAL) unless the column says ``_ms``."""

from __future__ import annotations

__all__ = ["MIGRATIONS", "TABLES"]

_V1 = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    duplicate_of INTEGER REFERENCES alerts(id),
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    source_ip TEXT,
    strategy_id TEXT,
    ticker TEXT,
    symbol TEXT,
    exchange TEXT,
    interval TEXT,
    action TEXT,
    contracts REAL,
    price REAL,
    position_size REAL,
    market_position TEXT,
    order_id TEXT,
    alert_time REAL,
    timenow REAL,
    status TEXT NOT NULL,
    http_status INTEGER,
    error_code TEXT,
    reason TEXT,
    payload TEXT,
    decision TEXT,
    ml_analysis TEXT
);

CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts(id),
    client_order_id TEXT NOT NULL UNIQUE,
    broker TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    order_type TEXT NOT NULL,
    amount REAL NOT NULL,
    price REAL,
    status TEXT NOT NULL,
    exchange_order_id TEXT,
    filled REAL NOT NULL DEFAULT 0,
    average REAL,
    fee REAL NOT NULL DEFAULT 0,
    fee_currency TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX orders_alert ON orders(alert_id);
CREATE INDEX orders_status ON orders(status);

CREATE TABLE positions (
    broker TEXT NOT NULL,
    symbol TEXT NOT NULL,
    amount REAL NOT NULL DEFAULT 0,
    avg_price REAL,
    realized_pnl REAL NOT NULL DEFAULT 0,
    stop_loss REAL,
    opened_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (broker, symbol)
);

CREATE TABLE balances (
    broker TEXT NOT NULL,
    currency TEXT NOT NULL,
    total REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (broker, currency)
);

CREATE TABLE equity_snapshots (
    id INTEGER PRIMARY KEY,
    broker TEXT NOT NULL,
    at REAL NOT NULL,
    equity REAL NOT NULL
);
CREATE INDEX equity_broker_at ON equity_snapshots(broker, at);
CREATE INDEX equity_broker_equity ON equity_snapshots(broker, equity);

CREATE TABLE candles (
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    volume REAL NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (symbol, timeframe, ts_ms)
) WITHOUT ROWID;

CREATE TABLE ml_models (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    version TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    synthetic INTEGER NOT NULL DEFAULT 0,
    metrics TEXT,
    UNIQUE (symbol, timeframe, version)
);

CREATE TABLE ml_training_jobs (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    model_version TEXT,
    error TEXT
);

CREATE TABLE ml_predictions (
    id INTEGER PRIMARY KEY,
    timestamp REAL NOT NULL,
    alert_id INTEGER REFERENCES alerts(id),
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    model_version TEXT,
    direction_prob REAL,
    magnitude_pred REAL,
    confidence REAL,
    horizon INTEGER NOT NULL,
    candle_time REAL,
    target_time REAL NOT NULL,
    price_at_prediction REAL,
    synthetic INTEGER NOT NULL DEFAULT 0,
    actual_direction INTEGER,
    actual_magnitude REAL,
    prediction_accuracy REAL,
    resolved_at REAL
);
CREATE INDEX ml_predictions_unresolved ON ml_predictions(resolved_at, target_time);
CREATE INDEX ml_predictions_symbol_time ON ml_predictions(symbol, timestamp);

CREATE TABLE sentiment_cache (
    key TEXT PRIMARY KEY,
    fetched_at REAL NOT NULL,
    payload TEXT NOT NULL
);

CREATE TABLE strategy_state (
    strategy_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    last_alert_time REAL,
    last_trade_at REAL,
    PRIMARY KEY (strategy_id, symbol)
)
"""

#: Version 2: the last trusted market price per (broker, symbol), shared by every worker, so
#: that equity, ``/api/positions`` and the daily-loss limit are one truth across processes.
_V2 = """
CREATE TABLE marks (
    broker TEXT NOT NULL,
    symbol TEXT NOT NULL,
    price REAL NOT NULL CHECK (price > 0),
    source TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (broker, symbol)
) WITHOUT ROWID
"""

#: The drift report and accuracy read the newest resolved predictions; without this index they
#: scan every resolved row, a cost that grows with the log (the /healthz of day 300).
_V3 = """
CREATE INDEX ml_predictions_resolved_time ON ml_predictions(timestamp) WHERE resolved_at IS NOT NULL
"""


#: The operator surface: a model version can be retired (kept on disk, never served again), and
#: a training job started from the API reports its stage and progress, and can be cancelled;
#: a once-only notification (drift) is claimed by key, so several workers send it once.
_V4 = """
ALTER TABLE ml_models ADD COLUMN retired_at REAL;
ALTER TABLE ml_training_jobs ADD COLUMN stage TEXT;
ALTER TABLE ml_training_jobs ADD COLUMN progress REAL NOT NULL DEFAULT 0;

CREATE TABLE notifications_sent (
    key TEXT PRIMARY KEY,
    sent_at REAL NOT NULL
)
"""

#: Protective exits of the paper book: an entry's stop, take-profit levels and trailing stop,
#: armed with the entry's fill and watched against later bars. ``checked_ms`` is the newest bar
#: checked and ``seen_high``/``seen_low`` the part of its range already judged: a bar that grows
#: is checked again on its new extremes only (a stop moved after its old low must not fire on
#: that low). An exit is claimed (``status`` from ``open`` to ``filled`` in the write
#: transaction) before its order is recorded, and its order's client id is derived from the
#: exit's id (UNIQUE in ``orders``): several workers watching the same bar fill it once.
#: ``orders.reason`` says why an order was placed (``stop``, ``take_profit_1``, ``trailing``;
#: NULL for an alert's own order). ``positions.entries`` counts the fills that opened or added to
#: the position (the strategy's pyramiding limit); a position open before version 5 counts as 1.
_V5 = """
ALTER TABLE orders ADD COLUMN reason TEXT;
ALTER TABLE positions ADD COLUMN entries INTEGER NOT NULL DEFAULT 0;
UPDATE positions SET entries = 1 WHERE amount != 0;

CREATE TABLE exits (
    id INTEGER PRIMARY KEY,
    broker TEXT NOT NULL,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    alert_id INTEGER NOT NULL REFERENCES alerts(id),
    entry_side TEXT NOT NULL CHECK (entry_side IN ('buy', 'sell')),
    entry_price REAL NOT NULL,
    entry_amount REAL NOT NULL CHECK (entry_amount > 0),
    kind TEXT NOT NULL,
    trigger REAL NOT NULL CHECK (trigger > 0),
    share REAL,
    trail REAL,
    break_even INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'filled', 'canceled')),
    armed_ms INTEGER NOT NULL,
    checked_ms INTEGER NOT NULL,
    seen_high REAL,
    seen_low REAL,
    client_order_id TEXT UNIQUE,
    reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX exits_open ON exits(broker, symbol) WHERE status = 'open'
"""

#: Exchange-held exits (issue 13, exchange side; renumber freely when merging). ``held_by`` says
#: who acts on the exit: ``exchange`` (a resting stop or take-profit order there, which holds
#: while the gateway is down) or ``gateway`` (the watcher fills it; the paper book, and markets
#: that cannot hold it). The resting order is ``exchange_cid`` (client id ``tvgw-x<id>-<n>``, n
#: counting placements: a cancel+replace gets a fresh id, a repeat of one placement never does),
#: at ``placed_trigger``/``placed_amount``; ``exchange_status`` is ``placing`` before the request
#: goes out (written first: a lost answer is looked up by that id, never placed twice), then
#: ``open``, ``filled``, ``canceled``, or ``gone`` (the exchange has no such order).
_V6_EXCHANGE_EXITS = """
ALTER TABLE exits ADD COLUMN held_by TEXT NOT NULL DEFAULT 'gateway';
ALTER TABLE exits ADD COLUMN placements INTEGER NOT NULL DEFAULT 0;
ALTER TABLE exits ADD COLUMN exchange_cid TEXT;
ALTER TABLE exits ADD COLUMN exchange_order_id TEXT;
ALTER TABLE exits ADD COLUMN exchange_status TEXT;
ALTER TABLE exits ADD COLUMN placed_trigger REAL;
ALTER TABLE exits ADD COLUMN placed_amount REAL;
CREATE INDEX exits_on_exchange ON exits(broker, symbol) WHERE exchange_status IN ('placing', 'open')
"""

#: Champion and challenger (issue 21; renumber freely when merging). ``ml_champions`` holds, per
#: market, the version whose predictions are acted on (``champion``) and the newer one served in
#: shadow beside it (``challenger``), read by every worker on every alert so all agree; ``revision``
#: counts changes. ``fallback_since``/``fallback_reason`` say when and why ML-driven sizing is off
#: (the champion's rolling log loss no better than the base rate's). ``ml_model_events`` is the
#: record of every change: who (``actor``), why (``reason``) and the test behind it (``evidence``,
#: JSON). A prediction's ``role`` says whether its version was acted on (``champion``) or only
#: logged beside it (``challenger``); rows before this version were all acted on.
_V9_CHAMPION = """
ALTER TABLE ml_predictions ADD COLUMN role TEXT NOT NULL DEFAULT 'champion';
CREATE INDEX ml_predictions_version ON ml_predictions(symbol, timeframe, model_version, timestamp);
CREATE INDEX ml_predictions_alert ON ml_predictions(alert_id);

CREATE TABLE ml_champions (
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    champion TEXT NOT NULL,
    champion_since REAL NOT NULL,
    challenger TEXT,
    challenger_since REAL,
    fallback_since REAL,
    fallback_reason TEXT,
    revision INTEGER NOT NULL DEFAULT 1,
    updated_at REAL NOT NULL,
    PRIMARY KEY (symbol, timeframe)
);

CREATE TABLE ml_model_events (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    version TEXT NOT NULL,
    previous TEXT,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    evidence TEXT
);
CREATE INDEX ml_model_events_version ON ml_model_events(symbol, timeframe, version)
"""

#: Data lifecycle and shared stores (issue 23; renumber freely when merging). ``leases`` holds
#: the single owner of a background job across every worker and host: a row per job name, taken
#: when free or expired (the store's own clock decides), so a SIGKILLed owner's job passes to
#: another after ``expires_at``. The indexes let retention find what it prunes without a scan:
#: alerts that still hold their raw body, by arrival (partial: a pruned body leaves the index),
#: and notifications by when they were sent (resolved predictions have theirs since version 3).
#: ``shared_reports`` holds a computed report every worker and host serves alike (the drift
#: report of /healthz), with the time it was computed, instead of one copy per worker.
_V11_RETENTION = """
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX alerts_with_body ON alerts(received_at) WHERE payload IS NOT NULL;
CREATE INDEX notifications_sent_at ON notifications_sent(sent_at);
CREATE TABLE shared_reports (
    name TEXT PRIMARY KEY,
    computed_at REAL NOT NULL,
    payload TEXT NOT NULL
)
"""

#: First run (issue 19; renumber freely when merging): which markets' candles are synthetic (the
#: offline quickstart's generated history) is asked on every alert, so that no alert's real bar
#: is written into a synthetic market and no synthetic price is shown as a market price; this
#: index answers it in one seek.
_V10_FIRST_RUN = """
CREATE INDEX candles_symbol_source ON candles(symbol, source)
"""

#: The order lifecycle and the reconciler (issue 18; renumber freely when merging).
#:
#: ``orders``: every order is followed until the exchange says it is done. ``booked`` is the
#: part of ``filled`` (the exchange's gross amount) already in the ledger, ``booked_cost`` its
#: quote value, ``booked_net`` how far it moved the position (net of a fee taken in the base
#: coin, rounded down to the market's step), ``booked_fees`` the fees booked so far per currency
#: (JSON ``{currency: cost}``): a poll that finds more filled books the increment once. ``fees``
#: is what the exchange reports per currency (never added across currencies); ``fee_value`` the
#: booked fees valued in the account's quote currency, ``fee_note`` what could not be valued.
#: ``exits`` is the entry's exit plan (JSON), so whoever books a late fill arms its exits.
#: ``next_poll_at`` is when the lifecycle asks the exchange again (NULL: terminal); ``polls``
#: counts the asks (the back-off). Rows filled before this version were booked whole.
#:
#: ``exits.firing_cid``: an exit the gateway fires itself is in flight under that client id and
#: spent only when its order is confirmed (``firings`` counts the attempts).
#: The lifecycle and the reconciler each run under a lease (``leases``, version 11's).
#: ``installation``: this database's id, part of every client
#: order id, so a fresh database on the same exchange account never reuses an earlier id.
#: ``holdings``: per account and coin, what the exchange holds that is not the gateway's
#: position (coins held before, dust left by fee rounding). ``book_checks``: the reconciler's
#: last comparison per account and market, and since when they disagree.
_V7_ORDER_LIFECYCLE = """
ALTER TABLE orders ADD COLUMN booked REAL NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN booked_cost REAL NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN booked_net REAL NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN booked_fees TEXT;
ALTER TABLE orders ADD COLUMN fees TEXT;
ALTER TABLE orders ADD COLUMN fee_value REAL;
ALTER TABLE orders ADD COLUMN fee_note TEXT;
ALTER TABLE orders ADD COLUMN exits TEXT;
ALTER TABLE orders ADD COLUMN polls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN next_poll_at REAL;
UPDATE orders SET booked = filled, booked_net = filled, booked_cost = filled * average
    WHERE filled > 0 AND average IS NOT NULL;
UPDATE orders SET next_poll_at = 0 WHERE status IN ('pending', 'open', 'partially_filled', 'unknown');
CREATE INDEX orders_following ON orders(next_poll_at) WHERE next_poll_at IS NOT NULL;

ALTER TABLE exits ADD COLUMN firing_cid TEXT;
ALTER TABLE exits ADD COLUMN firings INTEGER NOT NULL DEFAULT 0;

CREATE TABLE installation (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);

CREATE TABLE holdings (
    broker TEXT NOT NULL,
    currency TEXT NOT NULL,
    outside REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (broker, currency)
);

CREATE TABLE book_checks (
    broker TEXT NOT NULL,
    symbol TEXT NOT NULL,
    kind TEXT NOT NULL,
    booked REAL NOT NULL,
    exchange REAL NOT NULL,
    outside REAL NOT NULL,
    difference REAL NOT NULL,
    step REAL NOT NULL,
    stray_orders INTEGER NOT NULL,
    status TEXT NOT NULL,
    misses INTEGER NOT NULL,
    detail TEXT,
    checked_at REAL NOT NULL,
    off_since REAL,
    PRIMARY KEY (broker, symbol)
)
"""

#: Alert continuity (issue 20; renumber freely when merging). A *feed* is what one chart sends
#: for one (strategy, market, timeframe); ``feed_marks`` holds every heartbeat and every order
#: alert seen on it (its sequence number, bar time, when it fired and arrived, and the strategy's
#: intended position after and before it); ``feed_gaps`` every message found missing, once per
#: first missing number (a UNIQUE key, whichever worker sees it first): a heartbeat overdue
#: (``heartbeat_missed``, found by the clock), a jump in heartbeat numbers (``sequence_gap``, found
#: when the next arrives), or an order alert whose position before is not the one the feed last
#: said (``position_gap``: an order alert was lost between them), or a heartbeat's position that
#: is not the booked one (``position_mismatch``, told, never acted on). ``alert_steps`` are the moments
#: of an alert's life that no other row keeps (``decided``; later ``repaired``, ``superseded``
#: ...), for its timeline. The overdue-heartbeat check's single owner is a ``leases`` row
#: (:data:`_V11_RETENTION`). ``feed_marks_received`` and ``feed_gaps_mark`` let retention find
#: old marks, and the marks a gap names, without a scan. Later phases add rows (a repair is an
#: ``alert_steps`` row naming its gap), not columns.
_V12_ALERT_CONTINUITY = """
CREATE TABLE feeds (
    id INTEGER PRIMARY KEY,
    strategy_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    bar_seconds INTEGER NOT NULL CHECK (bar_seconds > 0),
    created_at REAL NOT NULL,
    UNIQUE (strategy_id, symbol, timeframe)
);

CREATE TABLE feed_marks (
    id INTEGER PRIMARY KEY,
    feed_id INTEGER NOT NULL REFERENCES feeds(id),
    kind TEXT NOT NULL CHECK (kind IN ('heartbeat', 'order')),
    alert_id INTEGER REFERENCES alerts(id),
    sequence BIGINT,
    bar_time REAL,
    fired_at REAL,
    received_at REAL NOT NULL,
    heartbeat_bars INTEGER,
    position REAL,
    prev_position REAL
);
CREATE INDEX feed_marks_feed ON feed_marks(feed_id, kind, id);
CREATE INDEX feed_marks_received ON feed_marks(received_at);
CREATE UNIQUE INDEX feed_marks_once ON feed_marks(feed_id, sequence) WHERE kind = 'heartbeat';
CREATE INDEX feed_marks_alert ON feed_marks(alert_id);

CREATE TABLE feed_gaps (
    id INTEGER PRIMARY KEY,
    feed_id INTEGER NOT NULL REFERENCES feeds(id),
    kind TEXT NOT NULL
        CHECK (kind IN ('heartbeat_missed', 'sequence_gap', 'position_gap', 'position_mismatch')),
    sequence_from BIGINT,
    sequence_to BIGINT,
    bar_time REAL,
    missed INTEGER NOT NULL DEFAULT 1 CHECK (missed >= 1),
    expected_by REAL,
    detected_at REAL NOT NULL,
    alert_id INTEGER REFERENCES alerts(id),
    mark_id INTEGER REFERENCES feed_marks(id),
    detail TEXT,
    UNIQUE (feed_id, sequence_from)
);
CREATE INDEX feed_gaps_detected ON feed_gaps(detected_at);
CREATE INDEX feed_gaps_mark ON feed_gaps(mark_id) WHERE mark_id IS NOT NULL;

CREATE TABLE alert_steps (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts(id),
    step TEXT NOT NULL,
    at REAL NOT NULL,
    gap_id INTEGER REFERENCES feed_gaps(id),
    detail TEXT
);
CREATE INDEX alert_steps_alert ON alert_steps(alert_id, at);
CREATE INDEX alert_steps_gap ON alert_steps(gap_id) WHERE gap_id IS NOT NULL
"""

MIGRATIONS: list[str] = [
    _V1, _V2, _V3, _V4, _V5, _V6_EXCHANGE_EXITS, _V11_RETENTION, _V7_ORDER_LIFECYCLE, _V9_CHAMPION,
    _V10_FIRST_RUN, _V12_ALERT_CONTINUITY,
]  # fmt: skip

#: Every table the current schema has (``/healthz`` checks the file against it).
TABLES = (
    "alerts", "orders", "positions", "balances", "equity_snapshots", "candles", "ml_models",
    "ml_training_jobs", "ml_predictions", "sentiment_cache", "strategy_state", "notifications_sent",
    "marks", "exits", "leases", "shared_reports", "installation", "holdings", "book_checks",
    "ml_champions", "ml_model_events", "feeds", "feed_marks", "feed_gaps", "alert_steps",
)  # fmt: skip
