"""SIGINT/SIGTERM as a request to stop, for the long-running commands."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator

__all__ = ["STOP_SIGNALS", "on_stop_signals", "run_until_stopped"]

#: Ctrl-C, and what ``docker stop``, systemd and ``crampwatch demo`` send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_stop_signals(request_stop: Callable[[], object]) -> Iterator[None]:
    """Call ``request_stop`` on SIGINT or SIGTERM while the block runs.

    The handlers belong to the running asyncio loop (so the callback runs on it,
    never inside a signal frame) and are removed on leaving, which gives a second
    Ctrl-C after shutdown its default meaning again.
    """
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, request_stop)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def run_until_stopped(
    run: Callable[[asyncio.Event], Awaitable[None]], duration_s: float | None = None
) -> None:
    """Await ``run(stop)``; ``stop`` is set by SIGINT/SIGTERM or after ``duration_s``."""
    stop = asyncio.Event()
    if duration_s is not None:
        asyncio.get_running_loop().call_later(duration_s, stop.set)
    with on_stop_signals(stop.set):
        await run(stop)
