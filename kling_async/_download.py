"""Downloads of result videos: streamed to a temporary file, resumed, checked, renamed.

Result links live 24 hours on a CDN, not on the API: they are fetched over a separate
pool that never carries the API key.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import BinaryIO

import aiohttp
import anyio
import anyio.lowlevel
import yarl

from ._config import RetryPolicy, Timeouts
from ._errors import (
    ClientClosedError,
    KlingError,
    TransportError,
)
from ._http import network_errors
from ._models import TaskSnapshot
from ._retry import Retrying

logger = logging.getLogger("kling_async")

WRITE_BLOCK = 1024 * 1024  # bytes gathered per write
INLINE_WRITE_BUDGET = 0.002  # seconds a block may take to be written on the event loop
FIRST_PAUSE = 4  # blocks written in a worker thread after a slow one, before trying inline
LONGEST_PAUSE = 256  # ...doubling while the disk stays slow, up to this many
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class DownloadError(KlingError):
    """A result file could not be downloaded completely.

    Attributes:
        url: the result link.
    """

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0],), {"url": self.url})


class ResultExpiredError(DownloadError):
    """The result link is gone (links last 24 hours): the clip must be generated again."""


def safe_name(text: str) -> str:
    """A file name made only of ``[A-Za-z0-9._-]``, never ``.``/``..`` or empty."""
    name = _UNSAFE.sub("_", text).strip(".")
    return name[:120] or "clip"


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing any name that would land outside ``folder``."""
    root = folder.resolve()
    target = (root / name).resolve()
    if target.parent != root:
        raise ValueError(f"refusing to write {name!r} outside {str(root)!r}")
    return target


def source_url(source: TaskSnapshot | str) -> str:
    """The URL to fetch for a snapshot (its first result) or a URL given as is."""
    if isinstance(source, TaskSnapshot):
        if not source.results:
            raise ValueError(f"task {source.id} has no result to download "
                             f"(status {source.status.value})")
        return source.results[0]
    if not source.startswith(("https://", "http://")):
        raise ValueError(f"expected a TaskSnapshot or an http(s) URL, got {source!r}")
    return source


