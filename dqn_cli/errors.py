"""Exceptions that carry a message for people, and the exit codes of the CLI (PRODUCT.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Exit codes of every `dqn` command."""

    SUCCESS = 0
    ERROR = 1  # runtime failure
    USAGE = 2  # bad usage, bad config or bad input file
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    TERMINATED = 143  # SIGTERM (128 + SIGTERM)


class DqnError(Exception):
    """A user error: one line that says what was expected, what was found and what to do. Exit code 2."""

    exit_status = ExitStatus.USAGE


class ConfigError(DqnError):
    """A hyperparameters file or override that does not validate."""
