"""The Emulator's rules and prices for the rest of the Kling family (section 6 of the API
notes): Turbo and O3 text-to-video, V3/Turbo/O3 image-to-video and V3 motion control.

Written from the documentation table, independently of the SDK's request classes; the
property tests check that the two agree. Fields a model does not document are refused
(400) so that a client sending them is caught. Where the two documentation revisions
disagree, what either allows is accepted (V3 image-to-video: ``image_start`` or
``image_end``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._validate import BodyError, validate_model_params

T2V = "kling-v3-text-to-video"
_BASE = frozenset({"model", "prompt", "duration", "quality", "callback_url"})
_SHOTS = frozenset({"multi_shot", "shot_type", "multi_prompt", "watermark_info",
                    "element_list"})
# model -> (top-level fields, model_params fields, qualities, element limit, shot types)
FAMILY: dict[str, tuple[frozenset[str], frozenset[str], tuple[str, ...], int,
                        tuple[str, ...]]] = {
    "kling-v3-turbo-text-to-video": (_BASE | {"aspect_ratio"}, frozenset(),
                                     ("720p", "1080p"), 0, ()),
    "kling-o3-text-to-video": (_BASE | {"aspect_ratio", "sound", "model_params"}, _SHOTS,
                               ("720p", "1080p", "4k"), 7, ("customize",)),
    "kling-v3-image-to-video": (
        _BASE | {"image_start", "image_end", "negative_prompt", "aspect_ratio", "sound",
                 "model_params"}, _SHOTS, ("720p", "1080p", "4k"), 3,
        ("customize", "intelligence")),
    "kling-v3-turbo-image-to-video": (_BASE | {"image_start"}, frozenset(),
                                      ("720p", "1080p"), 0, ()),
    "kling-o3-image-to-video": (
        _BASE | {"image_start", "image_end", "image_urls", "aspect_ratio", "sound",
                 "model_params"}, _SHOTS, ("720p", "1080p", "4k"), 7, ("customize",)),
    "kling-v3-motion-control": (
        (_BASE - {"duration"}) | {"image_urls", "video_urls", "keep_sound", "model_params"},
        frozenset({"character_orientation", "element_list", "watermark_info"}),
        ("720p", "1080p"), 1, ()),
}

_V3 = {("720p", False): 5.4, ("720p", True): 8.1, ("1080p", False): 7.1982,
       ("1080p", True): 10.8}
_O3 = {("720p", False): 5.4, ("720p", True): 7.2036, ("1080p", False): 7.2036,
       ("1080p", True): 9.0018}
_TURBO = {("720p", False): 7.2, ("1080p", False): 9.0}
PER_SECOND = {T2V: _V3, "kling-v3-image-to-video": _V3, "kling-o3-text-to-video": _O3,
              "kling-o3-image-to-video": _O3, "kling-v3-turbo-text-to-video": _TURBO,
              "kling-v3-turbo-image-to-video": _TURBO,
              "kling-v3-motion-control": {("720p", False): 8.1648,
                                          ("1080p", False): 10.88368}}
MOTION_SECONDS = 10  # the Emulator does not fetch reference videos: it bills 10 s for each


def seconds_of(body: dict[str, Any]) -> int:
    """Seconds of video the task makes (motion control: see MOTION_SECONDS)."""
    if body.get("model") == "kling-v3-motion-control":
        return MOTION_SECONDS
    return int(body.get("duration", 5))


def price_of(body: dict[str, Any]) -> float:
    """Credits reserved: the published per-second price; 4k, unpublished, at 1.5x 1080p."""
    model = str(body.get("model"))
    quality = body.get("quality", "720p")
    sound = body.get("sound", "off") == "on"
    table = PER_SECOND[model]
    rate = table[("1080p", sound)] * 1.5 if quality == "4k" else table[(quality, sound)]
    return round(rate * math.ceil(seconds_of(body)), 4)


def validate_family(body: dict[str, Any], image_exists: Callable[[str], bool]) -> None:
    """Raise :class:`BodyError` when ``body`` breaks its model's documented rules.
    ``image_exists`` answers whether an image URL can be fetched."""
    model = body["model"]
    fields, param_fields, qualities, max_elements, shot_types = FAMILY[model]
    for name in body:
        if name not in fields:
            raise BodyError(name, f"{name} is not supported by {model}")
    params = body.get("model_params", {})
    if not isinstance(params, dict):
        raise BodyError("model_params", "model_params must be an object")
    for name in params:
        if name not in param_fields:
            raise BodyError(f"model_params.{name}", f"{name} is not supported by {model}")
    duration = body.get("duration", 5)
    if "duration" in fields and (isinstance(duration, bool) or not isinstance(duration, int)
                                 or not 3 <= duration <= 15):
        raise BodyError("duration", "duration must be an integer between 3 and 15")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str) or len(prompt) > 2500:
        raise BodyError("prompt", "prompt must be a string of at most 2500 characters")
    if body.get("quality", "720p") not in qualities:
        raise BodyError("quality", f"quality must be one of {', '.join(qualities)}")
    if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
        raise BodyError("aspect_ratio", "aspect_ratio must be 16:9, 9:16 or 1:1")
    if body.get("sound", "off") not in ("on", "off"):
        raise BodyError("sound", "sound must be on or off")
    if body.get("negative_prompt") is not None and not isinstance(body["negative_prompt"], str):
        raise BodyError("negative_prompt", "negative_prompt must be a string")
    callback = body.get("callback_url")
    if callback is not None and (not isinstance(callback, str) or len(callback) > 2048):
        raise BodyError("callback_url", "callback_url must be a URL of at most 2048 characters")
    elements = params.get("element_list", [])
    if not isinstance(elements, list) or len(elements) > max_elements or not all(
            isinstance(e, dict) and isinstance(e.get("element_id"), str) and e["element_id"]
            for e in elements):
        raise BodyError("model_params.element_list",
                        f"element_list must hold at most {max_elements} {{element_id}} objects")
    customize = False
    if "multi_shot" in params or "shot_type" in params:
        if params.get("shot_type") not in shot_types:
            raise BodyError("model_params.shot_type", f"shot_type must be one of "
                            f"{', '.join(shot_types)} for {model}")
        customize = validate_model_params(params, duration)
    elif "watermark_info" in params:
        validate_model_params(params, duration)
    _images(body, model, len(elements), image_exists)
    needs_prompt = model.endswith("text-to-video") or model == "kling-o3-image-to-video"
    if needs_prompt and not customize and not prompt.strip():
        raise BodyError("prompt", "prompt is required unless multi_shot customize is used")


def _url(body: dict[str, Any], name: str, image_exists: Callable[[str], bool]) -> None:
    value = body[name]
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise BodyError(name, f"{name} must be an image URL")
    if not image_exists(value):
        raise BodyError(name, f"{name} could not be fetched")


def _url_list(body: dict[str, Any], name: str, count: range,
              image_exists: Callable[[str], bool]) -> None:
    values = body.get(name, [])
    if not isinstance(values, list) or len(values) not in count:
        raise BodyError(name, f"{name} must hold {count.start} to {count.stop - 1} URLs")
    for value in values:
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise BodyError(name, f"{name} must hold URLs")
        if name == "image_urls" and not image_exists(value):
            raise BodyError(name, f"{name} holds an image that could not be fetched")


def _images(body: dict[str, Any], model: str, elements: int,
            image_exists: Callable[[str], bool]) -> None:
    for name in ("image_start", "image_end"):
        if name in body:
            _url(body, name, image_exists)
    start, end = "image_start" in body, "image_end" in body
    if model == "kling-v3-image-to-video" and not (start or end):
        raise BodyError("image_start", "image_start or image_end is required")
    if model == "kling-v3-turbo-image-to-video" and not start:
        raise BodyError("image_start", "image_start is required")
    if model == "kling-o3-image-to-video":
        _url_list(body, "image_urls", range(8), image_exists)
        references = len(body.get("image_urls", []))
        if end and not start:
            raise BodyError("image_end", "image_end needs image_start")
        if end and references:
            raise BodyError("image_end", "image_end is not allowed with reference images")
        if start and elements > 3:
            raise BodyError("model_params.element_list",
                            "at most 3 elements with a first frame")
        if references + elements > 7:
            raise BodyError("image_urls", "images and elements may number at most 7")
    if model == "kling-v3-motion-control":
        _url_list(body, "image_urls", range(1, 2), image_exists)
        _url_list(body, "video_urls", range(1, 2), image_exists)
        params = body.get("model_params", {})
        orientation = params.get("character_orientation")
        if orientation not in ("image", "video"):
            raise BodyError("model_params.character_orientation",
                            "character_orientation must be image or video")
        if params.get("element_list") and orientation != "video":
            raise BodyError("model_params.element_list",
                            "element_list needs character_orientation video")
        if not isinstance(body.get("keep_sound", True), bool):
            raise BodyError("keep_sound", "keep_sound must be a boolean")
