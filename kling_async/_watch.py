"""``TaskUpdate`` and ``TaskUpdates``: the per-watcher, coalescing, bounded event channel."""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import attrs

from ._channel import Streak
from ._entry import Entry, last_reading
from ._errors import ClientClosedError, KlingError
from ._models import TaskSnapshot, TaskStatus


@attrs.frozen(kw_only=True)
class TaskUpdate:
    """A change seen in one task. Built by the SDK; do not construct.

    Attributes:
        task_id: the task.
        status: its status now (the last known one when ``error`` is set).
        progress: percent done.
        snapshot: the reading this update comes from (None if the task was never read).
        error: set when the task can no longer be followed (404, 403, ...); final.
    """

    task_id: str
    status: TaskStatus
    progress: int
    snapshot: TaskSnapshot | None
    error: KlingError | None = None

    @property
    def is_final(self) -> bool:
        """True for the last update of this task: terminal status or an error."""
        return self.error is not None or self.status.is_terminal


def update_of(task_id: str, snapshot: TaskSnapshot | None,
              error: KlingError | None = None) -> TaskUpdate:
    """The update a reading (or, with ``error``, a failure to read) makes."""
    return TaskUpdate(task_id=task_id,
                      status=snapshot.status if snapshot else TaskStatus.UNKNOWN,
                      progress=snapshot.progress if snapshot else 0,
                      snapshot=snapshot, error=error)


EAGER = 64  # waiting updates below which a reading is queued as its update


def entry_update(entry: Entry, error: KlingError | None = None) -> TaskUpdate:
    """The update of ``entry``'s last reading (the registry keeps readings in entries)."""
    return update_of(entry["task_id"], last_reading(entry), error)


class TaskUpdates:
    """An async iterator of :class:`TaskUpdate` for a set of task ids.

    Memory is bounded by the number of ids: each id keeps at most one undelivered
    update (past ``EAGER`` waiting, an unfinished task's is its latest reading, built
    when taken). A slow consumer therefore sees progress coalesced to the latest
    reading, and the final update of every id is always delivered. Final updates waiting
    are delivered before progress waiting (each id's own updates stay in order: its
    final replaces its progress), so a consumer that falls behind learns of finished
    tasks first rather than after every other task's progress. Iteration ends once
    every id has delivered its final update. A queued update is handed over without
    yielding to the event loop (every ``STREAK``-th yields, see ``_channel.Streak``);
    the iterator waits only while none is queued.
    """

    def __init__(self, task_ids: Iterable[str], *, open_ended: bool = False) -> None:
        self._open = set(task_ids)
        self._pending: dict[str, TaskUpdate | Entry] = {}  # progress, oldest first
        self._finals: dict[str, TaskUpdate] = {}  # final updates, delivered first
        self._event = anyio.Event()
        self._open_ended = open_ended
        self._closed: str | None = None
        self._streak = Streak()
        self.coalesced = 0

    def add(self, task_id: str) -> None:
        """Expect updates of one more id (for open-ended channels)."""
        self._open.add(task_id)

    def seal(self) -> None:
        """No more ids will be added: iteration ends when the open ones are final."""
        self._open_ended = False
        self._event.set()

    def close(self, reason: str) -> None:
        """The Client closed: the next read raises :class:`ClientClosedError`."""
        self._closed = reason
        self._event.set()

    def push(self, update: TaskUpdate) -> None:
        """Queue ``update`` (replacing an undelivered one of the same id). Never blocks."""
        task_id = update.task_id
        if not update.is_final:
            self._queue(task_id, update)
        elif task_id in self._open:
            if self._pending.pop(task_id, None) is not None or task_id in self._finals:
                self.coalesced += 1
            self._finals[task_id] = update
            self._event.set()

    def push_reading(self, entry: Entry, snapshot: TaskSnapshot | None = None) -> None:
        """Queue the task's latest unfinished reading (a final one is pushed): while
        fewer than ``EAGER`` updates wait, as its update, built from ``snapshot`` (the
        reading, when at hand); beyond, as ``entry`` itself, whose update is built when
        it is taken, so a backlog holds no update objects for the garbage collector to
        walk (see ``_entry``)."""
        task_id = entry["task_id"]
        if snapshot is not None and len(self._pending) + len(self._finals) < EAGER:
            self._queue(task_id, update_of(task_id, snapshot))
        else:
            self._queue(task_id, entry)

    def _queue(self, task_id: str, pending: TaskUpdate | Entry) -> None:
        if task_id not in self._open or task_id in self._finals:
            return  # (nothing follows a final update)
        if task_id in self._pending:
            self.coalesced += 1
        self._pending[task_id] = pending
        self._event.set()

    def __aiter__(self) -> TaskUpdates:
        return self

    async def __anext__(self) -> TaskUpdate:
        # The readings of one batch answer reach the consumer in a few wake-ups, not
        # one each (see _channel.Streak).
        await self._streak.step()
        while not (self._finals or self._pending):
            if self._closed is not None:
                raise ClientClosedError(self._closed)
            if not self._open and not self._open_ended:
                raise StopAsyncIteration
            self._event = anyio.Event()
            self._streak.waited()
            await self._event.wait()
        if self._finals:
            task_id = next(iter(self._finals))
            self._open.discard(task_id)
            return self._finals.pop(task_id)
        task_id = next(iter(self._pending))
        pending = self._pending.pop(task_id)
        return pending if isinstance(pending, TaskUpdate) else entry_update(pending)
