"""When to read a task next: rarely early, often near its predicted end."""

from __future__ import annotations

import heapq
import random

import anyio

from ._config import PollPolicy
from ._durations import Spread

PROGRESS_MARGIN = 0.95  # pace-based ends are shaded early: progress is rarely linear
MIN_PROGRESS = 10       # below this, progress says too little about the end
FINAL_PHASE = 90        # from here on, the task is finishing: read by what is left
FINAL_SHARE = 0.5       # ...aiming at half of the expected time for the remaining percent
STEP_SHARE = 0.5        # after a pace-based prediction, wait half of the time left


def scaled_total(policy: PollPolicy, estimate: float | None) -> float:
    """The server's estimate (or the policy's default) in this client's seconds."""
    return (estimate if estimate is not None else policy.default_estimate) / policy.time_scale


def pace_margin(spread: Spread, progress: int) -> float:
    """How far to shade the end a reading at ``progress`` implies by its pace: the fixed
    margin, or what tasks of the kind that ended from the nearest learnt stage under the
    final phase taught (at or below this one first), if more careful (learning never
    makes the schedule bolder than the margin)."""
    stage = spread.learnt_stage(progress, FINAL_PHASE)
    return (stage.early if stage is not None and stage.early < PROGRESS_MARGIN
            else PROGRESS_MARGIN)  # min() without its call: this runs per reading


def final_ends(spread: Spread, final_seen: tuple[int, float] | None
               ) -> tuple[float, float] | None:
    """The earliest and latest ends (seconds since first seen) of a task first seen in
    the final phase at ``final_seen`` (that percent, and when), as tasks of its kind
    first seen there at that percent ended; None until that is learnt."""
    if final_seen is None:
        return None
    progress, since = final_seen
    final = spread.learnt_final(progress)
    return None if final is None else (final.early * since, final.late * since)


def predicted_remaining(policy: PollPolicy, *, elapsed: float, estimate: float | None,
                        progress: int, spread: Spread,
                        final_seen: tuple[int, float] | None = None) -> tuple[float, float]:
    """Seconds until a task might plausibly finish, and the share of them to wait now.

    Before anything says otherwise, the earliest plausible end is the early edge of the
    server's ``estimated_time`` (scaled), at the share of it that ``spread`` has learnt
    for this kind of task: nothing is learnt by reading sooner, so the whole way is
    waited (share 1), in steps of at most ``max_interval``, the failure-detection
    budget. Once progress says more: below 90 %, the later of that edge and the end the
    average pace implies, shaded by :func:`pace_margin` (a pace-based end is uncertain:
    wait half of it); from 90 %, once tasks of the kind first seen in the final phase
    at the same percent are learnt (``final_seen``: that percent and the elapsed time
    when it was seen), the whole way to the earliest end they had, then every
    ``min_interval`` until the latest (a task may end from any point in the 90s);
    before that is learnt, or past the latest end, half of the remaining percent of the
    expected duration, so reads tighten as the task closes in on 100 %. A task that
    says nothing of its progress and is past the late edge (later than every task of
    its kind seen) is read less and less often.
    """
    total = scaled_total(policy, estimate)
    early_edge = total * spread.early - elapsed
    if early_edge < 0.0:  # (not max(): this runs for every reading)
        early_edge = 0.0
    if progress < MIN_PROGRESS or elapsed <= 0:
        overdue = elapsed - total * spread.late
        return (overdue, STEP_SHARE) if overdue > 0 else (early_edge, 1.0)
    pace_total = elapsed * 100.0 / progress
    if progress >= FINAL_PHASE:
        ends = final_ends(spread, final_seen)
        if ends is not None and elapsed < ends[1]:  # to the earliest, then min_interval
            return max(ends[0] - elapsed, 0.0), 1.0
        expected = max(total * spread.early, pace_total)
        return (100 - progress) / 100.0 * expected * FINAL_SHARE, STEP_SHARE
    by_pace = pace_total * pace_margin(spread, progress) - elapsed
    if early_edge >= by_pace:
        return early_edge, 1.0
    return by_pace, STEP_SHARE


def next_delay(policy: PollPolicy, remaining: float, share: float,
               rng: random.Random) -> float:
    """The wait before the next read: ``share`` of the predicted time left, between
    ``min_interval`` and ``max_interval``, with jitter."""
    delay = remaining * share  # clamped without min()/max() calls: this runs per reading
    if delay < policy.min_interval:
        delay = policy.min_interval
    elif delay > policy.max_interval:
        delay = policy.max_interval
    jitter = policy.jitter
    if jitter:  # never past a point the whole way was waited for (uniform(), inline)
        delay *= 1.0 + (-jitter + ((jitter if share < 1 else 0.0) + jitter) * rng.random())
    return delay


def error_delay(policy: PollPolicy, errors: int, rng: random.Random) -> float:
    """The wait before reading a task again after ``errors`` failed reads in a row."""
    ceiling = min(policy.min_interval * (2 ** min(errors, 16)), policy.max_interval)
    return rng.uniform(ceiling / 2, ceiling)


class Timetable:
    """Due times of task ids: a heap, and a wake-up when an earlier one is added.

    Items are ``(when, seq, task_id)``; the owner keeps each id's current ``seq`` and
    ignores popped items whose ``seq`` is stale (rescheduling never searches the heap).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._wake = anyio.Event()
        self._timekeeper = False  # a sleeper waits with the timeout

    def add(self, when: float, seq: int, task_id: str) -> None:
        """Schedule ``task_id`` at ``when``; wake the sleeper if it is now the earliest."""
        item = (when, seq, task_id)
        heapq.heappush(self._heap, item)
        if self._heap[0] is item:
            self._wake.set()

    def add_many(self, items: list[tuple[float, int, str]]) -> None:
        """Schedule several ``(when, seq, task_id)`` items at once."""
        heap = self._heap
        first = heap[0] if heap else None
        for item in items:
            heapq.heappush(heap, item)
        if heap and heap[0] is not first:
            self._wake.set()

    def wake(self) -> None:
        """Wake the sleepers (there is work besides due items)."""
        self._wake.set()

    def pop_until(self, horizon: float) -> tuple[float, int, str] | None:
        """The earliest item due by ``horizon``, removed; None if there is none."""
        if self._heap and self._heap[0][0] <= horizon:
            return heapq.heappop(self._heap)
        return None

    def put_back(self, item: tuple[float, int, str]) -> None:
        """Return an item popped but not used."""
        heapq.heappush(self._heap, item)

    async def wait(self) -> None:
        """Sleep until the earliest item is due, or an earlier one is added (every
        sleeper wakes: they share one event).

        One sleeper at a time keeps the time, and sets the event for the others when it
        is up: a timed wait is a cancel scope whose expiry is a cancellation (the costly
        part of a wake-up), so the other sleepers wait on the event alone."""
        if self._wake.is_set():
            self._wake = anyio.Event()
        wake = self._wake
        if self._timekeeper:
            await wake.wait()
            return
        wait = self._heap[0][0] - anyio.current_time() if self._heap else 3600.0
        self._timekeeper = True
        try:
            with anyio.move_on_after(max(wait, 0.0)):
                await wake.wait()
        finally:
            self._timekeeper = False
            wake.set()  # its time came, or it left: the others look again (one of
            self._wake.set()  # them keeps the time next), also any who came meanwhile
