"""The Emulator's bookkeeping: accounts, credits, tasks, idempotency keys and statistics.

Pure state, no HTTP: the server module turns requests into calls on :class:`World`.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import math
import random
import string
import weakref
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import attrs

from ._clock import EmulatorClock
from ._family import price_of, seconds_of
from ._timeline import Timeline, make_timeline

FAILURE_MESSAGES = {
    "content_policy_violation": "Content policy violation.\nYour request was blocked by "
                                "safety filters.",
    "invalid_parameters": "Invalid parameters.\nPrompt is too long",
    "generation_failed_no_content": "The model returned no content. Try a clearer prompt.",
    "service_error": "Upstream service error. Please retry in 30-60 seconds.",
    "generation_timeout": "Generation exceeded the allowed time. Please retry later.",
    "resource_exhausted": "Upstream capacity is exhausted. Please wait 1-5 minutes.",
    "quota_exceeded": "Rate, concurrency or quota limit exceeded while the task ran.",
    "service_unavailable": "Service unavailable. Please retry in a few minutes.",
    "request_cancelled": "The task was cancelled.",
    "unknown_error": "Unknown error. Please retry or contact support.",
}


@attrs.define
class Account:
    """One API key's account: its credits, limits and allowed models."""

    key: str
    balance: float
    max_concurrent_tasks: int | None = None
    requests_per_second: float | None = None
    models: frozenset[str] | None = None
    reserved: float = 0.0
    used: float = 0.0
    tokens: float = 0.0
    refilled_at: float = -1.0
    unfinished: int = 0


@attrs.define
class EmuTask:
    """One generation task as the server sees it."""

    id: str
    key: str
    model: str
    created_unix: int
    created_at: float
    timeline: Timeline
    estimated_time: int
    video_duration: int
    credits: float
    callback_url: str | None
    settled: bool = False
    ended_at: float | None = None

    @property
    def ends_at(self) -> float:
        """API time at which the task reaches its terminal state."""
        return self.created_at + self.timeline.total


@attrs.frozen
class Statistics:
    """A snapshot of what the Emulator has seen. Counters only ever grow until reset.

    ``bad_signatures`` counts result-file requests whose presigned query string was
    altered on the way (403); ``min_read_gap`` is the shortest real time between two
    reads (GET or batch) of one task, None until a task was read twice.
    """

    requests: Mapping[tuple[str, int], int]
    connections: int
    peak_connections: int
    tasks_created: int
    peak_in_flight: Mapping[str, int]
    in_flight: Mapping[str, int]
    tasks_per_idempotency_key: Mapping[str, int]
    tasks_per_body: Mapping[str, int]
    replays: int
    callbacks_sent: int
    callbacks_failed: int
    callbacks_undeliverable: int
    file_bytes_sent: int
    file_requests_with_key: int
    bad_signatures: int = 0
    min_read_gap: float | None = None

    def count(self, route: str, status: int | None = None) -> int:
        """Requests seen on ``route`` (optionally only those answered with ``status``)."""
        return sum(n for (r, s), n in self.requests.items()
                   if r == route and (status is None or s == status))

    @property
    def duplicate_bodies(self) -> int:
        """Tasks created beyond the first for an identical request body."""
        return sum(n - 1 for n in self.tasks_per_body.values() if n > 1)


def presigned_query(task_id: str) -> str:
    """The query string of a result link, shaped like a CDN's presigned URL: its
    signature is percent-encoded base64 (``%2F``, ``%2B``) and must come back unchanged."""
    digest = base64.b64encode(hashlib.sha256(task_id.encode()).digest()).decode()
    return f"Expires=86400&Signature={quote('v1/' + digest, safe='')}"


