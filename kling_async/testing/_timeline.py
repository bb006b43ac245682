"""Realistic task timelines: a queue wait at 0 %, uneven steps, a plateau in the 90s."""

from __future__ import annotations

import random

import attrs


@attrs.frozen
class Timeline:
    """When a task starts, how its progress moves, and when (and how) it ends.

    All times are API seconds relative to the task's creation.
    """

    queue_wait: float
    total: float
    steps: tuple[tuple[float, int], ...]
    failure_code: str | None = None

    def status_at(self, elapsed: float) -> tuple[str, int]:
        """Return ``(status, progress)`` at ``elapsed`` API seconds after creation."""
        if elapsed >= self.total:
            if self.failure_code is not None:
                return "failed", self.progress_at(self.total)
            return "completed", 100
        if elapsed < self.queue_wait:
            return "pending", 0
        return "processing", self.progress_at(elapsed)

    def progress_at(self, elapsed: float) -> int:
        """Return the last progress step reached at ``elapsed``."""
        progress = 0
        for at, value in self.steps:
            if at > elapsed:
                break
            progress = value
        return progress


def make_timeline(
    rng: random.Random,
    estimated_time: float,
    *,
    spread: float = 0.2,
    failure_code: str | None = None,
    progress_ceiling: int | None = None,
) -> Timeline:
    """Draw one task's timeline around ``estimated_time``.

    The real duration is uniform in ``estimated_time * (1 ± spread)``. The task waits in
    the queue at 0 % for 3-12 % of it, climbs in uneven steps to about 90 %, then creeps
    through the 90s until it completes. With a ``progress_ceiling``, its progress climbs
    steadily over the whole run to that percent instead, and it completes from there (the
    real API has been seen to jump from 70 % to done). A failing task stops early,
    somewhere in the run.
    """
    total = estimated_time * rng.uniform(1.0 - spread, 1.0 + spread)
    queue_wait = total * rng.uniform(0.03, 0.12)
    steps: list[tuple[float, int]] = []
    at, progress = queue_wait, 0
    if progress_ceiling is not None:  # a steady climb to the ceiling, then done
        while (at := at + rng.uniform(0.02, 0.09) * total) < total:
            steps.append((at, round(progress_ceiling * (at - queue_wait)
                                    / (total - queue_wait))))
    else:
        plateau_start = total * rng.uniform(0.78, 0.88)
        while (at := at + rng.uniform(0.02, 0.09) * total) < plateau_start:
            progress = min(89, progress + rng.randint(3, 14))
            steps.append((at, progress))
        at, progress = plateau_start, max(progress, 90)
        steps.append((at, progress))
        while progress < 99:
            at += rng.uniform(0.02, 0.05) * total
            if at >= total:
                break
            progress += rng.randint(1, 3)
            steps.append((at, min(progress, 99)))
    if failure_code is not None:
        total = queue_wait + (total - queue_wait) * rng.uniform(0.2, 0.9)
        steps = [(t, p) for t, p in steps if t < total]
    return Timeline(queue_wait=queue_wait, total=total, steps=tuple(steps),
                    failure_code=failure_code)
