"""The one place that knows EvoLink's JSON: requests out, snapshots and credits in.

Tolerant on the way in (unknown fields ignored, optional fields may be missing, codes
may be strings or integers, unknown statuses kept), strict on the way out (unset
optional fields are omitted, ``sound`` is ``"on"``/``"off"``, shot durations are strings).
"""

from __future__ import annotations

import functools
import reprlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import cattrs

from ._errors import ResponseDecodeError
from ._models import Credits, TaskError, TaskSnapshot, TaskStatus, Usage
from ._request import TextToVideo

_STATUSES = {s.value: s for s in TaskStatus if s is not TaskStatus.UNKNOWN}
# A cancelled task is a failed one to us (the docs list four statuses; callbacks speak of
# "cancelled"); it keeps its raw status and gets the documented code if it has none.
_CANCELLED = frozenset({"cancelled", "canceled"})


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return float(value)


@functools.lru_cache(maxsize=4096)
def _utc(seconds: float) -> datetime:
    # A task's "created" never changes between reads: convert it once.
    return datetime.fromtimestamp(seconds, UTC)


def _structure_error(data: Any, _: type) -> TaskError:
    if not isinstance(data, Mapping):
        raise ValueError("error must be an object")
    return TaskError(code=_opt_str(data.get("code")) or "unknown_error",
                     message=_opt_str(data.get("message")) or "",
                     type=_opt_str(data.get("type")))


def _structure_usage(data: Any, _: type) -> Usage:
    if not isinstance(data, Mapping):
        raise ValueError("usage must be an object")
    return Usage(billing_rule=_opt_str(data.get("billing_rule")),
                 credits_reserved=_number(data.get("credits_reserved")),
                 credits_used=_number(data.get("credits_used")),
                 user_group=_opt_str(data.get("user_group")))


def _structure_snapshot(data: Any, _: type) -> TaskSnapshot:
    if not isinstance(data, Mapping):
        raise ValueError(f"a task must be a JSON object, not {type(data).__name__}")
    task_id = data.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("a task must have a string id")
    raw = data.get("status")
    raw_status = raw if isinstance(raw, str) else ""
    status = _STATUSES.get(raw_status.lower(), TaskStatus.UNKNOWN)
    error = data.get("error")
    task_error = _structure_error(error, TaskError) if isinstance(error, Mapping) else None
    if raw_status.lower() in _CANCELLED:
        status = TaskStatus.FAILED
        task_error = task_error or TaskError(code="request_cancelled",
                                             message="The task was cancelled.")
    if status is TaskStatus.FAILED and task_error is None:
        task_error = TaskError(code="unknown_error", message="The task failed without a reason.")
    progress = _number(data.get("progress")) or 0.0
    info = data.get("task_info")
    info = info if isinstance(info, Mapping) else {}
    results = data.get("results")
    created = _number(data.get("created"))
    usage = data.get("usage")
    estimated = _number(info.get("estimated_time"))
    video_duration = _number(info.get("video_duration", data.get("video_duration")))
    can_cancel = info.get("can_cancel")
    return TaskSnapshot(
        id=task_id, model=_opt_str(data.get("model")) or "", status=status,
        progress=100 if status is TaskStatus.COMPLETED else int(min(max(progress, 0.0), 100.0)),
        created=None if created is None else _utc(created),
        results=tuple(u for u in results if isinstance(u, str))
        if isinstance(results, list) else (),
        error=task_error,
        estimated_time=estimated if estimated is None or estimated >= 0 else None,
        video_duration=None if video_duration is None else int(video_duration),
        can_cancel=can_cancel if isinstance(can_cancel, bool) else None,
        usage=_structure_usage(usage, Usage) if isinstance(usage, Mapping) else None,
        raw_status=raw_status)


def _structure_credits(data: Any, _: type) -> Credits:
    payload = data.get("data") if isinstance(data, Mapping) else None
    token = payload.get("token") if isinstance(payload, Mapping) else None
    if not isinstance(token, Mapping):
        raise ValueError("credits answer has no data.token object")
    user = payload.get("user") if isinstance(payload, Mapping) else None
    user = user if isinstance(user, Mapping) else {}
    remaining = _number(token.get("remaining_credits"))
    if remaining is None:
        raise ValueError("credits answer has no remaining_credits")
    return Credits(remaining=remaining, used=_number(token.get("used_credits")) or 0.0,
                   unlimited=token.get("unlimited_credits") is True,
                   account_remaining=_number(user.get("remaining_credits")),
                   account_used=_number(user.get("used_credits")))


def _unstructure_request(req: TextToVideo) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "prompt": req.prompt, "duration": req.duration,
                            "quality": req.quality, "sound": "on" if req.sound else "off"}
    if req.negative_prompt is not None:
        body["negative_prompt"] = req.negative_prompt
    if req.aspect_ratio is not None:
        body["aspect_ratio"] = req.aspect_ratio
    params: dict[str, Any] = {}
    if req.shot_type is not None:
        params["multi_shot"] = True
        params["shot_type"] = req.shot_type
    if req.shots:
        params["multi_prompt"] = [
            {"index": n, "prompt": shot.prompt, "duration": str(shot.duration)}
            for n, shot in enumerate(req.shots, start=1)]
    if req.watermark is not None:
        params["watermark_info"] = {"enabled": req.watermark}
    if params:
        body["model_params"] = params
    if req.callback_url is not None:
        body["callback_url"] = req.callback_url
    return body


def make_converter() -> cattrs.Converter:
    """Build the wire converter (tests build fresh ones; the SDK uses :data:`CONVERTER`)."""
    converter = cattrs.Converter()
    converter.register_structure_hook(TaskSnapshot, _structure_snapshot)
    converter.register_structure_hook(TaskError, _structure_error)
    converter.register_structure_hook(Usage, _structure_usage)
    converter.register_structure_hook(Credits, _structure_credits)
    converter.register_unstructure_hook(TextToVideo, _unstructure_request)
    return converter


CONVERTER = make_converter()


_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 3, 120, 60


def excerpt(data: Any) -> str:
    """A short, depth-limited picture of an unreadable value (safe on any nesting)."""
    return _EXCERPT.repr(data)[:200]


def request_to_wire(req: TextToVideo) -> dict[str, Any]:
    """The JSON body for ``POST /v1/videos/generations``."""
    body: dict[str, Any] = CONVERTER.unstructure(req)
    return body


def snapshot_from_wire(data: Any) -> TaskSnapshot:
    """Read one task object; raise :class:`ResponseDecodeError` if it is not one."""
    try:
        return CONVERTER.structure(data, TaskSnapshot)
    except (ValueError, TypeError, OverflowError, cattrs.BaseValidationError) as exc:
        raise ResponseDecodeError(f"unreadable task: {exc}", excerpt=excerpt(data)) from exc


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
    except (ValueError, TypeError, cattrs.BaseValidationError) as exc:
        raise ResponseDecodeError(f"unreadable credits: {exc}", excerpt=excerpt(data)) from exc
