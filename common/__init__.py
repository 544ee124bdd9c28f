"""What every layer shares and that imports nothing of ours: the one exception root, the
timeframe vocabulary, the one implementation of each indicator (the ML features, the hybrid
technical score, the exits' ATR and the backtest's Pine replay all use it) and the argument
checks. ``storage`` stays below it (it imports nothing of ours either)."""
