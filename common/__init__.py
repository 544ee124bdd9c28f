"""What every layer shares and that imports nothing of ours: the one exception root and the
timeframe vocabulary. ``storage`` stays below it (it imports nothing of ours either)."""