def body_digest(body: Mapping[str, Any]) -> str:
    """A stable digest of a request body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class World:
    """Accounts, tasks and counters, advanced by the Emulator's clock."""

    def __init__(self, clock: EmulatorClock, rng: random.Random, *, estimated_time: float,
                 duration_spread: float, failure_rate: float, duration_factor: float = 1.0,
                 failure_codes: tuple[str, ...], progress_ceiling: int | None = None) -> None:
        self.clock = clock
        self.rng = rng
        self.estimated_time = estimated_time
        self.duration_spread = duration_spread
        self.duration_factor = duration_factor
        self.progress_ceiling = progress_ceiling
        self.failure_rate = failure_rate
        self.failure_codes = failure_codes
        self.accounts: dict[str, Account] = {}
        self.tasks: dict[str, EmuTask] = {}
        self.idempotency: dict[tuple[str, str], tuple[str, str]] = {}
        self.scripted_failures: list[str] = []
        self.uploads: dict[str, bytes] = {}
        self.upload_requests: list[dict[str, list[str]]] = []  # header names, body keys
        self._ends: list[tuple[float, str]] = []
        self.reset_statistics()

    def reset_statistics(self) -> None:
        """Zero every counter (tasks and balances are kept)."""
        self.requests: Counter[tuple[str, int]] = Counter()
        self.peers: set[object] = set()
        self.transports: weakref.WeakSet[Any] = weakref.WeakSet()
        self.peak_connections = 0
        self.tasks_created = 0
        self.peak: Counter[str] = Counter()
        self.per_key: Counter[str] = Counter()
        self.per_body: Counter[str] = Counter()
        self.replays = 0
        self.file_bytes_sent = 0
        self.file_requests_with_key = 0
        self.bad_signatures = 0
        self.last_read: dict[str, float] = {}
        self.min_read_gap: float | None = None

    def statistics(self) -> Statistics:
        """Freeze the counters into a :class:`Statistics`."""
        self.settle_due()
        return Statistics(
            requests=dict(self.requests), connections=len(self.peers),
            peak_connections=self.peak_connections,
            tasks_created=self.tasks_created, peak_in_flight=dict(self.peak),
            in_flight={k: a.unfinished for k, a in self.accounts.items()},
            tasks_per_idempotency_key=dict(self.per_key), tasks_per_body=dict(self.per_body),
            replays=self.replays, callbacks_sent=0, callbacks_failed=0,
            callbacks_undeliverable=0, file_bytes_sent=self.file_bytes_sent,
            file_requests_with_key=self.file_requests_with_key,
            bad_signatures=self.bad_signatures, min_read_gap=self.min_read_gap)

    def note_read(self, task_id: str, real_now: float) -> None:
        """A read of ``task_id`` arrived (GET or batch): track the closest two reads."""
        previous = self.last_read.get(task_id)
        self.last_read[task_id] = real_now
        if previous is not None:
            gap = real_now - previous
            if self.min_read_gap is None or gap < self.min_read_gap:
                self.min_read_gap = gap

    # -- limits ---------------------------------------------------------------------------

    def take_rate_token(self, account: Account, real_now: float) -> float | None:
        """Spend one request token; return seconds to wait when none is left."""
        rate = account.requests_per_second
        if rate is None:
            return None
        if account.refilled_at < 0:
            account.tokens, account.refilled_at = rate, real_now
        account.tokens = min(rate, account.tokens + (real_now - account.refilled_at) * rate)
        account.refilled_at = real_now
        if account.tokens >= 1.0:
            account.tokens -= 1.0
            return None
        return (1.0 - account.tokens) / rate

    # -- tasks ----------------------------------------------------------------------------

    def new_task_id(self) -> str:
        """Return an id of the documented shape ``task-unified-<unix>-<8 chars>``."""
        alphabet = string.ascii_lowercase + string.digits
        while True:
            suffix = "".join(self.rng.choice(alphabet) for _ in range(8))
            task_id = f"task-unified-{self.clock.unix()}-{suffix}"
            if task_id not in self.tasks:
                return task_id

    def price(self, body: Mapping[str, Any]) -> float:
        """Credits reserved for ``body`` at the published per-second prices."""
        return price_of(dict(body))

    def create(self, account: Account, body: Mapping[str, Any], digest: str,
               idempotency_key: str | None) -> EmuTask:
        """Reserve credits and start a task (limits were checked by the caller)."""
        failure: str | None = None
        if self.scripted_failures:
            failure = self.scripted_failures.pop(0)
        elif self.failure_rate and self.rng.random() < self.failure_rate:
            failure = self.rng.choice(self.failure_codes)
        now = self.clock.now()
        duration = seconds_of(dict(body))
        task = EmuTask(
            id=self.new_task_id(), key=account.key, model=str(body["model"]),
            created_unix=self.clock.unix(), created_at=now,
            timeline=make_timeline(self.rng, self.estimated_time * self.duration_factor,
                                   spread=self.duration_spread, failure_code=failure,
                                   progress_ceiling=self.progress_ceiling),
            estimated_time=math.ceil(self.estimated_time), video_duration=duration,
            credits=self.price(body), callback_url=body.get("callback_url"))
        self.tasks[task.id] = task
        heapq.heappush(self._ends, (task.ends_at, task.id))
        account.balance -= task.credits
        account.reserved += task.credits
        account.unfinished += 1
        self.peak[account.key] = max(self.peak[account.key], account.unfinished)
        self.tasks_created += 1
        self.per_body[digest] += 1
        if idempotency_key is not None:
            self.per_key[idempotency_key] += 1
            self.idempotency[(account.key, idempotency_key)] = (digest, task.id)
        return task

    def finish(self, task_id: str, failure_code: str | None = None) -> None:
        """End a task now, completed or failed with ``failure_code``."""
        task = self.tasks[task_id]
        if task.settled:
            raise ValueError(f"task {task_id} has already ended")
        elapsed = max(self.clock.now() - task.created_at, 0.0)
        steps = tuple((t, p) for t, p in task.timeline.steps if t <= elapsed)
        task.timeline = attrs.evolve(task.timeline, total=elapsed, steps=steps,
                                     failure_code=failure_code)
        heapq.heappush(self._ends, (task.ends_at, task.id))

    def settle_due(self) -> list[EmuTask]:
        """Settle every task whose end has passed; return them (callbacks go out next)."""
        now = self.clock.now()
        ended: list[EmuTask] = []
        while self._ends and self._ends[0][0] <= now:
            ends_at, task_id = heapq.heappop(self._ends)
            task = self.tasks[task_id]
            if task.settled or ends_at != task.ends_at:
                continue
            task.settled, task.ended_at = True, task.ends_at
            account = self.accounts[task.key]
            account.reserved -= task.credits
            account.unfinished -= 1
            if task.timeline.failure_code is None:
                account.used += task.credits
            else:
                account.balance += task.credits
            ended.append(task)
        return ended

    def snapshot(self, task: EmuTask, base_url: str) -> dict[str, Any]:
        """The task's JSON as ``GET /v1/tasks/{id}`` answers it now."""
        status, progress = task.timeline.status_at(self.clock.now() - task.created_at)
        info: dict[str, Any] = {"can_cancel": status in ("pending", "processing")}
        if status == "pending":
            info["estimated_time"] = task.estimated_time
            info["video_duration"] = task.video_duration
        usage: dict[str, Any] = {"billing_rule": "per_second",
                                 "credits_reserved": task.credits, "user_group": "default"}
        data: dict[str, Any] = {
            "created": task.created_unix, "id": task.id, "model": task.model,
            "object": "video.generation.task", "progress": progress, "status": status,
            "task_info": info, "type": "video", "usage": usage,
        }
        if status == "completed":
            data["results"] = [f"{base_url}/files/{task.id}.mp4?{presigned_query(task.id)}"]
            usage["credits_used"] = task.credits
        elif status == "failed":
            code = task.timeline.failure_code or "unknown_error"
            data["error"] = {"code": code, "message": FAILURE_MESSAGES.get(code, code),
                             "type": "task_error"}
            usage["credits_used"] = 0
        return data

    def created_snapshot(self, task: EmuTask) -> dict[str, Any]:
        """The create call's answer: always pending at 0 % with the estimate."""
        return {
            "created": task.created_unix, "id": task.id, "model": task.model,
            "object": "video.generation.task", "progress": 0, "status": "pending",
            "task_info": {"can_cancel": True, "estimated_time": task.estimated_time,
                          "video_duration": task.video_duration},
            "type": "video",
            "usage": {"billing_rule": "per_second", "credits_reserved": task.credits,
                      "user_group": "default"},
        }
