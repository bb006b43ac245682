"""``ImageToVideo`` and ``MotionControl``: requests that start from images (and, for
motion control, a reference video), checked when they are built. Images may be URLs or
local ``Path`` values, uploaded once per file per Client on submit."""

from __future__ import annotations

from typing import Literal

import attrs

from ._request import Shot, normalise_shots
from ._request_rules import (
    MOTION,
    O3_I2V,
    TURBO_I2V,
    V3_I2V,
    AspectRatio,
    ImageInput,
    Quality,
    ShotType,
    check_common,
    check_image,
    check_model,
    estimated,
    fail,
    to_tuple,
    unset,
    wire,
)

IMAGE_MODELS = (V3_I2V, TURBO_I2V, O3_I2V)
_FULL = (V3_I2V, O3_I2V)
Orientation = Literal["image", "video"]


@attrs.frozen(kw_only=True)
class ImageToVideo:
    """An image-to-video request: animate a first frame (and optionally reach a last one).

    Attributes:
        model: ``"kling-v3-image-to-video"`` (default), ``"kling-v3-turbo-image-to-video"``
            (faster; first frame only, 720p/1080p, no sound) or
            ``"kling-o3-image-to-video"`` (Kling 3.0 Omni: reference ``images``,
            ``elements``, customised shots only; ``prompt`` required).
        image_start: the first frame: an https URL, or a ``pathlib.Path`` uploaded on
            submit (jpg/png, at most 10 MB, 50 MB on Turbo; at least 300 px a side; sides
            within 1:2.5 and 2.5:1). V3 needs it or ``image_end`` (the two documentation
            revisions disagree; either is accepted); Turbo needs it.
        image_end: the last frame (V3, O3); O3 needs ``image_start`` with it and refuses it
            beside reference ``images``.
        images: reference images (O3 only), referred to in the prompt as ``<<<image_1>>>``;
            with ``elements``, at most 7.
        prompt: what happens, at most 2500 characters (required on O3).
        negative_prompt: what should not appear (V3 only).
        duration: seconds of video, 3 to 15 (default 5). Billed per second.
        aspect_ratio: ``"16:9"``, ``"9:16"`` or ``"1:1"`` (V3, O3); the first frame's if
            None.
        quality: ``"720p"`` (default), ``"1080p"`` or ``"4k"`` (not on Turbo).
        sound: generate sound (V3, O3; changes the price).
        multi_shot, shots: as for :class:`TextToVideo` (V3; O3 customised shots only).
        elements: custom element ids (V3: at most 3; O3: at most 3 with a first frame).
        watermark: add a watermark (V3, O3); the server's default if None.
        callback_url, allow_local_callback: as for :class:`TextToVideo`.
    """

    model: str = attrs.field(default=V3_I2V)
    image_start: ImageInput | None = attrs.field(
        default=None, metadata=wire("image_start", upload=True))
    image_end: ImageInput | None = attrs.field(
        default=None, metadata=wire("image_end", models=_FULL, upload=True))
    images: tuple[ImageInput, ...] = attrs.field(
        default=(), converter=to_tuple,
        metadata=wire("image_urls", encoding="url_list", models=(O3_I2V,), upload=True))
    prompt: str = attrs.field(default="", metadata=wire("prompt"))
    negative_prompt: str | None = attrs.field(
        default=None, metadata=wire("negative_prompt", models=(V3_I2V,)))
    duration: int = attrs.field(default=5, metadata=wire("duration", always=True))
    aspect_ratio: AspectRatio | None = attrs.field(
        default=None, metadata=wire("aspect_ratio", models=_FULL))
    quality: Quality = attrs.field(default="720p", metadata=wire("quality", always=True))
    sound: bool = attrs.field(default=False, metadata=wire(
        "sound", encoding="on_off", models=_FULL, always=True))
    multi_shot: ShotType | None = attrs.field(default=None, metadata=wire(
        "model_params", encoding="shot_type", models=_FULL))
    shots: tuple[Shot, ...] = attrs.field(default=(), converter=to_tuple, metadata=wire(
        "model_params.multi_prompt", encoding="shots", models=_FULL))
    elements: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, metadata=wire(
        "model_params.element_list", encoding="elements", models=_FULL))
    watermark: bool | None = attrs.field(default=None, metadata=wire(
        "model_params.watermark_info", encoding="watermark", models=_FULL))
    callback_url: str | None = attrs.field(default=None, metadata=wire("callback_url"))
    allow_local_callback: bool = attrs.field(default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        rules = check_model(self, IMAGE_MODELS)
        check_common(self, rules)
        for name in ("image_start", "image_end"):
            if getattr(self, name) is not None:
                check_image(self, name, getattr(self, name))
        for number, image in enumerate(self.images):
            check_image(self, f"images[{number}]", image)
        self._check_frames()
        normalise_shots(self, rules, prompt_required=self.model == O3_I2V)

    def _check_frames(self) -> None:
        if self.model == V3_I2V and self.image_start is None and self.image_end is None:
            raise fail(self, "image_start", f"or image_end is required for {self.model}", None)
        if self.model == TURBO_I2V and self.image_start is None:
            raise fail(self, "image_start", f"is required for {self.model}", None)
        if self.model != O3_I2V:
            return
        if self.image_end is not None and self.image_start is None:
            raise fail(self, "image_end", "needs image_start", self.image_end)
        if self.image_end is not None and self.images:
            raise fail(self, "image_end", "is not allowed beside reference images",
                       self.image_end)
        if self.image_start is not None and len(self.elements) > 3:
            raise fail(self, "elements", "may hold at most 3 elements with a first frame",
                       self.elements)
        if len(self.images) + len(self.elements) > 7:
            raise fail(self, "images", "and elements may number at most 7 together",
                       len(self.images) + len(self.elements))

    @property
    def estimated_credits(self) -> float | None:
        """Credits at the published prices (None if unpublished, as for 4k)."""
        return estimated(self, self.duration)


@attrs.frozen(kw_only=True)
class MotionControl:
    """A motion-control request (``kling-v3-motion-control``): a character image moved
    like the person in a reference video.

    Attributes:
        image: the character: an https URL or a local ``pathlib.Path`` (uploaded).
        video: the reference video's https URL (3-30 s, at most 100 MB, 340-3850 px).
        character_orientation: ``"image"`` (keep the image's orientation; output at most
            10 s) or ``"video"`` (follow the video's; at most 30 s).
        prompt: optional guidance, at most 2500 characters.
        quality: ``"720p"`` (default) or ``"1080p"``.
        keep_sound: keep the reference video's sound (default True).
        elements: at most one custom element id, only with ``character_orientation="video"``.
        video_seconds: the reference video's length, if you know it: the output is as long
            (capped by the orientation), so it prices the request. Not sent.
        watermark, callback_url, allow_local_callback: as for :class:`TextToVideo`.
    """

    model: str = attrs.field(default=MOTION)
    image: ImageInput = attrs.field(metadata=wire("image_urls", encoding="url_list",
                                                  upload=True))
    video: str = attrs.field(metadata=wire("video_urls", encoding="url_list"))
    character_orientation: Orientation = attrs.field(
        metadata=wire("model_params.character_orientation"))
    prompt: str = attrs.field(default="", metadata=wire("prompt"))
    quality: Quality = attrs.field(default="720p", metadata=wire("quality", always=True))
    keep_sound: bool = attrs.field(default=True, metadata=wire("keep_sound", always=True))
    elements: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, metadata=wire(
        "model_params.element_list", encoding="elements"))
    video_seconds: float | None = None
    watermark: bool | None = attrs.field(default=None, metadata=wire(
        "model_params.watermark_info", encoding="watermark"))
    callback_url: str | None = attrs.field(default=None, metadata=wire("callback_url"))
    allow_local_callback: bool = attrs.field(default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        rules = check_model(self, (MOTION,))
        check_common(self, rules)
        check_image(self, "image", self.image)
        video: object = self.video
        if not isinstance(video, str) or unset(video):
            raise TypeError(f"MotionControl.video must be a URL string; got {video!r}")
        check_image(self, "video", video)
        if self.character_orientation not in ("image", "video"):
            raise fail(self, "character_orientation", "must be 'image' or 'video'",
                       self.character_orientation)
        if not isinstance(self.keep_sound, bool):
            raise TypeError(f"MotionControl.keep_sound must be a bool; got {self.keep_sound!r}")
        if self.elements and self.character_orientation != "video":
            raise fail(self, "elements", "need character_orientation='video'", self.elements)
        seconds: object = self.video_seconds
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(
                seconds, int | float) or not 3 <= seconds <= 30):
            raise fail(self, "video_seconds", "must be the reference video's length, 3-30 s",
                       seconds)

    @property
    def estimated_credits(self) -> float | None:
        """Credits at the published prices, if ``video_seconds`` is known (else None)."""
        if self.video_seconds is None:
            return None
        cap = 10 if self.character_orientation == "image" else 30
        return estimated(self, min(self.video_seconds, cap))
