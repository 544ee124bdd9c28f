"""What every layer shares and that imports nothing of ours: the one exception root, the
timeframe vocabulary and the argument checks. ``storage`` stays below it (it imports nothing of
ours either)."""
