"""``SyncClient``: the same Client, blocking, for scripts and notebooks.

Every call runs the async code of :class:`Client` on one event loop in a background
thread owned by the SyncClient (an anyio blocking portal), so there is one code path.
It works in a plain script and inside a running event loop (a Jupyter cell), where
``asyncio.run`` cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._client import Client
from ._events import BatchEvent, Item
from ._journal import Journal
from ._models import Credits, TaskSnapshot
from ._requests import VideoRequest
from ._statistics import ClientStatistics
from ._watch import TaskUpdate

OnProgress = Callable[[TaskUpdate], object]


class SyncClient:
    """A blocking :class:`Client`: ``with kling.SyncClient() as client: ...``.

    Takes the same arguments as :class:`Client` and opens at once: a background thread
    runs one event loop with the Client in it until :meth:`close` (or the end of the
    ``with`` block). Methods block until the async method they run returns. Interrupted
    by Ctrl-C, a call stops waiting; what it started keeps the guarantees of the async
    call (a submission on the wire still finishes and is followed), and :meth:`close`
    stops everything and joins the thread.
    """

    def __init__(self, api_key: str | None = None, **options: Any) -> None:
        client = Client(api_key, **options)  # checks the arguments before any thread
        self._stack = contextlib.ExitStack()
        try:
            self._portal: BlockingPortal = self._stack.enter_context(
                start_blocking_portal("asyncio"))
            self._loop = self._portal.call(asyncio.get_running_loop)
            self._client: Client = self._stack.enter_context(
                self._portal.wrap_async_context_manager(client))
        except BaseException:
            self._stack.close()
            raise

    def __repr__(self) -> str:
        return f"<kling_async.SyncClient of {self._client!r}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the Client (others waiting on it get ClientClosedError) and join the
        thread, and the worker threads its loop started (file writes). Safe to call
        twice."""
        self._stack.close()
        for thread in threading.enumerate():  # anyio stops its workers but does not join
            if getattr(thread, "loop", None) is self._loop:
                thread.join(timeout=5)

    # -- the Client's methods, blocking ------------------------------------------------

    def submit(self, request: VideoRequest, *, idempotency_key: str | None = None
               ) -> TaskSnapshot:
        """Blocking :meth:`Client.submit`."""
        return self._portal.call(partial(self._client.submit, request,
                                         idempotency_key=idempotency_key))

    def upload(self, source: str | os.PathLike[str] | bytes) -> str:
        """Blocking :meth:`Client.upload`."""
        return self._portal.call(self._client.upload, source)

    def get(self, task_id: str) -> TaskSnapshot:
        """Blocking :meth:`Client.get`."""
        return self._portal.call(self._client.get, task_id)

    def credits(self) -> Credits:
        """Blocking :meth:`Client.credits`."""
        return self._portal.call(self._client.credits)

    def track(self, task_ids: Iterable[str]) -> None:
        """:meth:`Client.track`."""
        self._portal.call(self._client.track, list(task_ids))

    def wait_finished(self, task_id: str, *, on_progress: OnProgress | None = None
                      ) -> TaskSnapshot:
        """Blocking :meth:`Client.wait_finished` (``on_progress`` runs in the client's
        thread)."""
        return self._portal.call(partial(self._client.wait_finished, task_id,
                                         on_progress=on_progress))

    def generate(self, request: VideoRequest, *, idempotency_key: str | None = None,
                 on_progress: OnProgress | None = None) -> TaskSnapshot:
        """Blocking :meth:`Client.generate`."""
        return self._portal.call(partial(self._client.generate, request,
                                         idempotency_key=idempotency_key,
                                         on_progress=on_progress))

    def generate_file(self, request: VideoRequest, path: str | os.PathLike[str], *,
                      idempotency_key: str | None = None,
                      on_progress: OnProgress | None = None) -> Path:
        """Blocking :meth:`Client.generate_file`."""
        return self._portal.call(partial(self._client.generate_file, request, path,
                                         idempotency_key=idempotency_key,
                                         on_progress=on_progress))

    def download(self, source: TaskSnapshot | str, path: str | os.PathLike[str]) -> Path:
        """Blocking :meth:`Client.download`."""
        return self._portal.call(self._client.download, source, path)

    def ingest_callback(self, payload: bytes | str | Mapping[str, Any]) -> bool:
        """:meth:`Client.ingest_callback`."""
        return self._portal.call(self._client.ingest_callback, payload)

    def statistics(self) -> ClientStatistics:
        """:meth:`Client.statistics`."""
        return self._portal.call(self._client.statistics)

    @contextlib.contextmanager
    def watch(self, task_ids: Sequence[str]) -> Iterator[Iterator[TaskUpdate]]:
        """:meth:`Client.watch` as a blocking iterator of :class:`TaskUpdate`."""
        with self._portal.wrap_async_context_manager(self._client.watch(task_ids)) as updates:
            yield self._iterate(updates.__anext__, StopAsyncIteration)

    @contextlib.contextmanager
    def generate_many(self, requests: Iterable[VideoRequest | Item], *,
                      download_to: str | os.PathLike[str] | None = None,
                      journal: Journal | None = None, submit_concurrency: int = 4,
                      max_credits: float | None = None) -> Iterator[Iterator[BatchEvent]]:
        """:meth:`Client.generate_many` as a blocking iterator of events."""
        manager = self._client.generate_many(list(requests), download_to=download_to,
                                             journal=journal,
                                             submit_concurrency=submit_concurrency,
                                             max_credits=max_credits)
        with self._portal.wrap_async_context_manager(manager) as events:
            yield self._iterate(events.receive, anyio.EndOfStream)

    def _iterate(self, receive: Callable[[], Any], end: type[BaseException]
                 ) -> Iterator[Any]:
        while True:
            try:
                yield self._portal.call(receive)
            except end:
                return
