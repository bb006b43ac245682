"""The one retry mechanism: attempts, backoff with full jitter, ``Retry-After`` and 429s.

Every retried operation (reads, the paid submission, downloads) runs as::

    async for attempt in Retrying(policy, rng, what="GET /v1/tasks/x", retry_on=transient):
        with attempt:
            return await send_once()

An exception leaving ``with attempt`` is retried when ``retry_on`` accepts it and attempts
remain (after a backoff, or the server's ``Retry-After``), and re-raised otherwise.
With ``patient_with_429``, 429 answers do not use up attempts: they are retried for up to
``RetryPolicy.rate_limit_patience`` seconds from the first one, each wait logged.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

import anyio

from ._config import RetryPolicy
from ._errors import RateLimitError

logger = logging.getLogger("kling_async")


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Full-jitter exponential backoff for retry number ``attempt`` (0-based)."""
    ceiling = min(policy.backoff_max, policy.backoff_base * (2 ** min(attempt, 30)))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
        return None
    return max(seconds, 0.0)


def retry_wait(policy: RetryPolicy, attempt: int, retry_after: float | None,
               rng: random.Random) -> float:
    """How long to wait before the next attempt: the server's word when given (capped)."""
    if retry_after is not None:
        return min(retry_after, policy.retry_after_max)
    return backoff_delay(policy, attempt, rng)


class Retrying:
    """The attempts of one operation; iterate it and run each attempt in ``with``."""

    def __init__(self, policy: RetryPolicy, rng: random.Random, *, what: str,
                 retry_on: Callable[[Exception], bool], patient_with_429: bool = False) -> None:
        self._policy = policy
        self._rng = rng
        self._what = what
        self._retry_on = retry_on
        self._patient = patient_with_429
        self._wait: float | None = None  # set while a retry is owed
        self._finished = False
        self._first_429: float | None = None
        self.failures = 0      # failed attempts that used up the attempt budget
        self.rate_limited = 0  # 429 answers met (patient mode)

    def __aiter__(self) -> Retrying:
        return self

    async def __anext__(self) -> _Attempt:
        if self._finished:
            raise StopAsyncIteration
        if self._wait is not None:
            wait, self._wait = self._wait, None
            await anyio.sleep(wait)
        self._finished = True  # unless the attempt fails in a way worth retrying
        return _Attempt(self)

    def _decide(self, exc: Exception) -> bool:
        """True (and a wait set) if ``exc`` is retried."""
        policy = self._policy
        if self._patient and isinstance(exc, RateLimitError):
            now = anyio.current_time()
            if self._first_429 is None:
                self._first_429 = now
            if now - self._first_429 >= policy.rate_limit_patience:
                logger.warning("%s: still rate limited (429) after %.0f s; giving up",
                               self._what, now - self._first_429)
                return False
            self.rate_limited += 1
            wait = retry_wait(policy, min(self.rate_limited - 1, 6), exc.retry_after, self._rng)
            logger.info("%s: rate limited (429), the account is busy; retrying in %.2f s "
                        "(429 number %d; giving up %.0f s after the first)", self._what, wait,
                        self.rate_limited, policy.rate_limit_patience)
        else:
            if not self._retry_on(exc) or self.failures + 1 >= policy.max_attempts:
                return False
            wait = retry_wait(policy, self.failures, getattr(exc, "retry_after", None),
                              self._rng)
            self.failures += 1
            logger.debug("%s: %s; retrying in %.2f s (attempt %d of %d)", self._what,
                         type(exc).__name__, wait, self.failures + 1, policy.max_attempts)
        self._wait = wait
        self._finished = False
        return True


class _Attempt:
    """One attempt: a failure that may be retried is swallowed by ``__exit__``."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Retrying) -> None:
        self._owner = owner

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not isinstance(exc, Exception):
            return False  # success, or cancellation and the like: never retried
        return self._owner._decide(exc)
