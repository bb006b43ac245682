"""Server-side validation of ``kling-v3-text-to-video`` bodies (§1.2-1.3 of the API notes).

Written independently of the SDK's own validators, so a mistake on one side shows up
as a disagreement in the tests instead of hiding on both.
"""

from __future__ import annotations

from typing import Any

MODEL = "kling-v3-text-to-video"
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
QUALITIES = ("720p", "1080p", "4k")
SOUNDS = ("on", "off")
SHOT_TYPES = ("customize", "intelligence")


class BodyError(Exception):
    """A 400 answer: the offending ``param`` and a message."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_body(body: Any) -> None:
    """Raise :class:`BodyError` when ``body`` breaks a documented rule."""
    if not isinstance(body, dict):
        raise BodyError("body", "Request body must be a JSON object")
    duration = body.get("duration", 5)
    if not _is_int(duration) or not 3 <= duration <= 15:
        raise BodyError("duration", "duration must be an integer between 3 and 15")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise BodyError("prompt", "prompt must be a string")
    if len(prompt) > 2500:
        raise BodyError("prompt", "prompt must be at most 2500 characters")
    negative = body.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise BodyError("negative_prompt", "negative_prompt must be a string")
    for name, allowed in (("aspect_ratio", ASPECT_RATIOS), ("quality", QUALITIES),
                          ("sound", SOUNDS)):
        if name in body and body[name] not in allowed:
            raise BodyError(name, f"{name} must be one of {', '.join(allowed)}")
    callback = body.get("callback_url")
    if callback is not None and (not isinstance(callback, str) or len(callback) > 2048):
        raise BodyError("callback_url", "callback_url must be a URL of at most 2048 characters")
    params = body.get("model_params", {})
    if not isinstance(params, dict):
        raise BodyError("model_params", "model_params must be an object")
    customize = validate_model_params(params, duration)
    if not customize and not prompt.strip():
        raise BodyError("prompt", "prompt is required unless multi_shot customize is used")


def validate_model_params(params: dict[str, Any], duration: int) -> bool:
    """Check ``model_params``; return True when the shots come from ``multi_prompt``."""
    watermark = params.get("watermark_info")
    if watermark is not None and (
        not isinstance(watermark, dict) or not isinstance(watermark.get("enabled"), bool)
    ):
        raise BodyError("model_params.watermark_info", "watermark_info.enabled must be a boolean")
    multi_shot = params.get("multi_shot", False)
    if not isinstance(multi_shot, bool):
        raise BodyError("model_params.multi_shot", "multi_shot must be a boolean")
    if not multi_shot:
        return False
    shot_type = params.get("shot_type")
    if shot_type not in SHOT_TYPES:
        raise BodyError("model_params.shot_type",
                        "shot_type must be customize or intelligence when multi_shot is true")
    if shot_type == "intelligence":
        return False
    shots = params.get("multi_prompt")
    if not isinstance(shots, list) or not 1 <= len(shots) <= 6:
        raise BodyError("model_params.multi_prompt", "multi_prompt must hold 1 to 6 shots")
    total = 0
    for position, shot in enumerate(shots, start=1):
        where = f"model_params.multi_prompt[{position - 1}]"
        if not isinstance(shot, dict):
            raise BodyError(where, "each shot must be an object")
        if shot.get("index") != position:
            raise BodyError(f"{where}.index", "shot indexes must run 1..n")
        text = shot.get("prompt")
        if not isinstance(text, str) or not text.strip() or len(text) > 512:
            raise BodyError(f"{where}.prompt", "shot prompt must be 1 to 512 characters")
        seconds = shot.get("duration")
        if not isinstance(seconds, str) or not seconds.isdigit():
            raise BodyError(f"{where}.duration", "shot duration must be a string of seconds")
        if not 1 <= int(seconds) <= duration:
            raise BodyError(f"{where}.duration", "shot duration must be between 1 and duration")
        total += int(seconds)
    if total != duration:
        raise BodyError("model_params.multi_prompt", "shot durations must add up to duration")
    return True
