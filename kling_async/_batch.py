"""``generate_many``: submit many requests, follow them, one final event per request."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ._channel import EventSender, EventStream, event_channel
from ._convert import request_to_wire
from ._download import DownloadError, inside, safe_name
from ._errors import (
    AuthenticationError,
    ClientClosedError,
    CreditLimitError,
    InsufficientCreditsError,
    KlingError,
    PermissionDeniedError,
    SubmissionUnknownError,
    TaskFailedError,
)
from ._events import BatchEvent, Failed, Item, Progressed, Submitted, Succeeded
from ._groups import single_exceptions
from ._ids import new_idempotency_key
from ._journal import Journal, JournalEntry, JournalMismatchError, digest_of
from ._models import TaskSnapshot, TaskStatus
from ._requests import REQUEST_TYPES, VideoRequest
from ._watch import TaskUpdate, TaskUpdates, update_of


class BatchHost(Protocol):
    """What a batch needs from the Client that runs it (no import of the Client)."""

    async def _submit(self, request: VideoRequest, key: str,
                      on_bound: Callable[[TaskSnapshot], Awaitable[None]] | None = None
                      ) -> TaskSnapshot: ...

    async def get(self, task_id: str) -> TaskSnapshot: ...

    def track(self, task_ids: list[str]) -> None: ...

    async def download(self, source: TaskSnapshot, path: Path) -> Path: ...

    def _follow(self, channel: TaskUpdates, task_ids: list[str]) -> None: ...

    def _unfollow(self, channel: TaskUpdates, task_ids: list[str]) -> None: ...


_SETTLED = ("completed", "downloaded", "failed")
# Errors that would fail every later submission the same way: stop submitting.
BATCH_FATAL = (AuthenticationError, InsufficientCreditsError, PermissionDeniedError)


@attrs.frozen
class BatchPlan:
    """A batch's requests and keys, their wire bodies and digests, and what a journal
    knows."""

    requests: list[VideoRequest]
    keys: list[str | None]
    bodies: list[dict[str, Any]]
    digests: list[str]
    entries: dict[int, JournalEntry]
    max_credits: float | None = None


def check_credits(plan: BatchPlan, max_credits: float | None) -> BatchPlan:
    """Refuse, before anything is sent, a batch whose published-price estimate passes
    ``max_credits`` or cannot be made (items the journal shows as paid are not counted)."""
    if max_credits is None:
        return plan
    limit: object = max_credits
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
        raise ValueError(f"max_credits must be a number > 0, got {max_credits!r}")
    todo = [i for i in range(len(plan.requests)) if i not in plan.entries
            or (plan.entries[i].task_id is None and plan.entries[i].state not in _SETTLED)]
    unknown = [i for i in todo if plan.requests[i].estimated_credits is None]
    if unknown:
        shown = ", ".join(f"{i} ({plan.requests[i].model})" for i in unknown[:5])
        raise ValueError(f"max_credits needs a published price for every request; none "
                         f"for request(s) {shown} (4k, or motion control without "
                         "video_seconds); nothing was sent")
    total = sum(plan.requests[i].estimated_credits or 0.0 for i in todo)
    if total > max_credits:
        raise ValueError(f"the batch is estimated at {total:g} credits at published prices, "
                         f"over max_credits={max_credits:g}; nothing was sent")
    return attrs.evolve(plan, max_credits=float(max_credits))


EVENT_BUFFER = 64  # events not yet taken by the consumer before submitting waits
PLAN_CHUNK = 500  # requests encoded between two yields to the event loop


async def plan_batch(items: Sequence[VideoRequest | Item], journal: Journal | None
                     ) -> BatchPlan:
    """Wire bodies, their digests and the journal's entries; refuse a foreign journal.

    Only a journal needs bodies and digests, so without one nothing is encoded here
    (each request is encoded once, when it is submitted). With one they are computed
    in chunks that yield to the event loop, so a batch of 50,000 does not stall it.
    An item's key is part of its digest (so a journal of other keys is refused), but
    only when it has one: journals of plain requests keep their digests.
    """
    requests = [i.request if isinstance(i, Item) else i for i in items]
    keys = [i.key if isinstance(i, Item) else None for i in items]
    bodies: list[dict[str, Any]] = []
    digests: list[str] = []
    if journal is None:
        return BatchPlan(requests, keys, bodies, digests, {})
    for start in range(0, len(requests), PLAN_CHUNK):
        for request, key in zip(requests[start:start + PLAN_CHUNK],
                                keys[start:start + PLAN_CHUNK], strict=True):
            body = request_to_wire(request)
            bodies.append(body)
            digests.append(digest_of(body if key is None else {"request": body, "key": key}))
        await anyio.lowlevel.checkpoint()
    entries = journal.entries()
    for index, entry in entries.items():
        if index >= len(requests) or entry.digest != digests[index]:
            raise JournalMismatchError(
                f"the journal {str(journal.path)!r} records a different request at index "
                f"{index}; use a new journal for a different batch", index)
    return BatchPlan(requests, keys, bodies, digests, entries)


class _Run:
    def __init__(self, client: BatchHost, plan: BatchPlan,
                 send: EventSender[BatchEvent], tg: anyio.abc.TaskGroup, *,
                 journal: Journal | None, download_to: Path | None) -> None:
        self.client = client
        self.plan = plan
        self.send = send
        self.tg = tg
        self.journal = journal
        self.download_to = download_to
        self.todo: Iterator[tuple[int, VideoRequest]] = iter(enumerate(plan.requests))
        self.updates = TaskUpdates((), open_ended=True)
        self.index_of: dict[str, int] = {}
        # (status value, progress) last reported per index: plain values, so neither the
        # tuples nor the dict are objects for the garbage collector to walk.
        self.last: dict[int, tuple[str, int]] = {}
        self.stop: KlingError | None = None
        self.closed: ClientClosedError | None = None
        self.committed = 0.0  # credits reserved by this run's submissions

    async def emit(self, kind: type[BatchEvent], index: int, **fields: Any) -> None:
        """Send one event of request ``index``, with the request's own key."""
        await self.send.send(kind(index=index, key=self.plan.keys[index], **fields))

    async def submitter(self) -> None:
        try:
            await self.submit_all()
        except ClientClosedError as exc:
            self.closed = exc  # raised once by run_batch, not once per submitter

    async def submit_all(self) -> None:
        plan, journal = self.plan, self.journal
        for index, request in self.todo:
            entry = plan.entries.get(index)
            if entry is not None and await self.resume(index, entry):
                continue
            if self.stop is not None:
                await self.emit(Failed, index, error=self.stop)
                continue
            estimate = request.estimated_credits or 0.0
            if not self.affordable(estimate):
                await self.emit(Failed, index, error=CreditLimitError(
                    f"not submitted: {self.committed:g} credits are reserved and this request "
                    f"needs {estimate:g} more, over max_credits={plan.max_credits:g}",
                    limit=plan.max_credits or 0.0, committed=self.committed,
                    needed=estimate))
                continue
            self.committed += estimate  # held while the POST runs (submitters in parallel)
            key = entry.idempotency_key if entry is not None else new_idempotency_key()
            on_bound = None
            if journal is not None:
                await journal.begin(index, plan.digests[index], plan.bodies[index], key,
                                    item_key=plan.keys[index])
                on_bound = partial(journal.submitted, index)  # recorded even if cancelled
            try:
                snapshot = await self.client._submit(request, key, on_bound)
            except SubmissionUnknownError as exc:
                await self.emit(Failed, index, error=exc)  # journal: resend later
                continue  # it may have been charged: its estimate stays committed
            except KlingError as exc:
                self.committed -= estimate  # refused: nothing was charged
                if isinstance(exc, BATCH_FATAL) and self.stop is None:
                    self.stop = exc
                if journal is not None:
                    await journal.refused(index, getattr(exc, "code", None), str(exc))
                await self.emit(Failed, index, error=exc)
                continue
            reserved = snapshot.usage.credits_reserved if snapshot.usage else None
            if reserved is not None:
                self.committed += reserved - estimate  # the server's figure wins
            await self.announce(index, snapshot)

    def affordable(self, estimate: float) -> bool:
        """Whether ``estimate`` more keeps the run within ``max_credits``."""
        limit = self.plan.max_credits
        return limit is None or self.committed + estimate <= limit + 1e-9

    async def resume(self, index: int, entry: JournalEntry) -> bool:
        """Carry on from the journal; False means "send it (again) with its key"."""
        if entry.state in ("completed", "downloaded"):
            snapshot = entry.snapshot()
            path = Path(entry.path) if entry.path else None
            if self.download_to is not None and (path is None or not path.exists()):
                self.tg.start_soon(self.fetch, index, snapshot)
            else:
                await self.emit(Succeeded, index, task_id=snapshot.id,
                                               snapshot=snapshot, path=path)
            return True
        if entry.state == "failed":
            snapshot = entry.snapshot()
            await self.emit(Failed, index, error=TaskFailedError(snapshot),
                                        task_id=snapshot.id, snapshot=snapshot)
            return True
        if entry.task_id is None:
            return False
        try:
            snapshot = await self.client.get(entry.task_id)
        except KlingError as exc:
            await self.emit(Failed, index, error=exc, task_id=entry.task_id)
            return True
        if not snapshot.is_terminal:
            self.client.track([snapshot.id])
        await self.announce(index, snapshot, resumed=True)
        return True

    async def announce(self, index: int, snapshot: TaskSnapshot, *,
                       resumed: bool = False) -> None:
        """Report the task of ``index`` and follow it to its end.

        A snapshot can already be final (a replayed submission, a resumed task): then it
        is handled here, since the poller will not report that task again.
        """
        self.index_of[snapshot.id] = index
        self.last[index] = (snapshot.status.value, snapshot.progress)
        await self.emit(Submitted, index, task_id=snapshot.id, snapshot=snapshot,
                                       resumed=resumed)
        if snapshot.is_terminal:
            await self.handle(index, update_of(snapshot.id, snapshot))
            return
        self.updates.add(snapshot.id)
        self.client._follow(self.updates, [snapshot.id])

    async def forwarder(self) -> None:
        async for update in self.updates:
            await self.handle(self.index_of[update.task_id], update)

    async def handle(self, index: int, update: TaskUpdate) -> None:
        snapshot = update.snapshot
        if update.error is not None:
            await self.emit(Failed, index, error=update.error,
                                        task_id=update.task_id, snapshot=snapshot)
            return
        assert snapshot is not None
        previous = self.last.get(index)
        current = self.last[index] = (update.status.value, update.progress)
        if self.journal is not None and (previous is None or previous[0] != current[0]):
            await self.journal.status(index, snapshot)
        if update.status is TaskStatus.COMPLETED:
            if self.download_to is not None:
                self.tg.start_soon(self.fetch, index, snapshot)
            else:
                await self.emit(Succeeded, index, task_id=update.task_id,
                                               snapshot=snapshot)
        elif update.status is TaskStatus.FAILED:
            await self.emit(Failed, index, error=TaskFailedError(snapshot),
                                        task_id=update.task_id, snapshot=snapshot)
        elif previous != current:
            await self.emit(Progressed, index, task_id=update.task_id,
                                            status=update.status, progress=update.progress,
                                            snapshot=snapshot)

    async def fetch(self, index: int, snapshot: TaskSnapshot) -> None:
        assert self.download_to is not None
        target = inside(self.download_to, f"{index:05d}-{safe_name(snapshot.id)}.mp4")
        try:
            if await anyio.Path(target).exists():
                path = target  # only ever renamed into place complete: a killed run's file
            elif not snapshot.results:
                raise DownloadError(f"task {snapshot.id} completed without a result link",
                                    url="")
            else:
                path = await self.client.download(snapshot, target)
        except ClientClosedError as exc:
            self.closed = exc
            return
        except KlingError as exc:
            await self.emit(Failed, index, error=exc, task_id=snapshot.id,
                                        snapshot=snapshot)
            return
        if self.journal is not None:
            await self.journal.downloaded(index, path)
        await self.emit(Succeeded, index, task_id=snapshot.id, snapshot=snapshot,
                                       path=path)


