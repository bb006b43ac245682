"""The multiplexer: one loop reads every followed task over the client's one pool.

It asks the task registry what is due, reads it (in chunks of up to 50 through
``POST /v1/tasks/batch`` when the server has it, falling back for good to bounded
concurrent ``GET``s on 404/405) and reports each reading or failure back to the
registry. It owns no task state. Per-id failures are that id's data; only a bug
escapes ``run()``.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
import attrs

from ._config import PollPolicy
from ._convert import batch_items, snapshot_from_wire
from ._entry import Entry
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
from ._tasks import TaskRegistry

logger = logging.getLogger("kling_async")

_PERMANENT = (NotFoundError, PermissionDeniedError, AuthenticationError, InvalidRequestError)


def _unchanged(entry: Entry, data: Any) -> bool:
    """True when a raw reading repeats the status and progress already known: most
    readings do, and they need no snapshot (the hot path of polling)."""
    return (type(data) is dict and entry["status"] != "" and data.get("id") == entry["task_id"]
            and data.get("status") == entry["raw_status"]
            and data.get("progress") == entry["progress"])


class Poller:
    """Reads due tasks and reports the readings to the registry."""

    def __init__(self, transport: Transport, policy: PollPolicy,
                 registry: TaskRegistry) -> None:
        self._transport = transport
        self._policy = policy
        self._registry = registry
        self.batch_supported: bool | None = None
        self._probing = False  # the first batch read is on its way
        self._probed = anyio.Event()  # ...and has been answered
        self.batch_reads = 0
        self.single_reads = 0
        self.statuses_read = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Read due ids until cancelled (by the Client on exit).

        ``max_concurrent_reads`` readers each take their next chunk from the registry
        themselves when they are free (no hand-over between tasks, no task per read).
        """
        async with anyio.create_task_group() as tg:
            for _ in range(self._policy.max_concurrent_reads):
                tg.start_soon(self._reader)
            task_status.started()

    async def _reader(self) -> None:
        registry = self._registry
        while True:
            if self._probing:  # another reader's batch read says whether the server has it
                with anyio.move_on_after(self._policy.min_interval):
                    await self._probed.wait()
            registry.replan_some()
            chunk = self._take()
            if not chunk:
                await registry.wait_due()
                continue
            single = self.batch_supported is False
            gets = [e for e in chunk if single or e["needs_get"]]  # left out of a batch answer
            batched = [e for e in chunk if not (single or e["needs_get"])]
            try:
                for entry in gets:
                    await self._read_one(entry)
                if len(batched) == 1:
                    await self._read_one(batched[0])
                elif batched:
                    await self._read_batch(batched)
            finally:
                registry.read_done(chunk)

    def _take(self) -> list[Entry]:
        """The next chunk to read: up to ``batch_size`` due ids (or one, once the server
        is known to have no batch read). The first batch read is the probe (ids due
        within ``min_interval`` ride along, so it happens even when reads are spread
        out): other readers wait for its answer (at most ``min_interval``) before taking
        more."""
        batching = self.batch_supported is not False
        # Ride-alongs keep min_interval / 2 from their last read in a batch read; in the
        # first one (the probe), the whole min_interval, since a server without batch
        # reads has them read one GET each, and GETs keep the whole floor.
        ride_gap = (None if not batching else self._policy.min_interval
                    / (2 if self.batch_supported else 1))
        chunk = self._registry.pop_due(
            anyio.current_time(), ride_gap=ride_gap,
            limit=self._policy.batch_size if batching else 1)
        if self.batch_supported is None and sum(not e["needs_get"] for e in chunk) > 1:
            self._probing, self._probed = True, anyio.Event()
        return chunk

    async def _read_one(self, entry: Entry) -> None:
        self.single_reads += 1
        entry["needs_get"] = False
        registry, task_id = self._registry, entry["task_id"]
        try:
            data, request_id = await self._transport.get_task(task_id)
            if _unchanged(entry, data):
                self.statuses_read += 1
                registry.report_unchanged([entry])
                return
            snapshot = snapshot_from_wire(data, request_id, estimate=entry["estimate"],
                                          task_id=task_id)
        except _PERMANENT as exc:
            registry.give_up(entry, exc)
            return
        except ResponseDecodeError as exc:
            registry.unreadable(entry, exc)
            return
        except KlingError as exc:
            registry.retry_later(entry, exc)
            return
        if snapshot.id != task_id:
            snapshot = attrs.evolve(snapshot, id=task_id)
        self.statuses_read += 1
        registry.report(entry, snapshot)

    async def _read_batch(self, chunk: list[Entry]) -> None:
        try:
            await self._read_chunk(chunk)
        finally:
            self._probing = False
            self._probed.set()

    async def _read_chunk(self, chunk: list[Entry]) -> None:
        self.batch_reads += 1
        registry = self._registry
        try:
            answer, request_id = await self._transport.read(
                "POST", "/v1/tasks/batch", {"task_ids": [e["task_id"] for e in chunk]})
            items = batch_items(answer)
        except APIError as exc:
            if exc.status in (404, 405) and self.batch_supported is not True:
                logger.debug("no batch read on this server; reading tasks one by one")
                self.batch_supported = False
                for entry in chunk:
                    await self._read_one(entry)
                return
            for entry in chunk:
                if isinstance(exc, AuthenticationError):
                    registry.give_up(entry, exc)
                else:
                    registry.retry_later(entry, exc)
            return
        except KlingError as exc:
            for entry in chunk:
                registry.retry_later(entry, exc)
            return
        self.batch_supported = True
        self._apply_batch(chunk, items, request_id)

    def _apply_batch(self, chunk: list[Entry], items: list[Any],
                     request_id: str | None) -> None:
        registry = self._registry
        by_id = {entry["task_id"]: entry for entry in chunk}
        unchanged: list[Entry] = []  # most readings: only their next read is scheduled
        now = anyio.current_time()  # one answer, one moment (the clock read is not free)
        for item in items:
            if type(item) is not dict:
                continue
            task_id = item.get("id")
            entry = by_id.pop(task_id, None) if type(task_id) is str else None
            if entry is None:
                continue  # not asked for, or a duplicate
            if _unchanged(entry, item):
                unchanged.append(entry)
                continue
            try:
                snapshot = snapshot_from_wire(item, request_id, estimate=entry["estimate"],
                                              task_id=entry["task_id"])
            except ResponseDecodeError as exc:
                registry.unreadable(entry, exc)
                continue
            self.statuses_read += 1
            registry.report(entry, snapshot, now)
        self.statuses_read += len(unchanged)
        registry.report_unchanged(unchanged, now)
        for entry in by_id.values():
            registry.left_out(entry)
