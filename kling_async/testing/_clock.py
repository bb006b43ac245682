"""The Emulator's notion of API time: real time scaled by a factor, plus explicit steps."""

from __future__ import annotations

import time


class EmulatorClock:
    """API seconds elapsed since the Emulator started.

    ``now() = (monotonic - start) * time_scale + stepped``. With ``time_scale=100`` a
    300-second Kling task finishes in 3 real seconds; with ``time_scale=0`` time only
    moves when a test calls :meth:`advance`, so outcomes are exact and instant.
    """

    def __init__(self, time_scale: float) -> None:
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale!r}")
        self.time_scale = time_scale
        self._start = time.monotonic()
        self._stepped = 0.0
        # Unix seconds at start, only for the "created" field and task ids.
        self._unix_start = time.time()  # noqa: TID251 - wire timestamps are wall-clock by definition

    @property
    def monotonic_start(self) -> float:
        """``time.monotonic()`` at which API time was 0 (ignoring :meth:`advance`)."""
        return self._start - self._stepped / self.time_scale if self.time_scale else self._start

    def now(self) -> float:
        """Return API seconds since the Emulator started."""
        return (time.monotonic() - self._start) * self.time_scale + self._stepped

    def unix(self) -> int:
        """Return the Unix timestamp the API reports for 'now'."""
        return int(self._unix_start + self.now())

    def advance(self, seconds: float) -> None:
        """Move API time forward by ``seconds`` at once."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards ({seconds!r} s)")
        self._stepped += seconds

    def to_real(self, api_seconds: float) -> float:
        """Convert an API duration into real seconds (for sleeps and Retry-After)."""
        if self.time_scale == 0:
            return 0.0
        return api_seconds / self.time_scale
