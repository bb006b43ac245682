"""What the task registry keeps of each followed task: one ``dict`` of plain values.

Why not an object: every instance of a class is one the garbage collector tracks, and a
full collection visits it and each value it refers to. Followed tasks live for minutes
and sit wherever memory had room when they were read, so at 50,000 tasks that visit is
cache misses: an entry and its snapshot cost the collection about 2.4 us per task
(measured on 28,000 tasks after rounds of readings), and the collection stalls the event
loop for 200 ms and more. CPython stops tracking a ``dict`` that holds only strings,
numbers, booleans, None and datetimes (at the next full collection; it is tracked again
if something else is stored in it): an entry then costs that collection one visit from
the registry's table, about 0.35 us.

So an entry stores no object the collector tracks: the last reading is kept as its
values (its status by value, since an enum member is tracked; its usage figures as one
tuple shared by equal ones), the learnt spread of its kind as an index, and its
subscribers in the registry. A tuple stored in it (the fields a task's readings repeat,
the final-phase mark) tracks it again until the next full collection, so those are
stored only when they change; error objects and result URLs are only in final readings,
whose entries leave.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, TypedDict

import attrs

from ._models import TaskError, TaskSnapshot, TaskStatus, Usage

_STATUS_OF = {status.value: status for status in TaskStatus}
TERMINAL = frozenset(status.value for status in TaskStatus if status.is_terminal)
_USAGE_FIELDS = tuple(field.name for field in attrs.fields(Usage))
UsageValues = tuple[Any, ...]  # a Usage's field values, in order


@functools.lru_cache(maxsize=1024)
def _usage_values(usage: Usage) -> UsageValues:
    # One tuple per distinct usage (readings of a task repeat theirs): a new tuple is
    # tracked until the next collection, and storing it would track its entry again.
    return tuple(getattr(usage, name) for name in _USAGE_FIELDS)


@functools.lru_cache(maxsize=1024)
def _usage_of(values: UsageValues) -> Usage:
    # ...and back, once per distinct usage (an update is built per delivered reading).
    return Usage(**dict(zip(_USAGE_FIELDS, values, strict=True)))


# The fields of TaskSnapshot a task's readings repeat, as one tuple: model, created,
# results, error, video_duration, can_cancel, usage (as UsageValues). An equal one is
# not stored again, and equal ones are shared: a new tuple is tracked until the next
# collection, and storing it tracks its entry again (until the next full collection,
# which then visits it).
Repeated = tuple[str, datetime | None, tuple[str, ...], TaskError | None, int | None,
                 bool | None, UsageValues | None]
_NOTHING: Repeated = ("", None, (), None, None, None, None)


class Entry(TypedDict):
    """One followed task (see the module's docstring for why it is a ``dict``: its 21
    keys also keep it in CPython's small-object allocator, where 22 would not)."""

    task_id: str
    first_seen: float
    slot: bool  # holds a slot, bound to its task id (the Admission counts it)
    timed: bool  # followed since its creation: its duration teaches the spread
    kind: int  # index of its kind's spread (model, video seconds); -1 until read
    running_at: float  # the last reading that found it unfinished
    final_seen: tuple[int, float] | None  # (progress, seconds since first seen) of the
    # first reading in the final phase after one below it
    seq: int
    due: float  # when its next read is planned
    last_read: float
    reading: bool
    urgent_since: float | None  # a callback claimed the end: confirm at once
    needs_get: bool
    errors: int
    decode_errors: int
    # the last reading (status "" before the first), the status by value
    status: str
    raw_status: str
    progress: int
    estimate: float | None  # estimated_time, kept when later readings leave it out
    request_id: str | None
    repeated: Repeated


def new_entry(task_id: str, first_seen: float) -> Entry:
    """An entry for ``task_id``, first seen at ``first_seen``, not read yet."""
    return {"task_id": task_id, "first_seen": first_seen, "slot": False, "timed": False,
            "kind": -1, "running_at": float("-inf"), "final_seen": None, "seq": 0,
            "due": float("inf"), "last_read": float("-inf"), "reading": False,
            "urgent_since": None, "needs_get": False, "errors": 0, "decode_errors": 0,
            "status": "", "raw_status": "", "progress": 0, "estimate": None,
            "request_id": None, "repeated": _NOTHING}


def keep_reading(entry: Entry, snapshot: TaskSnapshot) -> None:
    """Store ``snapshot`` as ``entry``'s last reading."""
    entry["status"] = snapshot.status.value
    entry["raw_status"] = snapshot.raw_status
    entry["progress"] = snapshot.progress
    entry["estimate"] = snapshot.estimated_time
    entry["request_id"] = snapshot.request_id
    usage = snapshot.usage
    repeated = (snapshot.model, snapshot.created, snapshot.results, snapshot.error,
                snapshot.video_duration, snapshot.can_cancel,
                None if usage is None else _usage_values(usage))
    if repeated != entry["repeated"]:
        entry["repeated"] = _shared(repeated)


@functools.lru_cache(maxsize=4096)
def _shared(repeated: Repeated) -> Repeated:
    # Tasks of a batch repeat each other's (created within a second): the first task's
    # tuple is shared, and by the time the next stores it the collector stopped tracking it.
    return repeated


def last_reading(entry: Entry) -> TaskSnapshot | None:
    """``entry``'s last reading (equal to the snapshot stored), or None before one."""
    if not entry["status"]:
        return None
    model, created, results, error, seconds, can_cancel, usage = entry["repeated"]
    return TaskSnapshot(
        id=entry["task_id"], model=model, status=_STATUS_OF[entry["status"]],
        progress=entry["progress"], created=created, results=results, error=error,
        estimated_time=entry["estimate"], video_duration=seconds, can_cancel=can_cancel,
        usage=None if usage is None else _usage_of(usage),
        raw_status=entry["raw_status"], request_id=entry["request_id"])
