"""In-flight slots: at most N of this client's tasks unfinished on the server at once.

A slot is taken before the POST and held until the poller sees the task terminal, so
our count can only be higher than the server's, never lower. Waiters are served first
come, first served; a submission that must retry after a 429 goes back to the front.
"""

from __future__ import annotations

import math
from collections import deque

import anyio
import anyio.lowlevel

from ._config import AdaptiveLimit


class _Waiter:
    __slots__ = ("event", "granted", "token")

    def __init__(self, token: object) -> None:
        self.token = token
        self.event = anyio.Event()
        self.granted = False


class SlotLimiter:
    """FIFO slots with a capacity that is fixed or found by AIMD (see AdaptiveLimit)."""

    def __init__(self, limit: int | AdaptiveLimit) -> None:
        if isinstance(limit, AdaptiveLimit):
            self.adaptive: AdaptiveLimit | None = limit
            self.capacity = limit.initial
        else:
            if type(limit) is not int or limit < 1:
                raise ValueError(f"max_in_flight must be an int >= 1 or AdaptiveLimit, "
                                 f"got {limit!r}")
            self.adaptive = None
            self.capacity = limit
        self._holders: set[object] = set()
        self._waiters: deque[_Waiter] = deque()
        self._slow_start = True
        self._credit = 0
        self.rejections = 0

    @property
    def in_flight(self) -> int:
        """Slots held now."""
        return len(self._holders)

    @property
    def waiting(self) -> int:
        """Submissions waiting for a slot."""
        return len(self._waiters)

    def holds(self, token: object) -> bool:
        """True while ``token`` holds a slot."""
        return token in self._holders

    async def acquire(self, token: object, *, front: bool = False) -> None:
        """Wait for a slot for ``token``. Cancelling the wait takes nothing."""
        if not self._waiters and len(self._holders) < self.capacity:
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._grant(token)  # nothing can cancel us between here and the return
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(token)
        if front:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(token)
            else:
                self._waiters.remove(waiter)
            raise

    def force(self, token: object) -> None:
        """Hold a slot for a task that already exists on the server (may exceed capacity)."""
        self._grant(token)

    def rename(self, old: object, new: object) -> None:
        """Move a held slot from a placeholder token to the task id."""
        self._holders.discard(old)
        self._holders.add(new)

    def release(self, token: object) -> None:
        """Give ``token``'s slot back (no-op if it holds none) and wake the next waiter."""
        if token in self._holders:
            self._holders.discard(token)
            self._wake()

    def _grant(self, token: object) -> None:
        self._holders.add(token)

    def _wake(self) -> None:
        while self._waiters and len(self._holders) < self.capacity:
            waiter = self._waiters.popleft()
            waiter.granted = True
            self._grant(waiter.token)
            waiter.event.set()

    # -- adaptive capacity ------------------------------------------------------------------

    def on_accepted(self) -> None:
        """A submission was accepted: grow (adaptive mode, only while slots are used up)."""
        limit = self.adaptive
        if limit is None or len(self._holders) < self.capacity:
            return
        if self._slow_start:
            self.capacity = min(limit.maximum, self.capacity + 1)
        else:
            self._credit += 1
            if self._credit >= self.capacity:
                self._credit = 0
                self.capacity = min(limit.maximum, self.capacity + 1)
        self._wake()

    def on_rejected(self) -> None:
        """The server said the account is full (429): shrink once per congestion event."""
        self.rejections += 1
        limit = self.adaptive
        if limit is None:
            return
        self._slow_start = False
        self._credit = 0
        others = len(self._holders) - 1  # the rejected submission still holds its slot
        if others > self.capacity:
            return  # still draining after the previous decrease
        self.capacity = max(1, math.floor(max(others, 1) * limit.decrease))
