"""What a batch takes and gives: :class:`Item` in, four kinds of event out."""

from __future__ import annotations

from pathlib import Path

import attrs

from ._errors import KlingError
from ._models import TaskSnapshot, TaskStatus
from ._requests import REQUEST_TYPES, VideoRequest

MAX_KEY = 256


def _check_key(_: object, __: attrs.Attribute[str | None], key: object) -> None:
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY):
        raise ValueError(f"Item.key must be a string of 1-{MAX_KEY} characters; got {key!r}")


@attrs.frozen
class Item:
    """A request with your own identifier (a SKU, a row id), for ``generate_many``.

    Every event of the request carries ``key``, and the journal keeps it. Two items of
    one batch may share a key; the key is part of what a journal checks on resume.

    Attributes:
        request: the request.
        key: your identifier, 1-256 characters.
    """

    request: VideoRequest = attrs.field(validator=attrs.validators.instance_of(REQUEST_TYPES))
    key: str | None = attrs.field(default=None, validator=_check_key)


@attrs.frozen(kw_only=True)
class Submitted:
    """Request ``index`` was accepted as task ``task_id``; ``resumed`` when the task was
    re-attached from a journal (paid in an earlier run, not now). ``snapshot`` is its
    latest reading; ``key`` the item's own key, if it has one."""

    index: int
    task_id: str
    snapshot: TaskSnapshot
    resumed: bool = False
    key: str | None = None


@attrs.frozen(kw_only=True)
class Progressed:
    """Task of request ``index`` changed status or progress."""

    index: int
    task_id: str
    status: TaskStatus
    progress: int
    snapshot: TaskSnapshot
    key: str | None = None


@attrs.frozen(kw_only=True)
class Succeeded:
    """Request ``index`` finished; ``snapshot.results`` holds the video URL(s), and
    ``path`` the downloaded file when ``download_to`` was given."""

    index: int
    task_id: str
    snapshot: TaskSnapshot
    path: Path | None = None
    key: str | None = None


@attrs.frozen(kw_only=True)
class Failed:
    """Request ``index`` ended without a video.

    ``error`` says why: a :class:`TaskFailedError` for a failed task, the API error for
    a refused submission, :class:`SubmissionUnknownError` (with its key) when the
    submission's outcome could not be settled, or a :class:`DownloadError`.
    ``task_id`` is None if no task exists.
    """

    index: int
    error: KlingError
    task_id: str | None = None
    snapshot: TaskSnapshot | None = None
    key: str | None = None


BatchEvent = Submitted | Progressed | Succeeded | Failed
