"""One aiohttp session per Client: auth, timeouts, retries, Retry-After, idempotency keys.

All network errors are mapped to the kling_async tree here and nowhere else.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
import anyio.lowlevel

from ._config import RetryPolicy, Timeouts
from ._errors import (
    APIError,
    ClientClosedError,
    ConnectError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    TransportError,
    error_from_response,
    request_id_of,
)
from ._jsonbody import MAX_BODY, parse_json
from ._pacing import Pacer
from ._retry import Retrying, parse_retry_after

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
    if parts.path.rstrip("/").endswith("/v1"):
        raise ValueError(f"base_url must not end in /v1 (the SDK adds it): use "
                         f"{base_url.rstrip('/').removesuffix('/v1')!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"refusing to send the API key over plain http to {parts.hostname!r};"
                         " use https (plain http is allowed for loopback Emulators only)")
    return base_url.rstrip("/")


class Transport:
    """Requests to the API over one connection pool, retried as the request allows."""

    def __init__(self, *, base_url: str, api_key: Secret, timeouts: Timeouts,
                 retry: RetryPolicy, pacer: Pacer, max_connections: int,
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
                    read_timeout: float, before_send: Callable[[], None] | None
                    ) -> tuple[int, bytes, Mapping[str, str]]:
        session = self._session
        if session is None:
            raise ClientClosedError("the Client is closed")
        await self.pacer.acquire()
        if before_send is not None:
            before_send()  # from here on the request may reach the server
        timeout = self._socket_timeouts[read_timeout]
        self.requests_sent += 1
        with network_errors(f"{method} {path}", host=self._base,
                            stalled=f"no answer within {read_timeout:g} s",
                            closed=lambda: self._session is None):
            async with session.request(method, self._base + path, json=body, headers=headers,
                                       timeout=timeout) as response:
                data = await read_capped(response)
                return response.status, data, response.headers

    async def request(self, method: str, path: str, body: Any = None, *,
                      headers: Mapping[str, str] | None = None, paid: bool = False,
                      before_send: Callable[[], None] | None = None
                      ) -> tuple[Any, Mapping[str, str]]:
        """One attempt: the decoded JSON answer and its headers, or the mapped error.

        ``paid`` selects the submission read timeout. A 429 pauses every request of the
        client for its ``Retry-After`` (capped) before it is raised.
        """
        read_timeout = self._timeouts.submit if paid else self._timeouts.read
        status, data, response_headers = await self._send(
            method, path, body, headers or {}, read_timeout, before_send)
        if status >= 400:
            retry_after = parse_retry_after(response_headers.get("Retry-After"))
            error = error_from_response(status, data, response_headers, retry_after)
            if isinstance(error, RateLimitError):
                self.pacer.pause(min(retry_after if retry_after is not None
                                     else self.retry.backoff_base, self.retry.retry_after_max))
            raise error
        try:
            return parse_json(data), response_headers
        except ValueError as exc:
            raise ResponseDecodeError(f"{method} {path}: answer is not readable JSON ({exc})",
                                      excerpt=data[:200].decode("utf-8", "replace")) from exc

    # -- reads ----------------------------------------------------------------------------

    async def read(self, method: str, path: str, body: Any = None
                   ) -> tuple[Any, str | None]:
        """A read (GET, or the batch read's POST), retried on transient failures: the
        decoded answer and its request id."""
        async for attempt in Retrying(self.retry, self._rng, what=f"{method} {path}",
                                      retry_on=transient):
            with attempt:
                data, headers = await self.request(method, path, body)
                return data, request_id_of(headers)
        raise AssertionError("unreachable: Retrying either returns or raises")

    async def get_task(self, task_id: str) -> tuple[Any, str | None]:
        """``GET /v1/tasks/{task_id}``: the task object and the answer's request id."""
        return await self.read("GET", f"/v1/tasks/{quote(task_id, safe='')}")


@contextmanager
def network_errors(what: str, *, host: str, stalled: str,
                   closed: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """The one mapping of aiohttp and socket errors to the kling_async tree, for the API,
    downloads and uploads: ``what`` names the exchange, ``host`` where it went,
    ``stalled`` what a read timeout means for it; ``closed`` says whether the Client
    closed under it (then :class:`ClientClosedError`)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise ConnectError(f"timed out connecting to {host}") from exc
    except TimeoutError as exc:
        raise RequestTimeoutError(f"{what}: {stalled}") from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectError(f"cannot connect to {host}: {exc.os_error}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        if closed():
            raise ClientClosedError(f"the Client closed during {what}") from exc
        raise TransportError(f"{what}: {type(exc).__name__}: {exc}") from exc


def transient(exc: Exception) -> bool:
    """A read failure worth another attempt: network trouble, garbage, 429 or 5xx."""
    if isinstance(exc, APIError):
        return exc.status in _RETRY_STATUSES
    return isinstance(exc, (TransportError, ResponseDecodeError))


async def read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The body of ``response``, refused (ResponseDecodeError) past ``MAX_BODY`` bytes."""
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
