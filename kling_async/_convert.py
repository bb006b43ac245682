"""The one place that knows EvoLink's JSON: requests out, snapshots and credits in.

cattrs generates the structure and unstructure functions from the attrs classes; what is
written here is only where the wire differs from the classes: tolerant scalars on the
way in (codes as strings or integers, numbers as strings, unknown statuses kept, odd
progress clamped), the ``task_info`` and ``data.token`` nesting, ``status`` read into
both ``status`` and ``raw_status``; on the way out, ``sound`` as ``"on"``/``"off"``,
unset optional fields omitted, and the multi-shot and watermark fields nested under
``model_params``. A new field on a model or request is a new attrs field, nothing more.
"""

from __future__ import annotations

import functools
import math
import reprlib
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._errors import ResponseDecodeError
from ._jsonbody import parse_json
from ._models import Credits, TaskError, TaskSnapshot, TaskStatus, Usage
from ._requests import REQUEST_TYPES, VideoRequest

_STATUSES = {s.value: s for s in TaskStatus if s is not TaskStatus.UNKNOWN}
# A cancelled task is a failed one to us (the docs list four statuses; callbacks speak of
# "cancelled"); it keeps its raw status and gets the documented code if it has none.
_CANCELLED = frozenset({"cancelled", "canceled"})
_TASK_INFO = ("estimated_time", "can_cancel", "video_duration")


# -- tolerant scalars ------------------------------------------------------------------------

def _opt_str(value: object, _: object = None) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _str(value: object, _: object = None) -> str:
    return _opt_str(value) or ""


