"""Local fake Binance spot REST server for ccxt tests (being written)."""
