"""``RedisBudget``: one account's slots, request budget, adaptive limit and pauses, shared
on Redis by every Client (in any process, on any host) that names the same budget.

This module imports redis-py only when a budget is built; without one nothing here is
loaded. The shared state and its scripts are described in ``_redis_lua``; the admission
that uses them is ``_shared_slots.SharedSlots``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import attrs

from ._pacing import RequestPacer
from ._redis_lua import HAND_OVER, KEY_NAMES, PACE, SYNC

if TYPE_CHECKING:
    import redis.asyncio

logger = logging.getLogger("kling_async")

_SCHEMES = ("redis", "rediss", "unix")


def _import_redis() -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:
        raise ImportError("RedisBudget needs redis-py: pip install 'kling-async[redis]'"
                          ) from exc
    return redis.asyncio


def redacted(url: str) -> str:
    """``url`` without its password (for logs and reprs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _check_url(_: object, __: object, url: Any) -> None:
    scheme = urlsplit(url).scheme if isinstance(url, str) else None
    if scheme not in _SCHEMES:
        raise ValueError(f"RedisBudget url must start with redis://, rediss:// or unix://, "
                         f"got {redacted(url) if isinstance(url, str) else url!r}")


def _check_name(_: object, __: object, name: Any) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or any(
            c in name for c in "{}\r\n"):
        raise ValueError(f"RedisBudget name must be 1-100 characters without braces or "
                         f"line breaks, got {name!r}")


def _check_lease(_: object, __: object, lease: Any) -> None:
    number = isinstance(lease, int | float) and not isinstance(lease, bool)
    if not (number and 1.0 <= lease <= 3600.0):
        raise ValueError(f"RedisBudget lease must be between 1 and 3600 seconds, got {lease!r}")


@attrs.frozen(repr=False)
class RedisBudget:
    """Share one EvoLink account's limits between every Client that names this budget.

    Pass it as ``kling.Client(budget=kling.RedisBudget("redis://localhost:6379/0"))`` in
    every process (web workers, batch workers, cron jobs) that uses the same API key.
    ``max_in_flight`` and ``max_requests_per_second`` then mean the whole account's total,
    the adaptive limit is learnt once for all, and a ``Retry-After`` pauses everyone.

    A slot belongs to a task on the server, not to a process: whichever process follows a
    task renews its lease; if that process dies, another live Client adopts the task once
    the lease ends, reads it and keeps it counted until it ends. If Redis is unreachable,
    submissions wait for it (fail closed) while reads of submitted tasks carry on.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://`` or ``unix://``.
        name: budgets with different names are independent (one per account).
        lease: seconds after which the tasks of a process that stopped renewing them are
            adopted by another (renewed every ``lease / 3``).

    Needs ``pip install 'kling-async[redis]'``.
    """

    url: str = attrs.field(validator=_check_url)
    name: str = attrs.field(default="default", kw_only=True, validator=_check_name)
    lease: float = attrs.field(default=30.0, kw_only=True, validator=_check_lease)

    def __attrs_post_init__(self) -> None:
        _import_redis()  # a missing extra fails here, not at the first submission

    def __repr__(self) -> str:
        return f"RedisBudget({redacted(self.url)!r}, name={self.name!r}, lease={self.lease:g})"

    def keys(self) -> list[str]:
        """The Redis keys of this budget, then its channel."""
        prefix = f"kling_async:{{{self.name}}}:"
        return [prefix + k for k in (*KEY_NAMES, "events")]


class RedisLink:
    """One Client's connection to a budget: its scripts, and whether Redis answers."""

    def __init__(self, budget: RedisBudget) -> None:
        aioredis = _import_redis()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.budget = budget
        self.where = redacted(budget.url)
        # One quick retry covers a pooled connection that died with a restarted Redis;
        # longer trouble is handled (and logged) by the callers.
        self.client: redis.asyncio.Redis = aioredis.Redis.from_url(
            budget.url, socket_timeout=2.0, socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 1))
        self.errors: tuple[type[BaseException], ...] = (
            aioredis.RedisError, OSError, TimeoutError)
        keys = budget.keys()
        self.sync_keys = keys
        self.tat_key, self.channel = keys[5], keys[6]
        self.sync = self.client.register_script(SYNC)
        self.hand_over = self.client.register_script(HAND_OVER)
        self._pace = self.client.register_script(PACE)
        self.healthy = True

    def failed(self, exc: BaseException) -> None:
        """A call failed: say so once per outage."""
        if self.healthy:
            logger.warning("Redis budget at %s is unreachable (%s: %s): new submissions "
                           "wait for it; reads of submitted tasks carry on", self.where,
                           type(exc).__name__, exc)
        self.healthy = False

    def recovered(self) -> None:
        """A call succeeded."""
        if not self.healthy:
            logger.warning("Redis budget at %s is reachable again", self.where)
        self.healthy = True

    async def pace(self, interval_ms: float, tolerance_ms: float) -> float:
        """Reserve the next request of the shared token bucket: seconds to wait for it."""
        wait = await self._pace(keys=[self.tat_key], args=[interval_ms, tolerance_ms])
        return float(wait) / 1000.0

    async def aclose(self) -> None:
        """Close the connections (shielded, a few seconds at most)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(3):
            await self.client.aclose()


class SharedPacer:
    """The request budget on Redis: one token bucket (GCRA) for every process, and
    ``Retry-After`` pauses that reach every process. Falls back to this process's own
    bucket while Redis is unreachable, so reads carry on."""

    def __init__(self, link: RedisLink, rate: float | None,
                 share_pause: Any) -> None:
        self._link = link
        self._rate = rate
        self._own = RequestPacer(rate)
        self._pauses = RequestPacer(None)
        self._share_pause = share_pause
        burst = max(1, int(rate or 1))
        self._interval_ms = 1000.0 / rate if rate else 0.0
        self._tolerance_ms = (burst - 1) * self._interval_ms

    def pause(self, seconds: float) -> None:
        """Hold every request of every process sharing the budget for ``seconds``."""
        self.pause_here(seconds)
        self._share_pause(seconds)

    def pause_here(self, seconds: float) -> None:
        """Hold this process's requests (a pause announced by another process)."""
        self._pauses.pause(seconds)
        self._own.pause(seconds)

    async def acquire(self) -> None:
        """Wait for pauses and for the next request of the shared bucket."""
        if self._rate is None or not self._link.healthy:
            await self._own.acquire()
            return
        await self._pauses.acquire()
        try:
            wait = await self._link.pace(self._interval_ms, self._tolerance_ms)
        except self._link.errors as exc:
            self._link.failed(exc)
            await self._own.acquire()
            return
        if wait > 0:
            await anyio.sleep(wait)
