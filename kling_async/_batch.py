"""``generate_many``: submit many requests, follow them, one final event per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ._errors import (
    AuthenticationError,
    InsufficientCreditsError,
    KlingError,
    PermissionDeniedError,
    TaskFailedError,
)
from ._models import TaskSnapshot, TaskStatus
from ._request import TextToVideo
from ._watch import TaskUpdates

if TYPE_CHECKING:
    from ._client import Client
    from ._poller import Poller

# Errors that would fail every later submission the same way: stop submitting.
BATCH_FATAL = (AuthenticationError, InsufficientCreditsError, PermissionDeniedError)


@attrs.frozen(kw_only=True)
class Submitted:
    """Request ``index`` was accepted as task ``task_id``."""

    index: int
    task_id: str
    snapshot: TaskSnapshot


@attrs.frozen(kw_only=True)
class Progressed:
    """Task of request ``index`` changed status or progress."""

    index: int
    task_id: str
    status: TaskStatus
    progress: int
    snapshot: TaskSnapshot


@attrs.frozen(kw_only=True)
class Succeeded:
    """Request ``index`` finished; ``snapshot.results`` holds the video URL(s)."""

    index: int
    task_id: str
    snapshot: TaskSnapshot


@attrs.frozen(kw_only=True)
class Failed:
    """Request ``index`` ended without a video.

    ``error`` says why: a :class:`TaskFailedError` for a failed task, the API error for
    a refused submission, or :class:`SubmissionUnknownError` (with its key) when the
    submission's outcome could not be settled. ``task_id`` is None if no task exists.
    """

    index: int
    error: KlingError
    task_id: str | None = None
    snapshot: TaskSnapshot | None = None


BatchEvent = Submitted | Progressed | Succeeded | Failed


class _Run:
    def __init__(self, client: Client, poller: Poller, requests: list[TextToVideo],
                 send: MemoryObjectSendStream[BatchEvent]) -> None:
        self.client = client
        self.poller = poller
        self.send = send
        self.todo: Iterator[tuple[int, TextToVideo]] = iter(enumerate(requests))
        self.updates = TaskUpdates((), open_ended=True)
        self.index_of: dict[str, int] = {}
        self.last: dict[int, tuple[TaskStatus, int]] = {}
        self.stop: KlingError | None = None

    async def submitter(self) -> None:
        for index, request in self.todo:
            if self.stop is not None:
                await self.send.send(Failed(index=index, error=self.stop))
                continue
            try:
                snapshot = await self.client.submit(request)
            except BATCH_FATAL as exc:
                if self.stop is None:
                    self.stop = exc
                await self.send.send(Failed(index=index, error=exc))
                continue
            except KlingError as exc:
                await self.send.send(Failed(index=index, error=exc))
                continue
            self.index_of[snapshot.id] = index
            self.last[index] = (snapshot.status, snapshot.progress)
            self.updates.add(snapshot.id)
            await self.send.send(Submitted(index=index, task_id=snapshot.id, snapshot=snapshot))
            self.poller.subscribe(self.updates, [snapshot.id])

    async def forwarder(self) -> None:
        async for update in self.updates:
            index = self.index_of[update.task_id]
            snapshot = update.snapshot
            if update.error is not None:
                await self.send.send(Failed(index=index, error=update.error,
                                            task_id=update.task_id, snapshot=snapshot))
                continue
            assert snapshot is not None
            if update.status is TaskStatus.COMPLETED:
                await self.send.send(Succeeded(index=index, task_id=update.task_id,
                                               snapshot=snapshot))
            elif update.status is TaskStatus.FAILED:
                await self.send.send(Failed(index=index, error=TaskFailedError(snapshot),
                                            task_id=update.task_id, snapshot=snapshot))
            elif self.last.get(index) != (update.status, update.progress):
                self.last[index] = (update.status, update.progress)
                await self.send.send(Progressed(index=index, task_id=update.task_id,
                                                status=update.status,
                                                progress=update.progress, snapshot=snapshot))


async def run_batch(client: Client, poller: Poller, requests: list[TextToVideo],
                    send: MemoryObjectSendStream[BatchEvent], concurrency: int) -> None:
    """Submit ``requests`` with ``concurrency`` submitters and forward their events."""
    run = _Run(client, poller, requests, send)
    with send:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run.forwarder)
                async with anyio.create_task_group() as submitters:
                    for _ in range(min(concurrency, max(len(requests), 1))):
                        submitters.start_soon(run.submitter)
                run.updates.seal()
        finally:
            poller.unsubscribe(run.updates, list(run.index_of))
