"""Admission: how many of the account's task slots are taken, and who waits for one.

The task registry decides *which* task holds a slot; an :class:`Admission` only counts
them against a capacity and queues the waiters. :class:`LocalSlots` does it in this
process's memory. The calls are keyed by reservation (the idempotency key) and task id
so that a shared store can implement the same interface for many processes; ``bind``,
``release`` and ``adopt`` must not block (a shared store records them and brings itself
in line in the background, renewing its leases there), only ``reserve`` waits.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import anyio
import anyio.lowlevel

from ._config import AdaptiveLimit
from ._errors import ClientClosedError

# Growth past the in-flight count of the last 429 (where the account's limit was met) is
# this many times slower than below it: the limit is probed, not hammered.
PROBE_PATIENCE = 4


class Admission(Protocol):
    """The slot counter the task registry admits submissions through."""

    @property
    def capacity(self) -> int:
        """Slots allowed now (moves in adaptive mode)."""

    @property
    def in_flight(self) -> int:
        """Slots taken now."""

    @property
    def waiting(self) -> int:
        """Reservations waiting for a slot."""

    @property
    def rejections(self) -> int:
        """429 answers to submissions so far."""

    async def reserve(self, reservation: str, *, front: bool = False) -> None:
        """Wait for a slot, first come first served (``front``: ahead of the others).

        Cancelling the wait takes nothing. Raises ClientClosedError once closed."""

    def bind(self, reservation: str, task_id: str) -> None:
        """The reservation became task ``task_id`` on the server."""

    def release(self, holder: str) -> None:
        """Give back the slot of a reservation or task id."""

    def adopt(self, task_id: str) -> None:
        """Count a task that already runs on the server (may exceed capacity)."""

    def on_accepted(self) -> None:
        """A submission was accepted (adaptive growth)."""

    def on_rejected(self) -> None:
        """The server answered a submission with 429: the account is full."""

    def close(self) -> None:
        """Wake every waiter with ClientClosedError."""


def next_capacity(others: int, ceiling: int, decrease: float) -> int:
    """Capacity after a 429 met with ``others`` tasks in flight. At or above the last
    429's count the account is simply full (a hard limit, not congestion): keep what is
    in flight. Below it the limit shrank (or someone else uses the account): back off by
    ``decrease``."""
    if others >= ceiling:
        return others
    return math.floor(max(others, 1) * decrease)


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class LocalSlots:
    """In-memory admission: FIFO waiters and a fixed or AIMD capacity (AdaptiveLimit)."""

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
        self.in_flight = 0
        self._waiters: deque[_Waiter] = deque()
        self._slow_start = True
        self._credit = 0
        self._ceiling = 0  # in flight (others) at the last 429: the account's limit
        self._closed = False
        self.rejections = 0

    @property
    def waiting(self) -> int:
        """Reservations waiting for a slot."""
        return len(self._waiters)

    async def reserve(self, reservation: str, *, front: bool = False) -> None:
        """Wait for a slot. Cancelling the wait takes nothing."""
        if self._closed:
            raise ClientClosedError("the Client closed; no more submissions")
        if not self._waiters and self.in_flight < self.capacity:
            await anyio.lowlevel.checkpoint_if_cancelled()
            self.in_flight += 1  # nothing can cancel us between here and the return
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter()
        if front:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(reservation)
            elif waiter in self._waiters:  # (close() may have taken it already)
                self._waiters.remove(waiter)
            raise
        if not waiter.granted:
            raise ClientClosedError("the Client closed while this submission waited for a slot")

    def bind(self, reservation: str, task_id: str) -> None:
        """Nothing to do in memory: the count is the same."""

    def release(self, holder: str) -> None:
        """Give a slot back and wake the next waiters."""
        self.in_flight -= 1
        self._wake()

    def adopt(self, task_id: str) -> None:
        """Count a task that already exists on the server."""
        self.in_flight += 1

    def close(self) -> None:
        """Wake every waiter; they raise ClientClosedError."""
        self._closed = True
        while self._waiters:
            self._waiters.popleft().event.set()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.capacity:
            waiter = self._waiters.popleft()
            waiter.granted = True
            self.in_flight += 1
            waiter.event.set()

    # -- adaptive capacity ------------------------------------------------------------------

    def on_accepted(self) -> None:
        """A submission was accepted: grow (adaptive mode, only while slots are used up)."""
        limit = self.adaptive
        if limit is None or self.in_flight < self.capacity:
            return
        if self._slow_start:
            self.capacity = min(limit.maximum, self.capacity + 1)
        else:
            self._credit += 1
            patience = PROBE_PATIENCE if self.capacity >= self._ceiling else 1
            if self._credit >= self.capacity * patience:
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
        others = self.in_flight - 1  # the rejected submission still holds its slot
        if others > self.capacity:
            return  # still draining after the previous decrease
        self.capacity = max(1, next_capacity(others, self._ceiling, limit.decrease))
        self._ceiling = others
