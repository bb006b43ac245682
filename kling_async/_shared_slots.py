"""``SharedSlots``: the :class:`~kling_async._slots.Admission` of a Client with a
:class:`~kling_async.RedisBudget`.

This process keeps what it holds (reservations by idempotency key, tasks by id) and what
it gave back; one background loop brings Redis in line with that in one script call
(``_redis_lua.SYNC``), which also renews the leases, applies the adaptive limit, adopts the
tasks of vanished processes and grants slots to the waiters at the head of the shared
queue. The registry's calls never wait on Redis: only :meth:`SharedSlots.reserve` does.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.abc

from ._config import AdaptiveLimit
from ._errors import ClientClosedError
from ._redis_budget import RedisBudget, RedisLink, SharedPacer
from ._slots import PROBE_PATIENCE

logger = logging.getLogger("kling_async")

MAX_WAITERS_PER_SYNC = 500
_WAIT_POLL = 1.0  # seconds between asks while waiting, should a wake-up be missed


class _Waiter:
    __slots__ = ("event", "front", "granted", "member")

    def __init__(self, member: str, front: bool) -> None:
        self.member = member
        self.front = front
        self.event = anyio.Event()
        self.granted = False


class SharedSlots:
    """Slots counted on Redis for every Client sharing the budget."""

    def __init__(self, link: RedisLink, limit: int | AdaptiveLimit, *, hold: float,
                 rng: random.Random) -> None:
        self._link = link
        self.adaptive = limit if isinstance(limit, AdaptiveLimit) else None
        self._fixed = 0 if self.adaptive is not None else int(limit)  # type: ignore[arg-type]
        self.capacity = self.adaptive.initial if self.adaptive is not None else self._fixed
        self.in_flight = 0  # the account's, as of the last sync
        self.rejections = 0
        self._lease = link.budget.lease
        self._hold_for = hold
        self._rng = rng
        self._waiters: list[_Waiter] = []
        self._held: dict[str, str] = {}  # holder (key or task id) -> member
        self._add: set[str] = set()
        self._gone: set[str] = set()
        self._accepted = self._rejected = 0
        self._pause = 0.0
        self._born = ""
        self._renew_at = 0.0
        self._wake = anyio.Event()
        self._closed = False
        # Set by the Client: follow tasks handed over by vanished processes; apply a
        # pause announced by any process.
        self.on_orphans: Callable[[Iterable[str]], None] = lambda ids: None
        self.on_pause: Callable[[float], None] = lambda seconds: None

    # -- Admission --------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Reservations of this process waiting for a slot."""
        return len(self._waiters)

    async def reserve(self, reservation: str, *, front: bool = False) -> None:
        """Queue for a slot in the shared queue; cancelling the wait takes nothing."""
        if self._closed:
            raise ClientClosedError("the Client closed; no more submissions")
        waiter = _Waiter("r:" + reservation, front)
        self._waiters.append(waiter)
        self._wake.set()
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(reservation)
            elif waiter in self._waiters:  # (close() may have taken it already)
                self._waiters.remove(waiter)
                self._give_back(waiter.member)  # leaves the shared queue
            raise
        if not waiter.granted:
            raise ClientClosedError("the Client closed while this submission waited for a slot")

    def bind(self, reservation: str, task_id: str) -> None:
        """The reservation became task ``task_id``: the task's member replaces it."""
        self._hold(task_id, "t:" + task_id)
        member = self._held.pop(reservation, None)
        if member is not None:
            self._give_back(member)

    def release(self, holder: str) -> None:
        """Give back the slot of a reservation or task (idempotent across processes)."""
        member = self._held.pop(holder, None)
        if member is not None:
            self._give_back(member)

    def adopt(self, task_id: str) -> None:
        """Count (and keep renewing) a task that runs on the server."""
        self._hold(task_id, "t:" + task_id)

    def on_accepted(self) -> None:
        """A submission was accepted (adaptive growth, applied in Redis)."""
        if self.adaptive is not None:
            self._accepted += 1

    def on_rejected(self) -> None:
        """A 429 on a submission: shrink the shared capacity once per congestion event."""
        self.rejections += 1
        if self.adaptive is not None:
            self._rejected += 1
            self._wake.set()

    def share_pause(self, seconds: float) -> None:
        """Announce a ``Retry-After`` pause to every process of the budget."""
        self._pause = max(self._pause, seconds)
        self._wake.set()

    def close(self) -> None:
        """Wake every waiter with ClientClosedError."""
        self._closed = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._give_back(waiter.member)
            waiter.event.set()

    def _hold(self, holder: str, member: str) -> None:
        self._held[holder] = member
        self._gone.discard(member)
        self._add.add(member)
        self._wake.set()

    def _give_back(self, member: str) -> None:
        self._add.discard(member)
        self._gone.add(member)
        self._wake.set()

    # -- the loop that brings Redis in line ---------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Sync with Redis whenever something changed, a slot may be free, or leases
        need renewing; listen for wake-ups and pauses of other processes."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen)
            task_status.started()
            backoff = 0.2
            while True:
                with anyio.move_on_after(self._idle_time(backoff)):
                    await self._wake.wait()
                self._wake = anyio.Event()
                try:
                    await self._sync()
                except self._link.errors as exc:
                    self._link.failed(exc)
                    self._renew_at = 0.0  # put everything back once Redis answers
                    backoff = min(2.0, backoff * 2)
                    continue
                self._link.recovered()
                backoff = 0.2

    def _idle_time(self, backoff: float) -> float:
        if not self._link.healthy:
            return backoff * self._rng.uniform(0.5, 1.0)
        if self._add or self._gone or self._pause or self._accepted or self._rejected:
            return 0.0
        # Even with nothing held, look every lease / 3: tasks of vanished processes are
        # adopted (and a Redis that restarted empty is noticed) without waiting for work.
        renew = max(0.0, self._renew_at - anyio.current_time())
        if self._waiters:
            return min(renew, _WAIT_POLL * self._rng.uniform(0.5, 1.0))
        return renew

    async def _sync(self) -> None:
        now = anyio.current_time()
        renewing = now >= self._renew_at
        add = list(self._held.values()) if renewing else list(self._add)
        gone = list(self._gone)
        waiters = self._waiters[:MAX_WAITERS_PER_SYNC]
        accepted, rejected, pause = self._accepted, self._rejected, self._pause
        self._add, self._gone = set(), set()
        self._accepted = self._rejected = 0
        self._pause = 0.0
        limit = self.adaptive
        args: list[Any] = [
            int(self._lease * 1000), int(self._hold_for * 1000), self._fixed,
            limit.initial if limit else self._fixed, limit.maximum if limit else self._fixed,
            limit.decrease if limit else 1, accepted, rejected, int(pause * 1000), self._born,
            len(add), len(gone), len(waiters), PROBE_PATIENCE, *add, *gone]
        for waiter in waiters:
            args += [waiter.member, "1" if waiter.front else "0"]
        try:
            result = await self._link.sync(keys=self._link.sync_keys, args=args)
        except BaseException:  # not applied (or not known to be): do it all again
            held = set(self._held.values())
            self._add.update(m for m in add if m in held)
            self._gone.update(m for m in gone if m not in held)
            self._accepted += accepted
            self._rejected += rejected
            self._pause = max(self._pause, pause)
            raise
        if renewing:
            self._renew_at = now + self._lease / 3
        self._apply(result)

    def _apply(self, result: list[Any]) -> None:
        granted, orphans, used, capacity, born = result
        self.in_flight, self.capacity = int(used), int(capacity)
        self._born = born.decode() if isinstance(born, bytes) else str(born)
        by_member = {w.member: w for w in self._waiters}
        for raw in granted:
            member = raw.decode()
            waiter = by_member.get(member)
            if waiter is None or self._closed:
                self._give_back(member)  # its caller left meanwhile
                continue
            self._waiters.remove(waiter)
            waiter.granted = True
            self._held[member[2:]] = member
            waiter.event.set()
        if orphans and not self._closed:
            ids = [raw.decode() for raw in orphans]
            logger.info("adopting %d task(s) whose follower stopped renewing them", len(ids))
            self.on_orphans(ids)
            for task_id in ids:  # not taken (finished here already): let them go
                if task_id not in self._held:
                    self._give_back("t:" + task_id)

    async def _listen(self) -> None:
        while True:
            pubsub = self._link.client.pubsub()
            try:
                await pubsub.subscribe(self._link.channel)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=5.0)
                    if message is not None:
                        self._heard(message.get("data"))
            except self._link.errors:
                await anyio.sleep(self._rng.uniform(0.5, 1.5))
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _heard(self, data: object) -> None:
        if data == b"wake":
            if self._waiters:
                self._wake.set()
        elif isinstance(data, bytes) and data.startswith(b"pause:"):
            try:
                seconds = int(data[6:]) / 1000
            except ValueError:
                return
            self.on_pause(min(max(seconds, 0.0), 600.0))

    async def aclose(self) -> None:
        """Give back what was released, and hand the tasks still followed to the other
        processes at once (their leases end now). Shielded, a few seconds at most."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(3):
            try:
                if self._add or self._gone:
                    await self._sync()
                if self._held:
                    await self._link.hand_over(keys=self._link.sync_keys[:1],
                                               args=list(self._held.values()))
            except self._link.errors as exc:
                logger.warning("could not hand %d task(s) over on %s (%s); their leases "
                               "end in %g s", len(self._held), self._link.where,
                               type(exc).__name__, self._lease)
        await self._link.aclose()


def shared_budget(budget: RedisBudget, limit: int | AdaptiveLimit, rate: float | None, *,
                  hold: float, rng: random.Random) -> tuple[SharedSlots, SharedPacer]:
    """The admission and the request pacer of a Client using ``budget``."""
    link = RedisLink(budget)
    slots = SharedSlots(link, limit, hold=hold, rng=rng)
    pacer = SharedPacer(link, rate, slots.share_pause)
    slots.on_pause = pacer.pause_here
    return slots, pacer
