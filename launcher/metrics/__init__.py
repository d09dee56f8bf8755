"""Metric code: each module imports only what it scores with (no torch)."""
