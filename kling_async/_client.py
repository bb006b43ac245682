"""``Client``: the session manager. One pool, one poller, bounded in-flight slots."""

from __future__ import annotations

import enum
import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
import anyio.abc

from ._batch import open_batch
from ._config import AdaptiveLimit, PollPolicy, RetryPolicy, Timeouts
from ._convert import callback_snapshot, credits_from_wire, request_to_wire, snapshot_from_wire
from ._download import Downloader, source_url
from ._errors import ClientClosedError, TaskFailedError
from ._events import BatchEvent, Item
from ._groups import single_exceptions
from ._http import Secret, Transport, check_base_url, is_loopback_host
from ._ids import check_idempotency_key, check_task_id, new_idempotency_key
from ._journal import Journal
from ._models import Credits, TaskSnapshot, TaskStatus
from ._pacing import Pacer, RequestPacer
from ._poller import Poller
from ._redis_budget import RedisBudget
from ._requests import VideoRequest, check_request
from ._shared_slots import SharedSlots, shared_budget
from ._slots import Admission, LocalSlots
from ._statistics import ClientStatistics
from ._submission import OnBound, Submitter
from ._tasks import TaskRegistry
from ._upload import Uploader
from ._version import package_version
from ._watch import TaskUpdate, TaskUpdates

logger = logging.getLogger("kling_async")

DEFAULT_BASE_URL = "https://api.evolink.ai"
DEFAULT_FILES_URL = "https://files-api.evolink.ai"
OnProgress = Callable[[TaskUpdate], object]


class _State(enum.Enum):
    UNOPENED = "unopened"  # built, never entered
    OPEN = "open"          # inside `async with`
    CLOSED = "closed"      # exited; a Client is not reusable


