"""Downloads of result videos: streamed to a temporary file, resumed, checked, renamed.

Result links live 24 hours on a CDN, not on the API: they are fetched over a separate
pool that never carries the API key.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import aiohttp
import anyio

from ._config import RetryPolicy, Timeouts
from ._errors import ConnectError, KlingError, RequestTimeoutError, TransportError
from ._models import TaskSnapshot
from ._retry import backoff_delay

logger = logging.getLogger("kling_async")

CHUNK = 256 * 1024
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
    """Streams files over its own pool, at most ``limit`` at once."""

    def __init__(self, *, timeouts: Timeouts, retry: RetryPolicy, limit: int,
                 rng: random.Random, user_agent: str) -> None:
        self._timeouts = timeouts
        self._retry = retry
        self._limiter = anyio.CapacityLimiter(limit)
        self._rng = rng
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

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

    async def download(self, url: str, target: Path) -> Path:
        """Fetch ``url`` into ``target`` (atomically); resume after dropped connections."""
        async with self._limiter:
            partial = target.with_name(f".{target.name}.part")
            await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
            state = _State()
            attempt = 0
            while True:
                try:
                    await self._fetch(url, partial, state)
                    break
                except (TransportError, _IncompleteError) as exc:
                    if attempt + 1 >= self._retry.max_attempts:
                        raise DownloadError(f"download of {url} failed after {attempt + 1} "
                                            f"attempts: {exc}", url=url) from exc
                    delay = backoff_delay(self._retry, attempt, self._rng)
                    logger.debug("download interrupted (%s); resuming in %.2fs", exc, delay)
                    attempt += 1
                    await anyio.sleep(delay)
            await anyio.to_thread.run_sync(os.replace, partial, target)
            return target

    async def _fetch(self, url: str, partial: Path, state: _State) -> None:
        session = self._session
        if session is None:
            raise RuntimeError("the client is closed")
        have = (await anyio.Path(partial).stat()).st_size if await anyio.Path(
            partial).exists() else 0
        headers = {}
        if have:
            # Result files never change, so a partial file from a killed run is resumed too;
            # If-Range (when known) and the total size guard against a different file.
            headers = {"Range": f"bytes={have}-"}
            if state.etag is not None:
                headers["If-Range"] = state.etag
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect,
                                        sock_read=self._timeouts.read)
        try:
            async with session.get(url, headers=headers, timeout=timeout) as response:
                if response.status in (403, 404, 410):
                    raise ResultExpiredError(
                        f"the result link answered {response.status}: it has expired (links "
                        f"last 24 hours) or never existed; generate the clip again", url=url)
                if response.status == 416:  # the partial file is not a prefix of this one
                    await anyio.Path(partial).unlink(missing_ok=True)
                    raise _IncompleteError("range not satisfiable; starting over")
                if response.status not in (200, 206):
                    raise _IncompleteError(f"unexpected status {response.status}")
                resumed = response.status == 206
                total = _total_size(response, have if resumed else 0)
                state.etag = response.headers.get("ETag") or state.etag
                size = have if resumed else 0
                async with await anyio.open_file(partial, "ab" if resumed else "wb") as out:
                    async for chunk in response.content.iter_chunked(CHUNK):
                        await out.write(chunk)
                        size += len(chunk)
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectError(f"timed out connecting for {url}") from exc
        except TimeoutError as exc:
            raise RequestTimeoutError(f"download of {url} stalled") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"download of {url}: {type(exc).__name__}: {exc}") from exc
        if total is not None and size != total:
            raise _IncompleteError(f"got {size} of {total} bytes")


class _State:
    """What one download has learnt across its attempts."""

    def __init__(self) -> None:
        self.etag: str | None = None


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
