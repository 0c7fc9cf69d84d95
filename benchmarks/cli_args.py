"""Argument types the benchmark scripts share."""

from __future__ import annotations


def positive(text: str) -> int:
    """argparse type: a whole number of at least 1 (argparse turns the ValueError into a one-line usage error)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value