class Client:
    """The session manager: use it as ``async with kling.Client() as client:``.

    Entering opens one aiohttp connection pool and starts one poller in the client's
    task group; leaving stops both (tasks keep running on the server). A Client is used
    once: entering it again, or using it before entering or after leaving, raises
    ``RuntimeError``. Build a new one per ``asyncio.run``.

    Args:
        api_key: defaults to ``$EVOLINK_API_KEY``.
        base_url: defaults to ``$EVOLINK_BASE_URL``, else ``https://api.evolink.ai``.
        max_in_flight: tasks of this client unfinished on the server at once: an int if
            you know your account's limit, else :class:`AdaptiveLimit` (the default)
            finds it from the server's 429s.
        timeouts: socket timeouts (:class:`Timeouts`).
        retry: retry and backoff policy (:class:`RetryPolicy`).
        poll: when tasks are read (:class:`PollPolicy`); defaults to
            ``PollPolicy.scaled($KLING_ASYNC_TIME_SCALE)`` when that is set (the
            Emulator prints it), else ``PollPolicy()``.
        max_connections: size of the connection pool.
        max_requests_per_second: request budget shared by submissions and reads
            (``None``: unlimited).
        max_downloads: result files downloaded at once (their own pool, no API key).
        files_url: where local images are uploaded: ``$EVOLINK_FILES_URL``, else the
            ``base_url`` itself for a loopback Emulator, else
            ``https://files-api.evolink.ai``.
        budget: a :class:`RedisBudget` shared by every process using this account: then
            ``max_in_flight`` and ``max_requests_per_second`` are the account's totals.
        seed: seed for jitter (tests).

    An exception raised inside the block comes out as itself, not wrapped in an
    ``ExceptionGroup``, unless several failed at once.
    """

    def __init__(self, api_key: str | None = None, *, base_url: str | None = None,
                 max_in_flight: int | AdaptiveLimit | None = None,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None,
                 poll: PollPolicy | None = None, max_connections: int = 16,
                 max_requests_per_second: float | None = 20.0,
                 max_downloads: int = 4, files_url: str | None = None,
                 budget: RedisBudget | None = None, seed: int | None = None) -> None:
        key = api_key if api_key is not None else os.environ.get("EVOLINK_API_KEY")
        if not key:
            raise ValueError("no API key: pass api_key= or set EVOLINK_API_KEY "
                             "(get one at https://evolink.ai/dashboard/keys)")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        if max_downloads < 1:
            raise ValueError(f"max_downloads must be >= 1, got {max_downloads!r}")
        self._max_downloads = max_downloads
        self._key = Secret(key)
        self._base_url = check_base_url(
            base_url or os.environ.get("EVOLINK_BASE_URL") or DEFAULT_BASE_URL)
        self._limit: int | AdaptiveLimit = (AdaptiveLimit() if max_in_flight is None
                                            else max_in_flight)
        LocalSlots(self._limit)  # validates now, not at enter
        self._timeouts = timeouts or Timeouts()
        self._retry = retry or RetryPolicy()
        self._poll_policy = poll or PollPolicy.from_environment()
        self._max_connections = max_connections
        self._rate = max_requests_per_second
        RequestPacer(max_requests_per_second)  # validates now
        if budget is not None and not isinstance(budget, RedisBudget):
            raise TypeError(f"budget must be a kling_async.RedisBudget, got {budget!r}")
        self._budget = budget
        self._files_url = check_base_url(files_url or os.environ.get("EVOLINK_FILES_URL") or (
            self._base_url if is_loopback_host(urlsplit(self._base_url).hostname or "")
            else DEFAULT_FILES_URL))
        self._rng = random.Random(seed)
        self._state = _State.UNOPENED

    def __repr__(self) -> str:
        return f"<kling_async.Client base_url={self._base_url!r} state={self._state.value}>"

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise RuntimeError("a Client can be entered only once; create a new Client")
        self._state = _State.OPEN
        admission: Admission
        pacer: Pacer
        self._shared: SharedSlots | None = None
        if self._budget is None:
            admission, pacer = LocalSlots(self._limit), RequestPacer(self._rate)
        else:
            hold = self._retry.unsettled_hold / self._poll_policy.time_scale
            self._shared, pacer = shared_budget(self._budget, self._limit, self._rate,
                                                hold=hold, rng=self._rng)
            admission = self._shared
        self._registry = TaskRegistry(admission, self._poll_policy, self._rng)
        if self._shared is not None:
            self._shared.on_orphans = self._registry.adopt
        self._transport = Transport(
            base_url=self._base_url, api_key=self._key, timeouts=self._timeouts,
            retry=self._retry, pacer=pacer,
            max_connections=self._max_connections, rng=self._rng,
            user_agent=f"kling-async/{package_version()}")
        self._poller = Poller(self._transport, self._poll_policy, self._registry)
        self._downloader = Downloader(timeouts=self._timeouts, retry=self._retry,
                                      limit=self._max_downloads, rng=self._rng,
                                      user_agent=f"kling-async/{package_version()}")
        self._uploader = Uploader(files_url=self._files_url, api_key=self._key,
                                  timeouts=self._timeouts, retry=self._retry, rng=self._rng)
        await self._transport.open()
        await self._downloader.open()
        self._tg = anyio.create_task_group()
        self._submitter = Submitter(
            self._transport, self._registry, self._retry, self._rng,
            submit_timeout=self._timeouts.submit, time_scale=self._poll_policy.time_scale,
            tg=self._tg)
        try:
            await self._tg.__aenter__()
            if self._shared is not None:
                await self._tg.start(self._shared.run)
            await self._tg.start(self._poller.run)
        except BaseException:
            self._state = _State.CLOSED
            await self._close_resources()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        self._state = _State.CLOSED
        self._registry.close()  # waiters and watchers in other tasks end now
        try:
            await self._submitter.drain()  # POSTs on the wire finish (Timeouts.submit)
        finally:
            self._tg.cancel_scope.cancel()
        try:
            with single_exceptions():
                return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            await self._close_resources()

    async def _close_resources(self) -> None:
        await self._uploader.close()
        await self._downloader.close()
        await self._transport.close()
        if self._shared is not None:
            await self._shared.aclose()  # hands the tasks still followed to other processes

    def _check_open(self) -> None:
        if self._state is _State.UNOPENED:
            raise RuntimeError("the Client is not open: use `async with kling.Client() as "
                               "client:` and call it inside the block")
        if self._state is _State.CLOSED:
            raise ClientClosedError("the Client is closed; create a new Client")

    # -- submitting -----------------------------------------------------------------------

    async def submit(self, request: VideoRequest, *,
                     idempotency_key: str | None = None) -> TaskSnapshot:
        """Submit one paid generation and return its first snapshot (``pending``).

        Waits first-come-first-served for an in-flight slot, then POSTs with an
        ``Idempotency-Key`` (``idempotency_key`` or a new one), retried only with that
        key. The task keeps the slot until it is seen finished. A 429 shrinks the slots
        (adaptive mode), pauses the client for ``Retry-After`` and retries with the same
        key, for up to ``RetryPolicy.rate_limit_patience`` seconds.

        Raises:
            TypeError: ``request`` is not a :class:`TextToVideo`, :class:`ImageToVideo` or
                :class:`MotionControl`.
            ImageFileError: a local image cannot be used (nothing was sent or charged).
            InvalidRequestError: the server refused the request (nothing was charged).
            AuthenticationError: the key was refused (nothing was charged).
            InsufficientCreditsError: too few credits (nothing was charged).
            PermissionDeniedError: the key may not use the model (nothing was charged).
            RateLimitError: the account stayed full for ``rate_limit_patience``.
            SubmissionUnknownError: retries could not tell whether the task was created;
                its slot stays reserved; submit again with its ``idempotency_key`` to
                settle it.
            ClientClosedError: the Client closed while this waited for a slot.

        Cancellation while waiting for a slot spends nothing. Cancellation once the POST
        may be on the wire waits (shielded, at most ``Timeouts.submit``) for its answer:
        a task it created is followed to its end, holding its slot, before the
        cancellation propagates.
        """
        self._check_open()
        check_request(request, "submit()")
        key = (new_idempotency_key() if idempotency_key is None
               else check_idempotency_key(idempotency_key))
        return await self._submit(request, key)

    async def _submit(self, request: VideoRequest, key: str,
                      on_bound: OnBound | None = None) -> TaskSnapshot:
        self._check_open()
        request = await self._uploader.resolve(request)  # before a slot is taken
        return await self._submitter.submit(request_to_wire(request), key, on_bound)

    async def upload(self, source: str | os.PathLike[str] | bytes) -> str:
        """Put a local image (a path, or its bytes) on EvoLink's file hosting and return
        its URL, for requests that take image URLs. Each distinct file is uploaded once
        per Client; the files expire after 72 hours on the service.

        Request classes accept a ``pathlib.Path`` and call this for you on submit, with
        the model's documented limits checked first.

        Raises:
            ImageFileError: not a readable jpg, png, gif or webp image of at most 100 MB
                (nothing was sent).
        """
        self._check_open()
        return await self._uploader.upload(
            source if isinstance(source, bytes) else Path(os.fspath(source)))

    def track(self, task_ids: Iterable[str]) -> None:
        """Adopt tasks from an earlier run: poll them and count them against the slots."""
        self._check_open()
        self._registry.adopt([check_task_id(t) for t in task_ids])

    # -- reading --------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskSnapshot:
        """Read one task now (``GET /v1/tasks/{id}``), whatever the poller's schedule.

        Raises:
            ValueError: ``task_id`` is not a task id (nothing is sent).
            NotFoundError: no such task.
            PermissionDeniedError: the task belongs to another key.

        Transient failures are retried (``RetryPolicy``); cancelling leaves nothing behind.
        """
        self._check_open()
        data, request_id = await self._transport.get_task(check_task_id(task_id))
        snapshot = snapshot_from_wire(data, request_id)
        self._registry.observe(snapshot)
        return snapshot

    async def credits(self) -> Credits:
        """The key's credits now (``GET /v1/credits``); retried like any read, and
        cancelling leaves nothing behind."""
        self._check_open()
        data, _ = await self._transport.read("GET", "/v1/credits")
        return credits_from_wire(data)

    @asynccontextmanager
    async def watch(self, task_ids: Sequence[str]) -> AsyncIterator[TaskUpdates]:
        """Follow tasks: yields an async iterator of :class:`TaskUpdate`, one per change,
        that ends once every id has delivered its final update.

        Several watchers of one id share its reads. A slow consumer gets progress
        coalesced to the latest reading; final updates are never dropped, and come
        before progress still waiting (each task's own stay in order). An id that
        cannot be followed (404, 403) ends with an update whose ``error`` is set.
        Leaving the block early stops nothing on the server. If the Client closes
        meanwhile (in another task), iteration raises :class:`ClientClosedError`.
        """
        self._check_open()
        if isinstance(task_ids, str):
            raise TypeError("watch() takes a list of task ids, not one string")
        ids = list(dict.fromkeys(check_task_id(t) for t in task_ids))
        channel = TaskUpdates(ids)
        self._follow(channel, ids)
        try:
            yield channel
        finally:
            self._unfollow(channel, ids)

    def _follow(self, channel: TaskUpdates, task_ids: list[str]) -> None:
        self._registry.subscribe(channel, task_ids)

    def _unfollow(self, channel: TaskUpdates, task_ids: list[str]) -> None:
        self._registry.unsubscribe(channel, task_ids)

    async def wait_finished(self, task_id: str, *, on_progress: OnProgress | None = None
                            ) -> TaskSnapshot:
        """Wait until the task is finished and return its final snapshot.

        Args:
            task_id: the task.
            on_progress: called with each :class:`TaskUpdate` (status or progress change).

        Raises:
            TaskFailedError: the task failed (its ``snapshot`` and ``code`` tell why).
            NotFoundError, PermissionDeniedError: the task cannot be followed.
            ClientClosedError: the Client closed meanwhile (in another task).

        Put a deadline on it with ``anyio.fail_after``; cancelling stops no server work.
        """
        final = None
        async with self.watch([task_id]) as updates:
            async for update in updates:
                if on_progress is not None:
                    on_progress(update)
                final = update
        assert final is not None
        assert final.is_final
        if final.error is not None:
            raise final.error
        assert final.snapshot is not None
        if final.status is TaskStatus.FAILED:
            raise TaskFailedError(final.snapshot)
        return final.snapshot

    async def generate(self, request: VideoRequest, *, idempotency_key: str | None = None,
                       on_progress: OnProgress | None = None) -> TaskSnapshot:
        """One clip in one call: :meth:`submit`, then :meth:`wait_finished`; returns the
        completed snapshot (``video_url`` holds the result link).

        Waits for a slot, the POST and the task's end. Raises what those two raise,
        :class:`TaskFailedError` above all. Cancelled after the POST, the task keeps
        running on the server and is followed (holding its slot) until it ends.
        """
        snapshot = await self.submit(request, idempotency_key=idempotency_key)
        return await self.wait_finished(snapshot.id, on_progress=on_progress)

    async def generate_file(self, request: VideoRequest, path: str | os.PathLike[str], *,
                            idempotency_key: str | None = None,
                            on_progress: OnProgress | None = None) -> Path:
        """:meth:`generate`, then :meth:`download` the clip to ``path``; returns the path.

        Raises what :meth:`generate` and :meth:`download` raise.
        """
        done = await self.generate(request, idempotency_key=idempotency_key,
                                   on_progress=on_progress)
        return await self.download(done, path)

    async def download(self, source: TaskSnapshot | str, path: str | os.PathLike[str]) -> Path:
        """Download a result video to ``path`` and return the path.

        Streams into a temporary file beside ``path``, resumes with ``Range`` after a
        dropped connection, checks the size, then renames it into place atomically, so
        ``path`` either does not exist or is complete. At most ``max_downloads`` run at
        once, over a pool of their own that never carries the API key.

        Args:
            source: a completed :class:`TaskSnapshot` (its first result) or a result URL.
            path: where the file goes; missing parent folders are created.

        Raises:
            ResultExpiredError: the link is gone (links last 24 hours); generate again.
            DownloadError: the file could not be fetched completely after retries, or
                another process is writing ``path``.

        Cancelled, it leaves the partial file (and its record) beside ``path``: the next
        download of the same result to ``path`` resumes it.
        """
        self._check_open()
        url = source_url(source)
        task_id = source.id if isinstance(source, TaskSnapshot) else None
        return await self._downloader.download(url, Path(path), task_id=task_id)

    # -- batches and callbacks ------------------------------------------------------------

    def generate_many(self, requests: Iterable[VideoRequest | Item], *,
                      download_to: str | os.PathLike[str] | None = None,
                      journal: Journal | None = None, submit_concurrency: int = 4,
                      max_credits: float | None = None
                      ) -> AbstractAsyncContextManager[anyio.abc.ObjectReceiveStream[BatchEvent]]:
        """Run many generations; yields a stream of ``Submitted``, ``Progressed``,
        ``Succeeded`` and ``Failed`` events, each carrying the request's ``index``.

        Every request ends in exactly one ``Succeeded`` or ``Failed``. A request the
        server refuses (400, content policy) or whose task fails is a ``Failed`` event
        and the batch goes on. A condition that dooms every request (401, 402, 403)
        stops further submissions, and each remaining request gets a ``Failed`` event
        carrying that error. Leaving the block early stops submitting; tasks already
        submitted keep running on the server and keep their slots until they finish.

        Args:
            requests: :class:`TextToVideo`, :class:`ImageToVideo` or :class:`MotionControl`
                requests, or :class:`Item` values that add your own key; events carry the
                index (and the key).
            download_to: a folder; each finished clip is downloaded there as soon as its
                task succeeds (``NNNNN-<task id>.mp4``) before ``Succeeded`` is sent.
            journal: a :class:`Journal`; running the same batch again with it resumes:
                finished items are reported without new work, unfinished tasks are
                re-attached, and unsettled submissions are re-sent with their key.
            submit_concurrency: submissions in flight at once (slots still apply).
            max_credits: a spending cap. The batch is refused before anything is sent if
                its estimate at published prices (``estimated_credits``) passes it or
                cannot be made; while it runs, a request whose estimate would take the
                credits reserved so far (the server's ``usage.credits_reserved``) past
                it is not submitted and ends as ``Failed`` with :class:`CreditLimitError`.

        Raises:
            ValueError: the journal records a different batch, or ``max_credits`` is
                passed by the estimate (before anything is sent).
            ClientClosedError: the Client closed while the block was still running.
        """
        self._check_open()
        return open_batch(self, requests, download_to=download_to, journal=journal,
                          submit_concurrency=submit_concurrency, max_credits=max_credits)

    def ingest_callback(self, payload: bytes | str | Mapping[str, Any]) -> bool:
        """Feed a callback body received by your web app to the client.

        A progress claim for a tracked task takes effect at once; a ``completed`` or
        ``failed`` claim triggers an immediate confirming read (callbacks are unsigned),
        so the final update arrives within milliseconds instead of at the next poll.
        Unknown ids, stale or out-of-order claims and unreadable bodies (any size, depth
        or type) are ignored: it never raises on its payload.

        Returns:
            True if the callback was used.
        """
        self._check_open()
        snapshot = callback_snapshot(payload)
        if snapshot is None:
            logger.warning("ignored an unreadable callback body")
            return False
        return self._registry.hint(snapshot)

    def statistics(self) -> ClientStatistics:
        """A snapshot of slots, tracked ids, unsettled submissions and requests sent."""
        self._check_open()
        slots = self._registry.admission
        return ClientStatistics(
            in_flight=slots.in_flight, capacity=slots.capacity, waiting=slots.waiting,
            tracked=self._registry.tracked, unsettled=self._registry.unsettled,
            requests_sent=self._transport.requests_sent,
            batch_reads=self._poller.batch_reads, single_reads=self._poller.single_reads,
            statuses_read=self._poller.statuses_read, rate_limited=slots.rejections,
            batch_supported=self._poller.batch_supported)