def _number(value: object, _: object = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return number


def _opt_int(value: object, _: object = None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _opt_bool(value: object, _: object = None) -> bool | None:
    return value if isinstance(value, bool) else None


def _estimate(value: object, _: object = None) -> float | None:
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _progress(value: object, _: object = None) -> int:
    # Missing (or NaN, from a mapping) reads as 0: the registry keeps the last progress.
    if isinstance(value, float) and value != value:
        return 0
    number = _number(value)
    return 0 if number is None else int(min(max(number, 0.0), 100.0))


@functools.lru_cache(maxsize=4096)
def _utc(seconds: float) -> datetime:
    # A task's "created" never changes between reads: convert it once.
    return datetime.fromtimestamp(seconds, UTC)


# Estimates repeat across tasks (the same model and length): one float per value, shared
# by every snapshot and registry entry that holds it (see plain_snapshot).
_seconds = functools.lru_cache(maxsize=256)(float)


def _created(value: object, _: object = None) -> datetime | None:
    seconds = _number(value)
    return None if seconds is None else _utc(seconds)


def _status(value: object, _: object = None) -> TaskStatus:
    raw = value.lower() if isinstance(value, str) else ""
    return TaskStatus.FAILED if raw in _CANCELLED else _STATUSES.get(raw, TaskStatus.UNKNOWN)


def _results(value: object, _: object = None) -> tuple[str, ...]:
    return tuple(u for u in value if isinstance(u, str)) if isinstance(value, list) else ()


_USAGE_FIELDS = tuple(field.name for field in attrs.fields(Usage))
_SHAREABLE = frozenset({type(None), bool, int, float})


def _usage(value: object, _: object = None) -> Usage | None:
    # Tasks of a kind report equal usage figures: equal ones share one frozen object (at
    # 50,000 tasks, 50,000 fewer objects for every full garbage collection to walk).
    if type(value) is not dict and not isinstance(value, Mapping):
        return None
    fields = tuple(map(value.get, _USAGE_FIELDS))
    for v in fields:
        if type(v) not in _SHAREABLE and not (type(v) is str and len(v) <= 100):
            return CONVERTER.structure(value, Usage)
    return _shared_usage(*fields)


@functools.lru_cache(maxsize=1024, typed=True)
def _shared_usage(*fields: object) -> Usage:
    usage: Usage = CONVERTER.structure(dict(zip(_USAGE_FIELDS, fields, strict=True)), Usage)
    return usage


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _optional_object(cls: type[Any]) -> Any:
    def hook(value: object, _: object = None) -> Any:
        return CONVERTER.structure(value, cls) if isinstance(value, Mapping) else None
    return hook


# -- the converter -----------------------------------------------------------------------------

def make_converter() -> cattrs.Converter:
    """Build the wire converter (tests build fresh ones; the SDK uses :data:`CONVERTER`)."""
    converter = cattrs.Converter()
    for kind, hook in ((str, _str), (str | None, _opt_str), (float | None, _number),
                       (int | None, _opt_int), (bool | None, _opt_bool),
                       (TaskStatus, _status), (datetime | None, _created),
                       (TaskError | None, _optional_object(TaskError)),
                       (Usage | None, _usage)):
        converter.register_structure_hook(kind, hook)
    converter.register_structure_hook(TaskError, _from_mapping(make_dict_structure_fn(
        TaskError, converter, code=override(
            struct_hook=lambda v, _: _opt_str(v) or "unknown_error")), "error"))
    converter.register_structure_hook(Usage, _from_mapping(make_dict_structure_fn(
        Usage, converter), "usage"))
    snapshot = make_dict_structure_fn(
        TaskSnapshot, converter, progress=override(struct_hook=_progress),
        results=override(struct_hook=_results),
        estimated_time=override(struct_hook=_estimate),
        raw_status=override(struct_hook=lambda v, _: v if isinstance(v, str) else ""))
    converter.register_structure_hook(TaskSnapshot, functools.partial(_snapshot, snapshot))
    credits_fn = make_dict_structure_fn(
        Credits, converter, remaining=override(rename="remaining_credits"),
        used=override(rename="used_credits", struct_hook=lambda v, _: _number(v) or 0.0),
        unlimited=override(rename="unlimited_credits", struct_hook=lambda v, _: v is True),
        account_remaining=override(omit=True), account_used=override(omit=True))
    converter.register_structure_hook(Credits, functools.partial(_credits, credits_fn))
    converter.register_unstructure_hook_func(
        lambda cls: isinstance(cls, type) and issubclass(cls, REQUEST_TYPES), request_body)
    return converter


def _from_mapping(generated: Any, what: str) -> Any:
    def hook(value: object, cls: type[Any]) -> Any:
        return generated(_mapping(value, what), cls)
    return hook


def _snapshot(generated: Any, data: object, _: type) -> TaskSnapshot:
    task = _mapping(data, "a task")
    task_id = task.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("a task must have a string id")
    flat = dict(task)
    info = task.get("task_info")
    if isinstance(info, Mapping):
        flat.update((k, info[k]) for k in _TASK_INFO if k in info)
    flat["status"] = flat["raw_status"] = task.get("status")  # a missing one is UNKNOWN
    snapshot: TaskSnapshot = generated(flat, TaskSnapshot)
    if snapshot.status is TaskStatus.COMPLETED and snapshot.progress != 100:
        snapshot = attrs.evolve(snapshot, progress=100)
    elif snapshot.status is TaskStatus.FAILED and (
            snapshot.error is None or snapshot.raw_status.lower() in _CANCELLED):
        cancelled = snapshot.raw_status.lower() in _CANCELLED
        snapshot = attrs.evolve(snapshot, error=snapshot.error or (
            TaskError(code="request_cancelled", message="The task was cancelled.") if cancelled
            else TaskError(message="The task failed without a reason.")))
    return snapshot


def _credits(generated: Any, data: object, _: type) -> Credits:
    payload = _mapping(data, "the credits answer").get("data")
    token = payload.get("token") if isinstance(payload, Mapping) else None
    if not isinstance(token, Mapping) or token.get("remaining_credits") is None:
        raise ValueError("credits answer has no data.token.remaining_credits")
    credits: Credits = generated({"used_credits": None, **token}, Credits)
    user = payload.get("user") if isinstance(payload, Mapping) else None
    if isinstance(user, Mapping):
        credits = attrs.evolve(credits, account_remaining=_number(user.get("remaining_credits")),
                               account_used=_number(user.get("used_credits")))
    return credits


_ENCODE: dict[str, Any] = {
    "plain": lambda v: str(v) if isinstance(v, Path) else v,  # a local file, not uploaded yet
    "on_off": lambda on: "on" if on else "off",
    "shot_type": lambda kind: {"multi_shot": True, "shot_type": kind},
    "shots": lambda shots: [{"index": n, "prompt": s.prompt, "duration": str(s.duration)}
                            for n, s in enumerate(shots, start=1)],
    "elements": lambda ids: [{"element_id": i} for i in ids],
    "watermark": lambda on: {"enabled": on},
    "url_list": lambda v: [str(x) for x in v] if isinstance(v, tuple) else [str(v)],
}


def request_body(req: VideoRequest, *, every_field: bool = False) -> dict[str, Any]:
    """Any request class's body, from its fields' ``wire`` metadata (``_request_rules``):
    a field goes where its path says, encoded as it says, if its model takes it (or
    ``every_field``, for tests of what the server refuses) and it is set (or marked
    ``always``)."""
    body: dict[str, Any] = {"model": req.model}
    for field in attrs.fields(type(req)):
        path = field.metadata.get("wire")
        models = field.metadata.get("models")
        value = getattr(req, field.name)
        if path is None or (models is not None and req.model not in models
                            and not every_field):
            continue
        if value is None or value == () or (value == "" and not field.metadata["always"]):
            continue
        target = body
        *parents, leaf = path.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        encoded = _ENCODE[field.metadata["encoding"]](value)
        if isinstance(encoded, dict):
            target.setdefault(leaf, {}).update(encoded)
        else:
            target[leaf] = encoded
    return body


CONVERTER = make_converter()
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 3, 120, 60
_DECODE_ERRORS = (ValueError, TypeError, KeyError, OverflowError, RecursionError,
                  cattrs.BaseValidationError)


def excerpt(data: Any) -> str:
    """A short, depth-limited picture of an unreadable value (safe on any nesting)."""
    return _EXCERPT.repr(data)[:200]


def request_to_wire(req: VideoRequest) -> dict[str, Any]:
    """The JSON body for ``POST /v1/videos/generations``."""
    body: dict[str, Any] = CONVERTER.unstructure(req)
    return body


_RUNNING = {raw: status for raw, status in _STATUSES.items() if not status.is_terminal}
_EXACT = 2**53  # integers a float holds exactly (the general path reads ints via float)


def plain_snapshot(data: Any, request_id: str | None = None, *,
                   estimate: float | None = None, task_id: str | None = None
                   ) -> TaskSnapshot | None:
    """The common case of :func:`snapshot_from_wire` without the converter's per-field
    dispatch: a plain ``dict`` of an unfinished task whose fields all have the types the
    API documents. Anything else (a finished task, an odd type, an out-of-range number)
    gives None or raises, and the general path reads it; both give equal snapshots
    (``tests/test_hostile.py`` checks it on generated answers). ``estimate``: the
    ``estimated_time`` an earlier reading gave, kept when this one has none (later
    readings may leave it out). ``task_id``: the id asked about.

    Strings and numbers equal to ones already held (that id, that estimate, the status,
    the model's name) are shared rather than kept once per reading: a full garbage
    collection visits every object a followed task refers to, and at 50,000 tasks each
    distinct one is a cache miss of that stall."""
    if type(data) is not dict:
        return None
    get = data.get
    given_id, raw, progress = get("id"), get("status"), get("progress", 0)
    if type(raw) is not str:
        return None
    status = _RUNNING.get(raw)
    if (status is None or type(given_id) is not str or not given_id
            or type(progress) is not int or not 0 <= progress <= 100
            or get("error") is not None or get("results") not in (None, [])):
        return None
    model, created = get("model", ""), get("created")
    if type(model) is not str or not (created is None or type(created) in (int, float)):
        return None
    info = get("task_info")
    if info is not None and type(info) is not dict:
        return None
    info = info or {}
    given = info.get("estimated_time", get("estimated_time"))
    seconds = info.get("video_duration", get("video_duration"))
    if not (given is None or type(given) is int
            or (type(given) is float and math.isfinite(given))):
        return None
    if seconds is not None and not (type(seconds) is int and abs(seconds) < _EXACT):
        return None
    if request_id is None:
        request_id = get("request_id")
        if request_id is not None and type(request_id) is not str:
            return None
    can_cancel = info.get("can_cancel", get("can_cancel"))
    if given is not None and given >= 0 and given != estimate:
        estimate = _seconds(given)
    return TaskSnapshot(
        id=given_id if task_id is None or given_id != task_id else task_id,
        model=sys.intern(model),
        status=status, progress=progress,
        created=None if created is None else _utc(float(created)),
        estimated_time=estimate, video_duration=seconds,
        can_cancel=can_cancel if type(can_cancel) is bool else None,
        usage=_usage(get("usage")), raw_status=status.value, request_id=request_id)


def snapshot_from_wire(data: Any, request_id: str | None = None, *,
                       estimate: float | None = None, task_id: str | None = None
                       ) -> TaskSnapshot:
    """Read one task object (from the answer ``request_id``); raise
    :class:`ResponseDecodeError` if it is not one. ``estimate``: the ``estimated_time``
    known from earlier readings, which an unfinished plain task read here keeps when it
    gives none (the task registry fills it in for the rest); ``task_id``: the id asked
    about (see :func:`plain_snapshot`)."""
    try:
        snapshot = plain_snapshot(data, request_id, estimate=estimate, task_id=task_id)
    except _DECODE_ERRORS:
        snapshot = None  # the general path below says why
    if snapshot is not None:
        return snapshot
    try:
        if request_id is not None and isinstance(data, Mapping):
            data = {**data, "request_id": request_id}
        return CONVERTER.structure(data, TaskSnapshot)
    except _DECODE_ERRORS as exc:
        raise ResponseDecodeError(f"unreadable task: {exc}", excerpt=excerpt(data)) from exc


def callback_snapshot(payload: object) -> TaskSnapshot | None:
    """A callback body (bytes, str or mapping) read as a task, or None if it cannot be:
    it comes from the internet, so nothing about it may raise."""
    try:
        if isinstance(payload, (bytes, str)):
            payload = parse_json(payload)
        return snapshot_from_wire(payload) if isinstance(payload, Mapping) else None
    except (ValueError, TypeError, AttributeError, ResponseDecodeError):
        return None


def batch_items(data: Any) -> list[Any]:
    """The raw task objects of a batch answer ``{"data": [...]}``."""
    items = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise ResponseDecodeError("batch answer has no data list", excerpt=excerpt(data))
    return items


def credits_from_wire(data: Any) -> Credits:
    """Read the answer of ``GET /v1/credits``."""
    try:
        return CONVERTER.structure(data, Credits)
    except _DECODE_ERRORS as exc:
        raise ResponseDecodeError(f"unreadable credits: {exc}", excerpt=excerpt(data)) from exc
