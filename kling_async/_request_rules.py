"""What every request class shares: the Kling models' rules, how a field declares where
it goes on the wire and which models take it, and the checks used by several classes.

A field's metadata is the one place that says which models accept it: the validation
refuses it for the others, and the converter (``_convert``) leaves it out of their
bodies. No request class has a hand-written converter hook.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from ._pricing import estimate

AspectRatio = Literal["16:9", "9:16", "1:1"]
Quality = Literal["720p", "1080p", "4k"]
ShotType = Literal["customize", "intelligence"]
ImageInput = str | Path  # an https URL, or a local file uploaded on submit
Encoding = Literal["plain", "on_off", "shot_type", "shots", "elements", "watermark",
                   "url_list"]

ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1")
MAX_PROMPT = 2500
MAX_SHOT_PROMPT = 512
MAX_CALLBACK_URL = 2048

V3_T2V, TURBO_T2V, O3_T2V = ("kling-v3-text-to-video", "kling-v3-turbo-text-to-video",
                             "kling-o3-text-to-video")
V3_I2V, TURBO_I2V, O3_I2V = ("kling-v3-image-to-video", "kling-v3-turbo-image-to-video",
                             "kling-o3-image-to-video")
MOTION = "kling-v3-motion-control"


MAX_UPLOAD = 100 * 1024 * 1024  # the file hosting's limit


@attrs.frozen
class ImageLimits:
    """What a model documents for its input images (checked before an upload)."""

    max_bytes: int = MAX_UPLOAD
    types: tuple[str, ...] = ("image/png", "image/jpeg", "image/gif", "image/webp")
    min_side: int = 0
    max_ratio: float | None = None


ANY_IMAGE = ImageLimits()  # what the file hosting takes, for models that document no limits


@attrs.frozen
class ModelRules:
    """What one model accepts beyond which fields it takes."""

    qualities: tuple[str, ...] = ("720p", "1080p", "4k")
    shot_types: tuple[str, ...] = ("customize", "intelligence")
    max_elements: int = 0
    images: ImageLimits = ANY_IMAGE


_JPG_PNG = ("image/png", "image/jpeg")
MODELS: dict[str, ModelRules] = {
    V3_T2V: ModelRules(),
    TURBO_T2V: ModelRules(qualities=("720p", "1080p"), shot_types=()),
    O3_T2V: ModelRules(shot_types=("customize",), max_elements=7),
    V3_I2V: ModelRules(max_elements=3, images=ImageLimits(
        max_bytes=10 * 1024 * 1024, types=_JPG_PNG, min_side=300, max_ratio=2.5)),
    TURBO_I2V: ModelRules(qualities=("720p", "1080p"), shot_types=(), images=ImageLimits(
        max_bytes=50 * 1024 * 1024, types=_JPG_PNG, min_side=300)),
    O3_I2V: ModelRules(shot_types=("customize",), max_elements=7),
    MOTION: ModelRules(qualities=("720p", "1080p"), shot_types=(), max_elements=1),
}


def wire(path: str, *, encoding: Encoding = "plain", models: Collection[str] | None = None,
         always: bool = False, upload: bool = False) -> dict[str, Any]:
    """Field metadata: where the value goes in the body (``a.b`` nests), how it is
    encoded, which models take it (None: all of the class's), whether it is sent even
    when unset, and whether local files in it are uploaded on submit."""
    return {"wire": path, "encoding": encoding,
            "models": frozenset(models) if models is not None else None,
            "always": always, "upload": upload}


def to_tuple(value: Sequence[Any]) -> tuple[Any, ...]:
    """Converter of sequence fields: frozen requests hold tuples."""
    return tuple(value)


def unset(value: object) -> bool:
    """A field left at nothing: None, an empty tuple, or an empty string."""
    return value is None or value == () or value == ""


def fail(req: object, field: str, rule: str, value: object) -> ValueError:
    """A ValueError naming the class and field, with a short picture of the value."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(f"{type(req).__name__}.{field} {rule}; got {shown}")


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_model(req: Any, allowed: Sequence[str]) -> ModelRules:
    """The rules of ``req.model``; refuse fields its model does not take."""
    if req.model not in allowed:
        raise fail(req, "model", f"must be one of {', '.join(allowed)}", req.model)
    for field in attrs.fields(type(req)):
        models = field.metadata.get("models")
        value = getattr(req, field.name)
        if models is not None and req.model not in models and value != field.default:
            raise fail(req, field.name, f"is not supported by {req.model}", value)
    return MODELS[req.model]


def check_common(req: Any, rules: ModelRules) -> None:
    """Duration, prompt length, aspect ratio, quality, shots, elements, callback."""
    duration = getattr(req, "duration", 5)  # motion control: as long as its video
    if not is_int(duration):
        raise TypeError(f"{type(req).__name__}.duration must be an integer; "
                        f"got {duration!r}")
    for name in ("prompt", "negative_prompt", "callback_url"):
        value = getattr(req, name, None)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{type(req).__name__}.{name} must be a string; got {value!r}")
    for name in ("sound", "watermark", "allow_local_callback"):
        value = getattr(req, name, None)
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{type(req).__name__}.{name} must be a bool; got {value!r}")
    if not 3 <= duration <= 15:
        raise fail(req, "duration", "must be an integer from 3 to 15 seconds", duration)
    if len(req.prompt) > MAX_PROMPT:
        raise fail(req, "prompt", f"must be at most {MAX_PROMPT} characters "
                   f"(it has {len(req.prompt)})", req.prompt)
    aspect = getattr(req, "aspect_ratio", None)
    if aspect is not None and aspect not in ASPECT_RATIOS:
        raise fail(req, "aspect_ratio", f"must be one of {', '.join(ASPECT_RATIOS)}", aspect)
    if req.quality not in rules.qualities:
        raise fail(req, "quality", f"must be one of {', '.join(rules.qualities)} for "
                   f"{req.model}", req.quality)
    check_elements(req, rules.max_elements)
    if req.callback_url is not None:
        check_callback(req, req.callback_url, req.allow_local_callback)


def check_elements(req: Any, limit: int) -> None:
    """Element ids: strings, at most ``limit``."""
    for element in req.elements:
        if not isinstance(element, str) or not element.strip():
            raise fail(req, "elements", "must hold non-empty element id strings", element)
    if len(req.elements) > limit:
        raise fail(req, "elements", f"may hold at most {limit} element(s) for {req.model}",
                   req.elements)


def check_image(req: object, field: str, value: object) -> None:
    """An https (or http) URL, or a local ``Path`` (uploaded on submit)."""
    if isinstance(value, Path):
        return
    if not isinstance(value, str):
        raise TypeError(f"{type(req).__name__}.{field} must be a URL string or a "
                        f"pathlib.Path; got {value!r}")
    if urlsplit(value).scheme not in ("https", "http") or not urlsplit(value).hostname:
        raise fail(req, field, "must be an http(s) URL the server can fetch, or a "
                   "pathlib.Path of a local file", value)


def estimated(req: Any, seconds: float | None) -> float | None:
    """Credits at the published prices (None when a price is not published)."""
    return estimate(req.model, req.quality, bool(getattr(req, "sound", False)), seconds)


def check_callback(req: object, url: str, allow_local: bool) -> None:
    """An https URL of a public host (any http(s) URL with ``allow_local``)."""
    if len(url) > MAX_CALLBACK_URL:
        raise fail(req, "callback_url", f"must be at most {MAX_CALLBACK_URL} characters", url)
    parts = urlsplit(url)
    if not parts.hostname:
        raise fail(req, "callback_url", "must be an absolute URL with a host", url)
    if allow_local:
        if parts.scheme not in ("http", "https"):
            raise fail(req, "callback_url", "must be an http(s) URL", url)
        return
    if parts.scheme != "https":
        raise fail(req, "callback_url", "must use https (set allow_local_callback=True only "
                   "for tests against the Emulator)", url)
    host = parts.hostname
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            raise fail(req, "callback_url", "must not point at this machine", url) from None
        return
    if (address.is_private or address.is_loopback or address.is_link_local
            or address.is_unspecified or address.is_reserved or address.is_multicast):
        raise fail(req, "callback_url", "must not be a private, loopback or reserved address",
                   url)
