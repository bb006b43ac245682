"""Configuration nouns: frozen, keyword-only, validated. Derive variants with ``attrs.evolve``."""

from __future__ import annotations

import os

import attrs


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Timeouts:
    """Socket-level timeouts in seconds; deadlines for whole operations are yours
    (wrap calls in ``anyio.fail_after``).

    Attributes:
        connect: to open a connection.
        read: between bytes of an answer to a read (GET, batch read).
        submit: between bytes of an answer to a submission (the API may take a while).
    """

    connect: float = attrs.field(default=10.0, validator=_positive)
    read: float = attrs.field(default=30.0, validator=_positive)
    submit: float = attrs.field(default=60.0, validator=_positive)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How failed requests are retried: exponential backoff with full jitter.

    Attributes:
        max_attempts: attempts per request, first one included.
        backoff_base: the first backoff ceiling in seconds; it doubles per attempt.
        backoff_max: the largest backoff ceiling.
        retry_after_max: the longest ``Retry-After`` honoured; longer values are capped.
        rate_limit_patience: seconds a submission keeps retrying while the server answers
            429 (the account is full), counted from the first 429; then
            :class:`RateLimitError` is raised. 429s do not use up ``max_attempts`` of a
            submission (every wait is logged at INFO); reads count them as attempts.
        unsettled_hold: seconds the slot of a submission whose outcome stayed unknown is
            kept reserved (the task may be running on the server) unless it is settled
            sooner by submitting again with its key. Scaled by ``PollPolicy.time_scale``.
    """

    max_attempts: int = attrs.field(default=5)
    backoff_base: float = attrs.field(default=0.5, validator=_positive)
    backoff_max: float = attrs.field(default=30.0, validator=_positive)
    retry_after_max: float = attrs.field(default=60.0, validator=_positive)
    rate_limit_patience: float = attrs.field(default=600.0, validator=_positive)
    unsettled_hold: float = attrs.field(default=900.0, validator=_positive)

    @max_attempts.validator
    def _check_attempts(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_attempts must be >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class PollPolicy:
    """When the poller reads each task.

    Reads are spent where completion is likely: the next read of a task is a share of
    the time left until its earliest plausible end (from ``estimated_time`` and the
    observed progress rate), never closer than ``min_interval`` (half of it when a batch
    read that is sent anyway takes the task along) and never further than
    ``max_interval``, with ``jitter`` so reads of a batch spread out.

    Attributes:
        min_interval: seconds between reads near the predicted end (detection lag).
        max_interval: the longest gap between two reads of one task: the
            failure-detection budget, i.e. how late a task that fails early (or ends
            long before its estimate) can be noticed without callbacks. Each such
            check is a read; a longer budget spends fewer.
        jitter: +/- share of randomness applied to each interval.
        default_estimate: seconds a task is assumed to take when the server gives none.
        time_scale: divide server-reported durations by this (for an Emulator running
            faster than real time; 1.0 for the real service).
        batch_size: task ids per batch read (the API allows 50).
        max_concurrent_reads: reads in flight at once.
    """

    min_interval: float = attrs.field(default=5.0, validator=_positive)
    max_interval: float = attrs.field(default=60.0, validator=_positive)
    jitter: float = attrs.field(default=0.1, validator=_non_negative)
    default_estimate: float = attrs.field(default=300.0, validator=_positive)
    time_scale: float = attrs.field(default=1.0, validator=_positive)
    batch_size: int = attrs.field(default=50)
    max_concurrent_reads: int = attrs.field(default=4)

    @classmethod
    def scaled(cls, time_scale: float) -> PollPolicy:
        """The default policy for a server running ``time_scale`` times faster than real
        time (an Emulator); ``0`` for an Emulator whose clock moves only when told."""
        if time_scale < 0 or time_scale != time_scale:
            raise ValueError(f"time_scale must be >= 0, got {time_scale!r}")
        if time_scale == 0:
            return cls(min_interval=0.02, max_interval=0.2)
        return cls(min_interval=max(5.0 / time_scale, 0.02),
                   max_interval=max(60.0 / time_scale, 0.2), time_scale=time_scale)

    @classmethod
    def from_environment(cls) -> PollPolicy:
        """``scaled($KLING_ASYNC_TIME_SCALE)`` when that is set (an Emulator faster than
        real time prints it), else the defaults for the real service."""
        value = os.environ.get("KLING_ASYNC_TIME_SCALE")
        if not value:
            return cls()
        try:
            return cls.scaled(float(value))
        except ValueError:
            raise ValueError(f"KLING_ASYNC_TIME_SCALE must be a number >= 0, got {value!r}"
                             ) from None

    def __attrs_post_init__(self) -> None:
        if self.max_interval < self.min_interval:
            raise ValueError("max_interval must be >= min_interval")
        if not 1 <= self.batch_size <= 50:
            raise ValueError(f"batch_size must be 1-50, got {self.batch_size!r}")
        if self.max_concurrent_reads < 1:
            raise ValueError("max_concurrent_reads must be >= 1")
        if self.jitter >= 1:
            raise ValueError("jitter must be < 1")


@attrs.frozen(kw_only=True)
class AdaptiveLimit:
    """Find the account's concurrency limit instead of being told it.

    Starts at ``initial`` slots and doubles while submissions succeed. A 429 means the
    account is full: the capacity becomes what is in flight (the limit found), and it is
    probed again only rarely (one slot more per four windows of successful
    submissions; below the limit found, one per window). A 429 with fewer tasks in flight
    than at the last one (the limit shrank) sets the capacity to ``decrease`` times the
    in-flight count. Never below 1 or above ``maximum``.
    """

    initial: int = 4
    maximum: int = 64
    decrease: float = 0.9

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.initial <= self.maximum:
            raise ValueError("AdaptiveLimit needs 1 <= initial <= maximum")
        if not 0 < self.decrease < 1:
            raise ValueError("AdaptiveLimit.decrease must be between 0 and 1")