class Downloader:
    """Streams files over its own pool, at most ``limit`` at once, one at a time per path."""

    def __init__(self, *, timeouts: Timeouts, retry: RetryPolicy, limit: int,
                 rng: random.Random, user_agent: str) -> None:
        self._timeouts = timeouts
        self._retry = retry
        self._limiter = anyio.CapacityLimiter(limit)
        self._rng = rng
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._paths: dict[Path, tuple[anyio.Lock, int]] = {}

    async def open(self) -> None:
        """Create the download pool."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16), timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": self._user_agent}, auto_decompress=False)

    async def close(self) -> None:
        """Close the pool, shielded, within a few seconds."""
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await session.close()

    async def download(self, url: str, target: Path, *, task_id: str | None = None) -> Path:
        """Fetch ``url`` into ``target`` atomically, resuming what this same result left.

        Downloads to one path run one after the other in this process; another process
        writing the same path is refused with :class:`DownloadError`.
        """
        target = Path(os.path.abspath(target))  # noqa: ASYNC240 - string work and getcwd, no disk I/O
        lock, users = self._paths.get(target, (anyio.Lock(), 0))
        self._paths[target] = (lock, users + 1)
        try:
            async with lock, self._limiter:
                part = await anyio.to_thread.run_sync(_Partial.open, target, url, task_id)
                done = False
                try:
                    await self._fetch_all(url, part)
                    await anyio.to_thread.run_sync(part.finish)  # renames, then closes
                    done = True
                finally:
                    if not done:
                        with anyio.CancelScope(shield=True):
                            await anyio.to_thread.run_sync(part.close)
        finally:
            lock, users = self._paths[target]
            if users == 1:
                del self._paths[target]
            else:
                self._paths[target] = (lock, users - 1)
        return target

    async def _fetch_all(self, url: str, part: _Partial) -> None:
        retrying = Retrying(self._retry, self._rng, what=f"download of {url}",
                            retry_on=lambda exc: isinstance(exc, (TransportError,
                                                                  _IncompleteError)))
        try:
            async for attempt in retrying:
                with attempt:
                    await self._fetch(url, part)
        except (TransportError, _IncompleteError) as exc:
            raise DownloadError(f"download of {url} failed after {retrying.failures + 1} "
                                f"attempts: {exc}", url=url) from exc

    async def _fetch(self, url: str, part: _Partial) -> None:
        session = self._session
        if session is None:
            raise ClientClosedError("the Client is closed")
        headers = {}
        if part.size:
            headers["Range"] = f"bytes={part.size}-"
            if part.etag is not None:
                headers["If-Range"] = part.etag  # a changed file comes back whole (200)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect,
                                        sock_read=self._timeouts.read)
        with network_errors(f"download of {url}", host=yarl.URL(url).host or url,
                            stalled="stalled", closed=lambda: self._session is None):
            # encoded=True: a presigned URL is requested byte for byte as given.
            async with session.get(yarl.URL(url, encoded=True), headers=headers,
                                   timeout=timeout) as response:
                if response.status in (403, 404, 410):
                    raise ResultExpiredError(
                        f"the result link answered {response.status}: it has expired (links "
                        f"last 24 hours) or never existed; generate the clip again", url=url)
                if response.status == 416:  # the partial file is not a prefix of this one
                    await anyio.to_thread.run_sync(part.restart, None)
                    raise _IncompleteError("range not satisfiable; starting over")
                if response.status not in (200, 206):
                    raise _IncompleteError(f"unexpected status {response.status}")
                if response.status == 200:
                    await anyio.to_thread.run_sync(part.restart, response.headers.get("ETag"))
                total = _total_size(response, part.size)
                await _stream(response, part)
        if total is not None and part.size != total:
            raise _IncompleteError(f"got {part.size} of {total} bytes")


async def _stream(response: aiohttp.ClientResponse, part: _Partial) -> None:
    """Body to file in blocks of ``WRITE_BLOCK`` bytes, at most one block held.

    A block goes to the page cache in well under a millisecond, so it is written inline
    while writes stay that fast; after one that takes longer (a slow or network disk, or
    this process losing its core for a moment) blocks go to a worker thread for a while
    (see :class:`WritePlace`). The body is taken as aiohttp buffered it (``iter_chunks``,
    unlike ``iter_any``, never joins buffered pieces into a new bytes object).
    """
    pending: list[bytes] = []
    gathered = 0
    async for chunk, _ in response.content.iter_chunks():
        pending.append(chunk)
        gathered += len(chunk)
        if gathered >= WRITE_BLOCK:
            await part.write(pending)
            pending, gathered = [], 0
    if pending:
        await part.write(pending)


class WritePlace:
    """Where the next block is written: on the event loop while writes take less than
    ``INLINE_WRITE_BUDGET``; after one that did not, the next ``FIRST_PAUSE`` blocks in a
    worker thread, then inline again, the pause doubling (up to ``LONGEST_PAUSE``) while
    the write back on the loop is still slow. A disk that stays slow is written from
    the thread, its loop blocked by one write in ever fewer; a moment of slowness (this
    process losing its core) costs a few thread hops, not the rest of the file (on a busy
    2-core machine, 44 hops per 20 MB file when one slow write decided for good)."""

    __slots__ = ("_pause", "_threaded")

    def __init__(self) -> None:
        self._threaded = 0  # blocks still to be written in the worker thread
        self._pause = FIRST_PAUSE

    def inline(self) -> bool:
        """Whether the next block is written on the event loop (False counts it off)."""
        if self._threaded:
            self._threaded -= 1
            return False
        return True

    def took(self, seconds: float) -> None:
        """A block written on the event loop took ``seconds``."""
        if seconds < INLINE_WRITE_BUDGET:
            self._pause = FIRST_PAUSE
        else:
            self._threaded = self._pause
            self._pause = min(self._pause * 2, LONGEST_PAUSE)


class _Partial:
    """The ``.part`` file of one target, locked, with a record of what it holds.

    Beside ``.name.part`` lies ``.name.part.json``: the URL, task id and validator the
    bytes came from. A leftover partial file is resumed only for the same result;
    anything else is discarded. Every method but `write` runs in a worker thread.
    """

    def __init__(self, target: Path, file: BinaryIO, meta: dict[str, str | None]) -> None:
        self.target = target
        self.path = target.with_name(f".{target.name}.part")
        self.meta_path = target.with_name(f".{target.name}.part.json")
        self._file = file
        self._meta = meta
        self.size = file.seek(0, os.SEEK_END)
        self.place = WritePlace()

    @classmethod
    def open(cls, target: Path, url: str, task_id: str | None) -> _Partial:
        target.parent.mkdir(parents=True, exist_ok=True)
        path = target.with_name(f".{target.name}.part")
        file = open(path, "a+b")  # noqa: SIM115 - closed by close()
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            raise DownloadError(f"{target} is being downloaded by another process; wait for "
                                "it or download to another path", url=url) from None
        meta = {"url": url, "task_id": task_id, "etag": None}
        part = cls(target, file, meta)
        recorded = part._read_meta()
        same = recorded is not None and (recorded.get("url") == url or (
            task_id is not None and recorded.get("task_id") == task_id))
        if same and recorded is not None:
            meta["etag"] = recorded.get("etag")
        elif part.size:
            logger.debug("discarding %s: written from another result", part.path)
            part.restart(None)
        return part

    @property
    def etag(self) -> str | None:
        return self._meta["etag"]

    def _read_meta(self) -> dict[str, str | None] | None:
        try:
            data = json.loads(self.meta_path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def restart(self, etag: str | None) -> None:
        """Empty the file: the bytes to come start at offset 0."""
        self._file.truncate(0)
        self.size = 0
        self._meta["etag"] = etag
        self.meta_path.write_text(json.dumps(self._meta), "utf-8")

    async def write(self, chunks: list[bytes]) -> None:
        """Append ``chunks`` where :class:`WritePlace` says: inline or in a worker thread."""
        if self.place.inline():
            self.place.took(self.append(chunks))
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.to_thread.run_sync(self.append, chunks)

    def append(self, chunks: list[bytes]) -> float:
        """Write ``chunks`` at the end; the seconds writing the bytes took."""
        if not self.size and not self.meta_path.exists():
            self.meta_path.write_text(json.dumps(self._meta), "utf-8")
        started = time.perf_counter()
        self._file.writelines(chunks)
        self._file.flush()
        took = time.perf_counter() - started
        self.size += sum(map(len, chunks))
        return took

    def finish(self) -> None:
        """Rename the complete file into place, drop the record, release the file."""
        os.replace(self.path, self.target)
        self.meta_path.unlink(missing_ok=True)
        self.size = -1  # nothing left to clean up
        self._file.close()

    def close(self) -> None:
        """Release the file (and the lock); an empty leftover is removed."""
        if self.size == 0:
            self.path.unlink(missing_ok=True)
            self.meta_path.unlink(missing_ok=True)
        self._file.close()


class _IncompleteError(Exception):
    """A body that ended early or an unusable answer: worth resuming."""


def _total_size(response: aiohttp.ClientResponse, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range:
        tail = content_range.rsplit("/", 1)[1]
        if tail.isdigit():
            return int(tail)
    length = response.content_length
    return None if length is None else offset + length
