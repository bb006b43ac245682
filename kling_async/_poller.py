"""The multiplexer: one loop reads every tracked task over the client's one pool.

Each id has a next-due time (see _schedule). Due ids are read together: in chunks of up
to 50 through ``POST /v1/tasks/batch`` when the server has it (falling back for good to
bounded concurrent ``GET``s on 404/405), and the changes fan out to watchers. Per-id
failures become that id's data; only a bug escapes ``run()``.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import OrderedDict
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from ._config import PollPolicy
from ._convert import batch_items, snapshot_from_wire
from ._errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    KlingError,
    NotFoundError,
    PermissionDeniedError,
    ResponseDecodeError,
)
from ._http import Transport
from ._models import TaskSnapshot, TaskStatus
from ._schedule import error_delay, next_delay, predicted_remaining
from ._slots import SlotLimiter
from ._watch import TaskUpdate, TaskUpdates

logger = logging.getLogger("kling_async")

_PERMANENT = (NotFoundError, PermissionDeniedError, AuthenticationError, InvalidRequestError)
MAX_DECODE_ERRORS = 5   # unreadable answers in a row before an id is given up
FINISHED_CACHE = 10_000  # final readings kept for late watchers and wait_finished()
_RANK = {TaskStatus.PENDING: 0, TaskStatus.UNKNOWN: 0, TaskStatus.PROCESSING: 1,
         TaskStatus.COMPLETED: 2, TaskStatus.FAILED: 2}


@attrs.define(eq=False)
class _Tracked:
    task_id: str
    first_seen: float
    snapshot: TaskSnapshot | None = None
    estimate: float | None = None
    watchers: set[TaskUpdates] = attrs.Factory(set)
    holds_slot: bool = False
    seq: int = 0
    reading: bool = False
    urgent: bool = False
    needs_get: bool = False
    errors: int = 0
    decode_errors: int = 0


def _update(task_id: str, snapshot: TaskSnapshot | None,
            error: KlingError | None = None) -> TaskUpdate:
    return TaskUpdate(task_id=task_id,
                      status=snapshot.status if snapshot else TaskStatus.UNKNOWN,
                      progress=snapshot.progress if snapshot else 0,
                      snapshot=snapshot, error=error)


class Poller:
    """Tracks task ids, reads them when due, and publishes :class:`TaskUpdate` values."""

    def __init__(self, transport: Transport, policy: PollPolicy, slots: SlotLimiter,
                 rng: random.Random) -> None:
        self._transport = transport
        self._policy = policy
        self._slots = slots
        self._rng = rng
        self._tracked: dict[str, _Tracked] = {}
        self._finished: OrderedDict[str, TaskUpdate] = OrderedDict()
        self._heap: list[tuple[float, int, str]] = []
        self._wake = anyio.Event()
        self.batch_supported: bool | None = None
        self.batch_reads = 0
        self.single_reads = 0
        self.statuses_read = 0

    # -- registry -------------------------------------------------------------------------

    @property
    def tracked(self) -> int:
        """Ids being polled now."""
        return len(self._tracked)

    def track(self, task_id: str, snapshot: TaskSnapshot | None = None, *,
              holds_slot: bool = False) -> None:
        """Start following ``task_id`` (read at once when no snapshot is known)."""
        now = anyio.current_time()
        entry = self._tracked.get(task_id)
        if entry is None:
            if task_id in self._finished and snapshot is None:
                return
            entry = self._tracked[task_id] = _Tracked(task_id=task_id, first_seen=now)
        entry.holds_slot = entry.holds_slot or holds_slot
        if snapshot is not None:
            self._absorb(entry, snapshot, now)
            if task_id not in self._tracked:
                return
        else:
            self._schedule_at(entry, now)

    def subscribe(self, channel: TaskUpdates, task_ids: list[str]) -> None:
        """Deliver updates of ``task_ids`` to ``channel``, starting with what is known."""
        for task_id in task_ids:
            final = self._finished.get(task_id)
            if final is not None:
                channel.push(final)
                continue
            if task_id not in self._tracked:
                self.track(task_id)
            entry = self._tracked[task_id]
            entry.watchers.add(channel)
            if entry.snapshot is not None:
                channel.push(_update(task_id, entry.snapshot))

    def unsubscribe(self, channel: TaskUpdates, task_ids: list[str]) -> None:
        """Stop delivering to ``channel``; ids nobody needs any more stop being read."""
        for task_id in task_ids:
            entry = self._tracked.get(task_id)
            if entry is None:
                continue
            entry.watchers.discard(channel)
            if not entry.watchers and not entry.holds_slot:
                del self._tracked[task_id]

    def final(self, task_id: str) -> TaskUpdate | None:
        """The final update of a recently finished id, if remembered."""
        return self._finished.get(task_id)

    # -- what others tell us --------------------------------------------------------------

    def observe(self, snapshot: TaskSnapshot) -> None:
        """Take a reading made elsewhere (``client.get()``) if the id is tracked."""
        entry = self._tracked.get(snapshot.id)
        if entry is not None:
            self._absorb(entry, snapshot, anyio.current_time())

    def hint(self, snapshot: TaskSnapshot) -> bool:
        """Take an unverified claim (a callback). Terminal claims are confirmed by a read
        first; stale or out-of-order claims are ignored. Returns True if it was used."""
        entry = self._tracked.get(snapshot.id)
        if entry is None:
            return False
        if snapshot.is_terminal:
            entry.urgent = True
            if not entry.reading:
                self._schedule_at(entry, anyio.current_time())
            return True
        current = entry.snapshot
        if current is not None and (_RANK[snapshot.status], snapshot.progress) <= (
                _RANK[current.status], current.progress):
            return False
        self._absorb(entry, snapshot, anyio.current_time())
        return True

    # -- the loop -------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Read due ids until cancelled (by the Client on exit).

        A fixed set of ``max_concurrent_reads`` readers takes chunks from an unbuffered
        stream, so handing over a chunk waits for a free reader (no task per read).
        """
        send, receive = anyio.create_memory_object_stream[list[_Tracked]](0)
        async with anyio.create_task_group() as tg:
            for _ in range(self._policy.max_concurrent_reads):
                tg.start_soon(self._reader, receive.clone())
            receive.close()
            task_status.started()
            with send:
                while True:
                    due = self._pop_due(anyio.current_time())
                    if not due:
                        await self._sleep_until_due()
                        continue
                    for chunk in self._chunks(due):
                        await send.send(chunk)

    async def _reader(self, chunks: MemoryObjectReceiveStream[list[_Tracked]]) -> None:
        with chunks:
            async for chunk in chunks:
                await self._read_chunk(chunk)

    async def _sleep_until_due(self) -> None:
        wait = self._heap[0][0] - anyio.current_time() if self._heap else 3600.0
        self._wake = anyio.Event()
        with anyio.move_on_after(max(wait, 0.0)):
            await self._wake.wait()

    def _pop_due(self, now: float) -> list[_Tracked]:
        # Ids due a little later ride along when reads are batched: one request either way.
        horizon = now + (self._policy.min_interval / 2 if self.batch_supported else 0.0)
        due: list[_Tracked] = []
        while self._heap and self._heap[0][0] <= horizon:
            when, seq, task_id = heapq.heappop(self._heap)
            entry = self._tracked.get(task_id)
            if entry is None or entry.seq != seq:
                continue  # a stale schedule
            if entry.reading:
                # Rescheduled by a read still in progress (a chunk read one by one):
                # read it again as soon as that read ends, never lose it.
                entry.urgent = True
                continue
            if when > now and len(due) % self._policy.batch_size == 0:
                heapq.heappush(self._heap, (when, seq, task_id))
                break
            entry.reading = True
            due.append(entry)
        return due

    def _chunks(self, due: list[_Tracked]) -> list[list[_Tracked]]:
        singles = [[e] for e in due if e.needs_get or self.batch_supported is False]
        batched = [e for e in due if not e.needs_get and self.batch_supported is not False]
        if len(batched) == 1:
            return [*singles, batched]
        size = self._policy.batch_size
        return singles + [batched[i:i + size] for i in range(0, len(batched), size)]

    async def _read_chunk(self, chunk: list[_Tracked]) -> None:
        try:
            if len(chunk) == 1:
                await self._read_one(chunk[0])
            else:
                await self._read_batch(chunk)
        finally:
            for entry in chunk:
                entry.reading = False
                if entry.urgent and entry.task_id in self._tracked:
                    self._schedule_at(entry, anyio.current_time())

    async def _read_one(self, entry: _Tracked) -> None:
        self.single_reads += 1
        entry.needs_get = False
        try:
            data = await self._transport.get_task(entry.task_id)
            snapshot = snapshot_from_wire(data)
        except _PERMANENT as exc:
            self._give_up(entry, exc)
            return
        except ResponseDecodeError as exc:
            entry.decode_errors += 1
            if entry.decode_errors >= MAX_DECODE_ERRORS:
                self._give_up(entry, exc)
            else:
                self._retry_later(entry, exc)
            return
        except KlingError as exc:
            self._retry_later(entry, exc)
            return
        if snapshot.id != entry.task_id:
            snapshot = attrs.evolve(snapshot, id=entry.task_id)
        self.statuses_read += 1
        entry.urgent = False
        self._absorb(entry, snapshot, anyio.current_time())

    async def _read_batch(self, chunk: list[_Tracked]) -> None:
        self.batch_reads += 1
        ids = [entry.task_id for entry in chunk]
        try:
            items = batch_items(await self._transport.read(
                "POST", "/v1/tasks/batch", {"task_ids": ids}))
        except APIError as exc:
            if exc.status in (404, 405) and self.batch_supported is not True:
                logger.debug("no batch read on this server; reading tasks one by one")
                self.batch_supported = False
                for entry in chunk:
                    await self._read_one(entry)
                return
            if isinstance(exc, AuthenticationError):
                for entry in chunk:
                    self._give_up(entry, exc)
                return
            for entry in chunk:
                self._retry_later(entry, exc)
            return
        except KlingError as exc:
            for entry in chunk:
                self._retry_later(entry, exc)
            return
        self.batch_supported = True
        self._apply_batch(chunk, items)

    def _apply_batch(self, chunk: list[_Tracked], items: list[Any]) -> None:
        by_id = {entry.task_id: entry for entry in chunk}
        seen: set[str] = set()
        now = anyio.current_time()
        for item in items:
            task_id = item.get("id") if isinstance(item, dict) else None
            entry = by_id.get(task_id) if isinstance(task_id, str) else None
            if entry is None:
                continue
            seen.add(entry.task_id)
            try:
                snapshot = snapshot_from_wire(item)
            except ResponseDecodeError as exc:
                entry.decode_errors += 1
                if entry.decode_errors >= MAX_DECODE_ERRORS:
                    self._give_up(entry, exc)
                else:
                    self._retry_later(entry, exc)
                continue
            self.statuses_read += 1
            entry.urgent = False
            self._absorb(entry, snapshot, now)
        for entry in chunk:
            if entry.task_id not in seen and entry.task_id in self._tracked:
                # Left out of a batch answer: unknown or foreign. A GET says which, next.
                entry.urgent = entry.needs_get = True

    # -- state changes --------------------------------------------------------------------

    def _absorb(self, entry: _Tracked, snapshot: TaskSnapshot, now: float) -> None:
        previous = entry.snapshot
        if snapshot.estimated_time is not None:
            entry.estimate = snapshot.estimated_time
        elif previous is not None and previous.estimated_time is not None:
            snapshot = attrs.evolve(snapshot, estimated_time=previous.estimated_time)
        entry.snapshot = snapshot
        entry.errors = entry.decode_errors = 0
        if previous is None or (previous.status, previous.progress) != (
                snapshot.status, snapshot.progress):
            self._publish(entry, _update(entry.task_id, snapshot))
        if snapshot.is_terminal:
            self._finish(entry, _update(entry.task_id, snapshot))
        else:
            remaining = predicted_remaining(
                self._policy, elapsed=now - entry.first_seen, estimate=entry.estimate,
                progress=snapshot.progress)
            self._schedule_at(entry, now + next_delay(self._policy, remaining, self._rng))

    def _retry_later(self, entry: _Tracked, exc: KlingError) -> None:
        entry.errors += 1
        entry.urgent = False
        logger.debug("reading %s failed (%s); retrying later", entry.task_id,
                     type(exc).__name__)
        now = anyio.current_time()
        self._schedule_at(entry, now + error_delay(self._policy, entry.errors, self._rng))

    def _give_up(self, entry: _Tracked, exc: KlingError) -> None:
        self._finish(entry, _update(entry.task_id, entry.snapshot, exc))

    def _finish(self, entry: _Tracked, final: TaskUpdate) -> None:
        if final.error is not None:
            self._publish(entry, final)
        self._tracked.pop(entry.task_id, None)
        self._finished[entry.task_id] = final
        if len(self._finished) > FINISHED_CACHE:
            self._finished.popitem(last=False)
        if entry.holds_slot:
            self._slots.release(entry.task_id)

    def _publish(self, entry: _Tracked, update: TaskUpdate) -> None:
        for channel in entry.watchers:
            channel.push(update)

    def _schedule_at(self, entry: _Tracked, when: float) -> None:
        entry.seq += 1
        heapq.heappush(self._heap, (when, entry.seq, entry.task_id))
        if self._heap[0][2] == entry.task_id:
            self._wake.set()