async def run_batch(client: BatchHost, plan: BatchPlan,
                    send: EventSender[BatchEvent], concurrency: int, *,
                    journal: Journal | None = None, download_to: Path | None = None) -> None:
    """Submit the plan's requests with ``concurrency`` submitters; forward their events."""
    runs: list[_Run] = []
    with send:
        try:
            async with anyio.create_task_group() as tg:
                run = _Run(client, plan, send, tg, journal=journal, download_to=download_to)
                runs.append(run)
                tg.start_soon(run.forwarder)
                async with anyio.create_task_group() as submitters:
                    for _ in range(min(concurrency, max(len(plan.requests), 1))):
                        submitters.start_soon(run.submitter)
                if run.closed is not None:
                    raise run.closed
                run.updates.seal()
            if run.closed is not None:  # a download met the closing Client
                raise run.closed
        finally:
            for run in runs:  # after the forwarder and downloads are done (or cancelled)
                client._unfollow(run.updates, list(run.index_of))


@asynccontextmanager
async def open_batch(client: BatchHost, requests: Iterable[VideoRequest | Item], *,
                     download_to: str | os.PathLike[str] | None, journal: Journal | None,
                     submit_concurrency: int, max_credits: float | None = None
                     ) -> AsyncIterator[anyio.abc.ObjectReceiveStream[BatchEvent]]:
    """``Client.generate_many``: check everything, then run the batch beside the block."""
    items = list(requests)
    for number, item in enumerate(items):
        if not isinstance(item, (*REQUEST_TYPES, Item)):
            raise TypeError(f"requests[{number}] is a {type(item).__name__}, "
                            "not a TextToVideo, ImageToVideo, MotionControl or Item")
    if submit_concurrency < 1:
        raise ValueError("submit_concurrency must be >= 1")
    plan = check_credits(await plan_batch(items, journal), max_credits)  # before sending
    folder = None if download_to is None else Path(download_to)
    send: EventSender[BatchEvent]
    receive: EventStream[BatchEvent]
    send, receive = event_channel(EVENT_BUFFER)
    with single_exceptions():
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(run_batch, client, plan, send, submit_concurrency,
                                      journal=journal, download_to=folder))
                try:
                    yield receive
                finally:
                    tg.cancel_scope.cancel()
        finally:  # only now: a producer between two awaits may still send (and be cancelled)
            receive.close()
