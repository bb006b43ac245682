"""Response-side value classes: what the server told us. Data only, no wire knowledge."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs


class TaskStatus(enum.Enum):
    """Where a task is in its life. ``UNKNOWN`` stands for a value this SDK does not know.

    An unknown status is never a crash: it counts as not finished, and the raw string is
    kept in :attr:`TaskSnapshot.raw_status`.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """True for ``COMPLETED`` and ``FAILED``: the task will not change again."""
        # Module constants, not TaskStatus.X: a member looked up on an enum class costs
        # about 0.1 us on Python 3.11, and this is asked several times per reading.
        return self is _COMPLETED or self is _FAILED


_COMPLETED, _FAILED = TaskStatus.COMPLETED, TaskStatus.FAILED


@attrs.frozen(kw_only=True)
class TaskError:
    """Why a task failed, as the server reported it.

    Attributes:
        code: the business code, e.g. ``"content_policy_violation"`` (integers on the
            wire become strings).
        message: text for a person; may contain newlines.
        type: the error type, ``"task_error"`` for failed tasks.
    """

    code: str = "unknown_error"
    message: str = ""
    type: str | None = None


@attrs.frozen(kw_only=True, cache_hash=True)  # hashed per reading (see _entry)
class Usage:
    """Credits reserved at submission and, once settled, used (0 after a failure)."""

    billing_rule: str | None = None
    credits_reserved: float | None = None
    credits_used: float | None = None
    user_group: str | None = None


@attrs.frozen(kw_only=True)
class TaskSnapshot:
    """One reading of a task. Built by the SDK from a server answer; do not construct.

    Attributes:
        id: the task id, ``task-unified-...``.
        model: the model that runs it.
        status: the :class:`TaskStatus`.
        progress: percent done, clamped to 0-100.
        created: creation time (UTC).
        results: result video URLs (valid for 24 hours after completion).
        error: the :class:`TaskError` of a failed task.
        estimated_time: the server's estimate of seconds to completion, when given.
        video_duration: seconds of video ordered, when given.
        can_cancel: whether the server says the task can still be cancelled.
        usage: the credits of this task.
        raw_status: the status string exactly as received.
        request_id: the server's id of the answer this reading came from (``None`` for
            a callback or a journal); quote it to EvoLink's support, or log it.
    """

    id: str
    model: str = ""
    status: TaskStatus
    progress: int = 0
    created: datetime | None = None
    results: tuple[str, ...] = ()
    error: TaskError | None = None
    estimated_time: float | None = None
    video_duration: int | None = None
    can_cancel: bool | None = None
    usage: Usage | None = None
    raw_status: str = ""
    request_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the task is completed or failed."""
        return self.status.is_terminal

    @property
    def video_url(self) -> str | None:
        """The first result URL, or None while there is none."""
        return self.results[0] if self.results else None


@attrs.frozen(kw_only=True)
class Credits:
    """The answer of ``GET /v1/credits``.

    Attributes:
        remaining: credits this API key may still spend.
        used: credits this API key has spent.
        unlimited: True when the key has no credit limit of its own.
        account_remaining / account_used: the same for the whole account, when given.
    """

    remaining: float
    used: float
    unlimited: bool = False
    account_remaining: float | None = None
    account_used: float | None = None
