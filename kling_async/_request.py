"""``TextToVideo``: a request for ``kling-v3-text-to-video``, checked when it is built."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import attrs

AspectRatio = Literal["16:9", "9:16", "1:1"]
Quality = Literal["720p", "1080p", "4k"]
ShotType = Literal["customize", "intelligence"]

ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1")
QUALITIES: tuple[str, ...] = ("720p", "1080p", "4k")
MAX_PROMPT = 2500
MAX_SHOT_PROMPT = 512
MAX_CALLBACK_URL = 2048


def _fail(field: str, rule: str, value: object) -> ValueError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(f"TextToVideo.{field} {rule}; got {shown}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@attrs.frozen
class Shot:
    """One shot of a customised multi-shot video.

    Attributes:
        prompt: what happens in this shot, 1-512 characters.
        duration: whole seconds, at least 1; the shots' durations add up to the video's.
    """

    prompt: str
    duration: int

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"Shot.prompt must be a string; got {self.prompt!r}")
        if not _is_int(self.duration):
            raise TypeError(f"Shot.duration must be an integer; got {self.duration!r}")


def _to_shots(value: Sequence[Shot]) -> tuple[Shot, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class TextToVideo:
    """A text-to-video request. Every documented rule is checked here, so a bad request
    raises :class:`ValueError` naming the field before any money is spent.

    Attributes:
        prompt: what to generate, at most 2500 characters. Required, unless the shots
            come from ``shots`` (``multi_shot="customize"``).
        negative_prompt: what should not appear.
        duration: seconds of video, an integer from 3 to 15 (default 5). Billed per second.
        aspect_ratio: ``"16:9"``, ``"9:16"`` or ``"1:1"``; the server's default if None.
        quality: ``"720p"`` (default), ``"1080p"`` or ``"4k"``.
        sound: generate sound effects (sent as ``"on"``/``"off"``; changes the price).
        multi_shot: ``"customize"`` (you give ``shots``) or ``"intelligence"`` (the model
            cuts shots itself from ``prompt``). Giving ``shots`` implies ``"customize"``.
        shots: 1-6 :class:`Shot` values whose durations add up to ``duration``; their
            indexes (1..n) are assigned for you.
        watermark: add a watermark (True/False); the server's default if None.
        callback_url: an HTTPS URL the server POSTs the finished task to (at most 2048
            characters, no private or loopback address).
        allow_local_callback: accept ``http://`` and private or loopback callback hosts.
            For tests against the Emulator only; the real service refuses them.
    """

    model: ClassVar[str] = "kling-v3-text-to-video"

    prompt: str = ""
    negative_prompt: str | None = None
    duration: int = 5
    aspect_ratio: AspectRatio | None = None
    quality: Quality = "720p"
    sound: bool = False
    multi_shot: ShotType | None = None
    shots: tuple[Shot, ...] = attrs.field(default=(), converter=_to_shots)
    watermark: bool | None = None
    callback_url: str | None = None
    allow_local_callback: bool = attrs.field(default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_types(self)
        if not 3 <= self.duration <= 15:
            raise _fail("duration", "must be an integer from 3 to 15 seconds", self.duration)
        if len(self.prompt) > MAX_PROMPT:
            raise _fail("prompt", f"must be at most {MAX_PROMPT} characters "
                        f"(it has {len(self.prompt)})", self.prompt)
        if self.aspect_ratio is not None and self.aspect_ratio not in ASPECT_RATIOS:
            raise _fail("aspect_ratio", f"must be one of {', '.join(ASPECT_RATIOS)}",
                        self.aspect_ratio)
        if self.quality not in QUALITIES:
            raise _fail("quality", f"must be one of {', '.join(QUALITIES)}", self.quality)
        _check_shots(self)
        if self.callback_url is not None:
            _check_callback(self.callback_url, self.allow_local_callback)

    @property
    def shot_type(self) -> ShotType | None:
        """The ``shot_type`` sent to the server (``None`` for a single-shot video)."""
        if self.multi_shot is None and self.shots:
            return "customize"
        return self.multi_shot


def _check_types(req: TextToVideo) -> None:
    expected: tuple[tuple[str, Any, str], ...] = (
        ("prompt", str, "a string"), ("negative_prompt", (str, type(None)), "a string or None"),
        ("sound", bool, "a bool"), ("watermark", (bool, type(None)), "a bool or None"),
        ("callback_url", (str, type(None)), "a string or None"),
        ("allow_local_callback", bool, "a bool"),
    )
    for name, kinds, what in expected:
        if not isinstance(getattr(req, name), kinds):
            raise TypeError(f"TextToVideo.{name} must be {what}; got {getattr(req, name)!r}")
    if not _is_int(req.duration):
        raise TypeError(f"TextToVideo.duration must be an integer; got {req.duration!r}")


def _check_shots(req: TextToVideo) -> None:
    if req.multi_shot not in (None, "customize", "intelligence"):
        raise _fail("multi_shot", "must be 'customize', 'intelligence' or None", req.multi_shot)
    if req.shot_type != "customize":
        if req.shots:
            raise _fail("shots", "are only allowed with multi_shot='customize'", req.shots)
        if not req.prompt.strip():
            raise _fail("prompt", "must not be empty (only customised multi-shot videos "
                        "may leave it empty)", req.prompt)
        return
    if not 1 <= len(req.shots) <= 6:
        raise _fail("shots", "must hold 1 to 6 shots for multi_shot='customize'", req.shots)
    for number, shot in enumerate(req.shots):
        where = f"shots[{number}]"
        if not isinstance(shot, Shot):
            raise TypeError(f"TextToVideo.{where} must be a Shot; got {shot!r}")
        if not shot.prompt.strip():
            raise _fail(f"{where}.prompt", "must be a non-empty string", shot.prompt)
        if len(shot.prompt) > MAX_SHOT_PROMPT:
            raise _fail(f"{where}.prompt", f"must be at most {MAX_SHOT_PROMPT} characters",
                        shot.prompt)
        if not 1 <= shot.duration <= req.duration:
            raise _fail(f"{where}.duration", f"must be an integer from 1 to the video's "
                        f"duration ({req.duration})", shot.duration)
    total = sum(shot.duration for shot in req.shots)
    if total != req.duration:
        raise _fail("shots", f"durations must add up to duration={req.duration} "
                    f"(they add up to {total})", [s.duration for s in req.shots])


def _check_callback(url: str, allow_local: bool) -> None:
    if len(url) > MAX_CALLBACK_URL:
        raise _fail("callback_url", f"must be at most {MAX_CALLBACK_URL} characters", url)
    parts = urlsplit(url)
    if not parts.hostname:
        raise _fail("callback_url", "must be an absolute URL with a host", url)
    if allow_local:
        if parts.scheme not in ("http", "https"):
            raise _fail("callback_url", "must be an http(s) URL", url)
        return
    if parts.scheme != "https":
        raise _fail("callback_url", "must use https (set allow_local_callback=True only "
                    "for tests against the Emulator)", url)
    host = parts.hostname
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            raise _fail("callback_url", "must not point at this machine", url) from None
        return
    if (address.is_private or address.is_loopback or address.is_link_local
            or address.is_unspecified or address.is_reserved or address.is_multicast):
        raise _fail("callback_url", "must not be a private, loopback or reserved address",
                    url)
