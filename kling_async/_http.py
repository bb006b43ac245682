"""One aiohttp session per Client: auth, timeouts, retries, Retry-After, idempotency keys.

All network errors are mapped to the kling_async tree here and nowhere else.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
import anyio.lowlevel

from ._config import RetryPolicy, Timeouts
from ._errors import (
    APIError,
    ConnectError,
    KlingError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    ServerError,
    SubmissionUnknownError,
    TransportError,
    error_from_response,
)
from ._pacing import RequestPacer
from ._retry import parse_retry_after, retry_wait

logger = logging.getLogger("kling_async")

MAX_BODY = 8 * 1024 * 1024  # larger JSON answers are refused, not buffered
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Secret:
    """An API key that never shows itself in a repr, str or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the Authorization header only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback address literals."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> str:
    """Validate ``base_url``; the key never travels over plain http off this machine."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {base_url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"refusing to send the API key over plain http to {parts.hostname!r};"
                         " use https (plain http is allowed for loopback Emulators only)")
    return base_url.rstrip("/")


class Transport:
    """Requests to the API over one connection pool, retried as the request allows."""

    def __init__(self, *, base_url: str, api_key: Secret, timeouts: Timeouts,
                 retry: RetryPolicy, pacer: RequestPacer, max_connections: int,
                 rng: random.Random, user_agent: str) -> None:
        self._base = check_base_url(base_url)
        self._key = api_key
        self._timeouts = timeouts
        self.retry = retry
        self.pacer = pacer
        self._max_connections = max_connections
        self._rng = rng
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._socket_timeouts = {
            seconds: aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect,
                                           sock_read=seconds)
            for seconds in (timeouts.read, timeouts.submit)}
        self.requests_sent = 0

    async def open(self) -> None:
        """Create the session and its pool (inside the running loop)."""
        connector = aiohttp.TCPConnector(limit=self._max_connections,
                                         limit_per_host=self._max_connections,
                                         keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None),
            headers={"Authorization": f"Bearer {self._key.reveal()}",
                     "User-Agent": self._user_agent, "Accept": "application/json"})

    async def close(self) -> None:
        """Close the pool; waits at most a few seconds, shielded from cancellation."""
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await session.close()
                await anyio.lowlevel.checkpoint()  # transports finish closing (aiohttp docs)

    # -- one attempt ------------------------------------------------------------------------

    async def _send(self, method: str, path: str, body: Any, headers: Mapping[str, str],
                    read_timeout: float) -> tuple[int, bytes, Mapping[str, str]]:
        session = self._session
        if session is None:
            raise RuntimeError("the client is closed")
        await self.pacer.acquire()
        timeout = self._socket_timeouts[read_timeout]
        self.requests_sent += 1
        try:
            async with session.request(method, self._base + path, json=body, headers=headers,
                                       timeout=timeout) as response:
                data = await _read_capped(response)
                return response.status, data, response.headers
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectError(f"timed out connecting to {self._base}") from exc
        except TimeoutError as exc:
            raise RequestTimeoutError(f"{method} {path}: no answer within "
                                      f"{read_timeout:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"cannot connect to {self._base}: {exc.os_error}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def _attempt(self, method: str, path: str, body: Any, headers: Mapping[str, str],
                       read_timeout: float) -> tuple[Any, Mapping[str, str]]:
        status, data, response_headers = await self._send(method, path, body, headers,
                                                          read_timeout)
        if status >= 400:
            retry_after = parse_retry_after(response_headers.get("Retry-After"))
            error = error_from_response(status, data, response_headers, retry_after)
            if isinstance(error, RateLimitError):
                self.pacer.pause(min(retry_after if retry_after is not None
                                     else self.retry.backoff_base, self.retry.retry_after_max))
            raise error
        try:
            return json.loads(data), response_headers
        except (ValueError, UnicodeDecodeError) as exc:
            raise ResponseDecodeError(f"{method} {path}: answer is not JSON",
                                      excerpt=data[:200].decode("utf-8", "replace")) from exc

    # -- reads ----------------------------------------------------------------------------

    async def read(self, method: str, path: str, body: Any = None) -> Any:
        """A read (GET, or the batch read's POST): retried on transient failures."""
        attempt = 0
        while True:
            try:
                data, _ = await self._attempt(method, path, body, {}, self._timeouts.read)
                return data
            except (TransportError, ResponseDecodeError, APIError) as exc:
                if not _transient(exc) or attempt + 1 >= self.retry.max_attempts:
                    raise
                wait = retry_wait(self.retry, attempt,
                                  getattr(exc, "retry_after", None), self._rng)
                logger.debug("retrying %s %s in %.2fs after %s", method, path, wait,
                             type(exc).__name__)
                attempt += 1
                await anyio.sleep(wait)

    async def get_task(self, task_id: str) -> Any:
        """``GET /v1/tasks/{task_id}``."""
        return await self.read("GET", f"/v1/tasks/{quote(task_id, safe='')}")

    # -- the paid write -------------------------------------------------------------------

    async def submit(self, body: Mapping[str, Any], key: str) -> tuple[Any, bool]:
        """POST a generation with ``key``; return ``(json, replayed)``.

        Every attempt carries the same ``Idempotency-Key``, so a retry after a lost answer
        makes the server replay the task it created rather than charge again. A 429 is
        raised at once (the caller owns the slot and the wait). When retries run out and
        any attempt might have reached the server, raises :class:`SubmissionUnknownError`.
        """
        headers = {"Idempotency-Key": key}
        ambiguous = False
        attempt = 0
        while True:
            try:
                data, response_headers = await self._attempt(
                    "POST", "/v1/videos/generations", body, headers, self._timeouts.submit)
                replayed = response_headers.get("Idempotency-Replayed", "").lower() == "true"
                return data, replayed
            except RateLimitError:
                raise
            except (TransportError, ResponseDecodeError, ServerError) as exc:
                ambiguous = ambiguous or not isinstance(exc, ConnectError)
                if attempt + 1 >= self.retry.max_attempts:
                    if ambiguous:
                        raise SubmissionUnknownError(key, exc) from exc
                    raise
                wait = retry_wait(self.retry, attempt, None, self._rng)
                logger.debug("retrying a submission (same key) in %.2fs after %s", wait,
                             type(exc).__name__)
                attempt += 1
                await anyio.sleep(wait)
            except APIError as exc:
                if exc.code != "paid_outcome_unknown" or attempt + 1 >= self.retry.max_attempts:
                    raise
                ambiguous = True
                attempt += 1
                await anyio.sleep(retry_wait(self.retry, attempt, None, self._rng))


def _transient(exc: KlingError) -> bool:
    if isinstance(exc, APIError):
        return exc.status in _RETRY_STATUSES
    return True


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    declared = response.content_length
    if declared is not None and declared > MAX_BODY:
        raise ResponseDecodeError(f"answer of {declared} bytes is over the {MAX_BODY} limit")
    if declared is not None:
        return await response.read()  # bounded by the check above
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY:
            raise ResponseDecodeError(f"answer is over the {MAX_BODY}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
