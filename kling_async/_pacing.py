"""A client-wide request budget shared by submissions and reads, with a global pause."""

from __future__ import annotations

from typing import Protocol

import anyio


class Pacer(Protocol):
    """What the transport asks before every request."""

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (a 429's ``Retry-After``)."""

    async def acquire(self) -> None:
        """Wait for pauses and for the request budget."""


class RequestPacer:
    """Token bucket of ``rate`` requests per second (bursts of ``burst``), FIFO-fair.

    :meth:`pause` stops every request of the client until a time, which is how one 429
    with ``Retry-After`` slows the whole client rather than the one request that got it.
    """

    def __init__(self, rate: float | None, burst: int | None = None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"max_requests_per_second must be > 0 or None, got {rate!r}")
        self._rate = rate
        self._burst = float(burst if burst is not None else max(1, int(rate or 1)))
        self._tokens = self._burst
        self._updated: float | None = None
        self._paused_until = 0.0
        self._lock = anyio.Lock()

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` from now (extends, never shortens, a pause)."""
        until = anyio.current_time() + seconds
        self._paused_until = max(self._paused_until, until)

    async def acquire(self) -> None:
        """Wait for the pause to end and for a token; cancellable, spends nothing if so."""
        if self._rate is None and not self._lock.locked() and (
                anyio.current_time() >= self._paused_until):
            return  # nothing to wait for; the request itself is the checkpoint
        async with self._lock:
            while True:
                now = anyio.current_time()
                if now < self._paused_until:
                    await anyio.sleep(self._paused_until - now)
                    continue
                if self._rate is None:
                    return
                if self._updated is not None:
                    self._tokens = min(self._burst,
                                       self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await anyio.sleep((1.0 - self._tokens) / self._rate)
