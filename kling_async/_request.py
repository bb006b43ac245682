"""``TextToVideo`` and ``Shot``: text-to-video requests for the Kling models on EvoLink,
checked when they are built. The rules shared with the other request classes are in
``_request_rules``."""

from __future__ import annotations

from typing import Any

import attrs

from ._request_rules import (
    MAX_SHOT_PROMPT,
    O3_T2V,
    TURBO_T2V,
    V3_T2V,
    AspectRatio,
    ModelRules,
    Quality,
    ShotType,
    check_common,
    check_model,
    estimated,
    fail,
    is_int,
    to_tuple,
    wire,
)

TEXT_MODELS = (V3_T2V, TURBO_T2V, O3_T2V)
_SHOT_MODELS = (V3_T2V, O3_T2V)


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
        if not is_int(self.duration):
            raise TypeError(f"Shot.duration must be an integer; got {self.duration!r}")


@attrs.frozen(kw_only=True)
class TextToVideo:
    """A text-to-video request. Every documented rule of its model is checked here, so a
    bad request raises :class:`ValueError` naming the field before any money is spent.

    Attributes:
        model: ``"kling-v3-text-to-video"`` (default), ``"kling-v3-turbo-text-to-video"``
            (faster; 720p/1080p, no sound, no multi-shot parameters, no negative prompt
            or watermark) or ``"kling-o3-text-to-video"`` (Kling 3.0 Omni: customised
            shots only, ``elements``; no negative prompt).
        prompt: what to generate, at most 2500 characters. Required, unless the shots
            come from ``shots`` (``multi_shot="customize"``).
        negative_prompt: what should not appear (V3 only).
        duration: seconds of video, an integer from 3 to 15 (default 5). Billed per second.
        aspect_ratio: ``"16:9"``, ``"9:16"`` or ``"1:1"``; the server's default if None.
        quality: ``"720p"`` (default), ``"1080p"`` or ``"4k"`` (not on Turbo).
        sound: generate sound effects (sent as ``"on"``/``"off"``; changes the price).
        multi_shot: ``"customize"`` (you give ``shots``) or ``"intelligence"`` (the model
            cuts shots itself from ``prompt``; V3 only). Giving ``shots`` implies
            ``"customize"``.
        shots: 1-6 :class:`Shot` values whose durations add up to ``duration``; their
            indexes (1..n) are assigned for you.
        elements: ids of custom elements (O3: at most 7), referred to in the prompt as
            ``<<<element_1>>>``.
        watermark: add a watermark (True/False); the server's default if None.
        callback_url: an HTTPS URL the server POSTs the finished task to (at most 2048
            characters, no private or loopback address).
        allow_local_callback: accept ``http://`` and private or loopback callback hosts.
            For tests against the Emulator only; the real service refuses them.
    """

    model: str = attrs.field(default=V3_T2V)
    prompt: str = attrs.field(default="", metadata=wire("prompt", always=True))
    negative_prompt: str | None = attrs.field(
        default=None, metadata=wire("negative_prompt", models=(V3_T2V,)))
    duration: int = attrs.field(default=5, metadata=wire("duration", always=True))
    aspect_ratio: AspectRatio | None = attrs.field(default=None,
                                                   metadata=wire("aspect_ratio"))
    quality: Quality = attrs.field(default="720p", metadata=wire("quality", always=True))
    sound: bool = attrs.field(default=False, metadata=wire(
        "sound", encoding="on_off", models=_SHOT_MODELS, always=True))
    multi_shot: ShotType | None = attrs.field(default=None, metadata=wire(
        "model_params", encoding="shot_type", models=_SHOT_MODELS))
    shots: tuple[Shot, ...] = attrs.field(default=(), converter=to_tuple, metadata=wire(
        "model_params.multi_prompt", encoding="shots", models=_SHOT_MODELS))
    elements: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, metadata=wire(
        "model_params.element_list", encoding="elements", models=(O3_T2V,)))
    watermark: bool | None = attrs.field(default=None, metadata=wire(
        "model_params.watermark_info", encoding="watermark", models=_SHOT_MODELS))
    callback_url: str | None = attrs.field(default=None, metadata=wire("callback_url"))
    allow_local_callback: bool = attrs.field(default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        rules = check_model(self, TEXT_MODELS)
        check_common(self, rules)
        normalise_shots(self, rules, prompt_required=True)

    @property
    def shot_type(self) -> ShotType | None:
        """The ``shot_type`` sent to the server (``None`` for a single-shot video)."""
        return self.multi_shot

    @property
    def estimated_credits(self) -> float | None:
        """Credits this request costs at the published prices (None if unpublished, as
        for 4k); the server's ``usage.credits_reserved`` is the authority."""
        return estimated(self, self.duration)


def normalise_shots(req: Any, rules: ModelRules, *, prompt_required: bool) -> None:
    """Check ``multi_shot`` and ``shots`` against the model; ``shots`` imply
    ``multi_shot="customize"`` (set on the frozen request here)."""
    if req.multi_shot is None and req.shots:
        object.__setattr__(req, "multi_shot", "customize")
    if req.multi_shot not in (None, "customize", "intelligence"):
        raise fail(req, "multi_shot", "must be 'customize', 'intelligence' or None",
                   req.multi_shot)
    if req.multi_shot is not None and req.multi_shot not in rules.shot_types:
        raise fail(req, "multi_shot", f"must be one of {', '.join(rules.shot_types)} for "
                   f"{req.model}", req.multi_shot)
    if req.multi_shot != "customize":
        if req.shots:
            raise fail(req, "shots", "are only allowed with multi_shot='customize'", req.shots)
        if prompt_required and not req.prompt.strip():
            raise fail(req, "prompt", "must not be empty (only customised multi-shot videos "
                       "may leave it empty)", req.prompt)
        return
    if not 1 <= len(req.shots) <= 6:
        raise fail(req, "shots", "must hold 1 to 6 shots for multi_shot='customize'",
                   req.shots)
    for number, shot in enumerate(req.shots):
        where = f"shots[{number}]"
        if not isinstance(shot, Shot):
            raise TypeError(f"{type(req).__name__}.{where} must be a Shot; got {shot!r}")
        if not shot.prompt.strip():
            raise fail(req, f"{where}.prompt", "must be a non-empty string", shot.prompt)
        if len(shot.prompt) > MAX_SHOT_PROMPT:
            raise fail(req, f"{where}.prompt", f"must be at most {MAX_SHOT_PROMPT} "
                       "characters", shot.prompt)
        if not 1 <= shot.duration <= req.duration:
            raise fail(req, f"{where}.duration", f"must be an integer from 1 to the "
                       f"video's duration ({req.duration})", shot.duration)
    total = sum(shot.duration for shot in req.shots)
    if total != req.duration:
        raise fail(req, "shots", f"durations must add up to duration={req.duration} "
                   f"(they add up to {total})", [s.duration for s in req.shots])
