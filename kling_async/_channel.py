"""Handing events to a consumer: ``generate_many``'s bounded stream, and the rule it
shares with ``watch()`` (:class:`Streak`).

An anyio memory object stream checkpoints on every send and every receive: each event
cost about four task steps of the event loop (two checkpoints and the two wake-ups), the
largest share of a batch's client CPU. Here an item is handed over without yielding
while there is room (``send``) or an item to take (``receive``), as ``asyncio.Queue``
does; a side waits only when it must (the buffer is full, or empty), and a consumer
woken once takes what was queued meanwhile, yielding every ``STREAK`` items (the event
loop's other work never waits behind a long run). The buffer stays bounded, so a slow
consumer still holds its producers back.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

T = TypeVar("T")
# Items handed over in a row before a consumer yields to the event loop anyway: 64 made
# the 50,000-task loop lag p99 25-27 ms (longer steps), 16 keeps it under 20.
STREAK = 16


class Streak:
    """The one rule of both hand-offs (this stream and ``watch()``'s): an item taken
    without waiting costs no trip through the event loop, but every ``STREAK``-th does,
    so a long backlog never holds the loop's other work back."""

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count = 0

    async def step(self) -> None:
        """One more item handed over; yield to the event loop if it is the STREAK-th."""
        self._count += 1
        if self._count >= STREAK:
            self._count = 0
            await anyio.lowlevel.checkpoint()

    def waited(self) -> None:
        """The consumer is about to wait (and so yields): the run starts again."""
        self._count = 0


class _Shared(Generic[T]):
    """The buffer and the state both ends see."""

    def __init__(self, size: int) -> None:
        self.items: deque[T] = deque()
        self.size = size
        self.senders_open = True
        self.receiver_open = True
        self.readable: anyio.Event | None = None  # a waiting receiver's wake-up
        self.writable: anyio.Event | None = None  # waiting senders' wake-up

    def wake_receiver(self) -> None:
        if self.readable is not None:
            self.readable.set()
            self.readable = None

    def wake_senders(self) -> None:
        if self.writable is not None:
            self.writable.set()
            self.writable = None


class EventSender(Generic[T]):
    """The producing end (the SDK's side): ``send`` waits only while the buffer is full."""

    def __init__(self, shared: _Shared[T]) -> None:
        self._shared = shared

    async def send(self, item: T) -> None:
        """Queue ``item``; wait for room while the buffer is full.

        Raises ``anyio.BrokenResourceError`` once the receiving end is closed and
        ``anyio.ClosedResourceError`` after :meth:`close`. Cancelled while waiting,
        nothing was queued.
        """
        shared = self._shared
        while True:
            if not shared.senders_open:
                raise anyio.ClosedResourceError
            if not shared.receiver_open:
                raise anyio.BrokenResourceError
            if len(shared.items) < shared.size:
                shared.items.append(item)
                shared.wake_receiver()
                return
            writable = shared.writable = shared.writable or anyio.Event()
            await writable.wait()

    def close(self) -> None:
        """No more items: the receiver ends (``EndOfStream``) once it has taken the rest."""
        self._shared.senders_open = False
        self._shared.wake_receiver()
        self._shared.wake_senders()

    def __enter__(self) -> EventSender[T]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class EventStream(anyio.abc.ObjectReceiveStream[T]):
    """The consuming end: an async iterator of items, in order, each delivered once.

    ``receive`` returns a queued item without yielding to the event loop (but every
    ``STREAK``-th, see :class:`Streak`), and waits only while nothing is queued (iterate
    it with ``async for``).
    """

    def __init__(self, shared: _Shared[T]) -> None:
        self._shared = shared
        self._streak = Streak()

    async def receive(self) -> T:
        """The next item; waits while none is queued.

        Raises ``anyio.EndOfStream`` when the producer closed and everything was taken,
        and ``anyio.ClosedResourceError`` after :meth:`aclose`.
        """
        shared = self._shared
        await self._streak.step()
        while True:
            if not shared.receiver_open:
                raise anyio.ClosedResourceError
            if shared.items:
                item = shared.items.popleft()
                shared.wake_senders()
                return item
            if not shared.senders_open:
                raise anyio.EndOfStream
            readable = shared.readable = shared.readable or anyio.Event()
            self._streak.waited()
            await readable.wait()

    def close(self) -> None:
        """Stop receiving: queued items are dropped and producers get
        ``anyio.BrokenResourceError``."""
        self._shared.receiver_open = False
        self._shared.items.clear()
        self._shared.wake_senders()
        self._shared.wake_receiver()

    async def aclose(self) -> None:
        """As :meth:`close` (the ``AsyncResource`` interface)."""
        self.close()


def event_channel(size: int) -> tuple[EventSender[T], EventStream[T]]:
    """A bounded channel of ``size`` items: its producing and consuming ends."""
    shared: _Shared[T] = _Shared(size)
    return EventSender(shared), EventStream(shared)
