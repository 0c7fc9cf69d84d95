"""Ctrl-C and SIGTERM during training: the first asks for a clean stop, a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from dqn_cli.agent import StopRequest


@contextmanager
def stop_on_signals(stop: StopRequest, on_first: object = None) -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to `stop` for the duration of the block, then restore the previous handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user does not want to wait
        stop.set(signum)
        if callable(on_first):
            on_first(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
