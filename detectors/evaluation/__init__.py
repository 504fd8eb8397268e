"""Offline evaluation: the NAB-compatible scorer and backtest runners."""
