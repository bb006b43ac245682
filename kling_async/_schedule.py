"""When to read a task next: rarely early, often near its predicted end."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ._config import PollPolicy

EARLY_SHARE = 0.8  # real durations spread about ±20 % around the estimate
STEP_SHARE = 0.5   # each read waits half of the time left to the earliest plausible end


def predicted_remaining(policy: PollPolicy, *, elapsed: float, estimate: float | None,
                        samples: Sequence[tuple[float, int]], now: float) -> float:
    """Seconds until the earliest plausible completion of a task.

    Two predictions, the sooner wins: the server's ``estimated_time`` (scaled, shrunk to
    its early edge), and the progress rate observed since the task first moved.
    """
    total = (estimate if estimate is not None else policy.default_estimate) / policy.time_scale
    by_estimate = total * EARLY_SHARE - elapsed
    moving = [(t, p) for t, p in samples if p > 0]
    if len(moving) >= 2:
        (t0, p0), (t1, p1) = moving[0], moving[-1]
        if p1 > p0 and t1 > t0:
            rate = (p1 - p0) / (t1 - t0)
            by_rate = (100 - p1) / rate - (now - t1)
            return max(min(by_estimate, by_rate * EARLY_SHARE), 0.0)
    return max(by_estimate, 0.0)


def next_delay(policy: PollPolicy, remaining: float, rng: random.Random) -> float:
    """The wait before the next read, given the predicted time left, with jitter."""
    delay = min(max(remaining * STEP_SHARE, policy.min_interval), policy.max_interval)
    if policy.jitter:
        delay *= 1.0 + rng.uniform(-policy.jitter, policy.jitter)
    return delay


def error_delay(policy: PollPolicy, errors: int, rng: random.Random) -> float:
    """The wait before reading a task again after ``errors`` failed reads in a row."""
    ceiling = min(policy.min_interval * (2 ** min(errors, 16)), policy.max_interval)
    return rng.uniform(ceiling / 2, ceiling)
