"""TextToVideo: every documented rule, checked at construction; every field on the wire."""

from __future__ import annotations

from typing import Any

import pytest

import kling_async as kling
from kling_async.testing import Emulator

from .conftest import make_client

SHOTS = (kling.Shot("sunrise over the ridge", 4), kling.Shot("camera pulls back", 6))


@pytest.mark.parametrize(("fields", "field", "error"), [
    ({"prompt": "x", "duration": 2}, "duration", ValueError),
    ({"prompt": "x", "duration": 16}, "duration", ValueError),
    ({"prompt": "x", "duration": 5.0}, "duration", TypeError),
    ({"prompt": "x", "duration": True}, "duration", TypeError),
    ({"prompt": "x" * 2501}, "prompt", ValueError),
    ({"prompt": ""}, "prompt", ValueError),
    ({"prompt": "   "}, "prompt", ValueError),
    ({"prompt": "x", "multi_shot": "intelligence", "shots": SHOTS}, "shots", ValueError),
    ({"prompt": "", "multi_shot": "intelligence"}, "prompt", ValueError),
    ({"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio", ValueError),
    ({"prompt": "x", "quality": "8k"}, "quality", ValueError),
    ({"prompt": "x", "sound": "on"}, "sound", TypeError),
    ({"prompt": "x", "multi_shot": "auto"}, "multi_shot", ValueError),
    ({"multi_shot": "customize"}, "shots", ValueError),
    ({"shots": [kling.Shot("a", 1)] * 5 + [kling.Shot("b", 1)] * 2, "duration": 7}, "shots",
     ValueError),
    ({"shots": [kling.Shot("a", 2), kling.Shot("b", 2)]}, "shots", ValueError),
    ({"shots": [kling.Shot("", 5)]}, "shots[0].prompt", ValueError),
    ({"shots": [kling.Shot("x" * 513, 5)]}, "shots[0].prompt", ValueError),
    ({"shots": [kling.Shot("a", 0), kling.Shot("b", 5)]}, "shots[0].duration", ValueError),
    ({"prompt": "x", "callback_url": "http://example.com/h"}, "callback_url", ValueError),
    ({"prompt": "x", "callback_url": "https://10.0.0.8/h"}, "callback_url", ValueError),
    ({"prompt": "x", "callback_url": "https://192.168.1.2/h"}, "callback_url", ValueError),
    ({"prompt": "x", "callback_url": "https://[::1]/h"}, "callback_url", ValueError),
    ({"prompt": "x", "callback_url": "https://localhost/h"}, "callback_url", ValueError),
    ({"prompt": "x", "callback_url": "https://a.com/" + "p" * 2040}, "callback_url",
     ValueError),
    ({"prompt": "x", "callback_url": "not a url"}, "callback_url", ValueError),
    ({"prompt": "x", "watermark": "yes"}, "watermark", TypeError),
    ({"prompt": 5}, "prompt", TypeError),
])
def test_violations_name_the_field(fields: dict[str, Any], field: str,
                                   error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        kling.TextToVideo(**fields)
    assert str(caught.value).startswith(f"TextToVideo.{field} ")


def test_shot_fields_are_typed() -> None:
    with pytest.raises(TypeError, match=r"Shot\.duration"):
        kling.Shot("a", "5")  # type: ignore[arg-type]


@pytest.mark.parametrize("fields", [
    {"prompt": "x", "duration": 3},
    {"prompt": "x", "duration": 15},
    {"prompt": "x" * 2500},
    {"shots": [kling.Shot("x" * 512, 5)]},
    {"shots": [kling.Shot(f"s{i}", 1) for i in range(5)], "duration": 5},
    {"shots": [kling.Shot(f"s{i}", 2) for i in range(6)], "duration": 12},
    {"prompt": "x", "multi_shot": "intelligence"},
    {"prompt": "x", "quality": "4k", "aspect_ratio": "1:1", "sound": True},
    {"prompt": "x", "callback_url": "https://hooks.example.com/" + "p" * 2000},
    {"prompt": "x", "callback_url": "http://127.0.0.1:9/h", "allow_local_callback": True},
])
def test_boundary_values_are_accepted(fields: dict[str, Any]) -> None:
    assert kling.TextToVideo(**fields).duration == fields.get("duration", 5)


async def test_rejected_requests_never_reach_the_server(emulator: Emulator) -> None:
    async with make_client(emulator) as client:
        with pytest.raises(ValueError, match="duration"):
            await client.submit(kling.TextToVideo(prompt="x", duration=20))
        with pytest.raises(TypeError):
            await client.submit({"prompt": "x"})  # type: ignore[arg-type]
    assert emulator.statistics().count("create") == 0


async def test_every_field_reaches_the_emulator_as_documented(emulator: Emulator) -> None:
    requests = [
        kling.TextToVideo(prompt="A cat", negative_prompt="people, text", duration=8,
                          aspect_ratio="9:16", quality="1080p", sound=True, watermark=False,
                          callback_url="http://127.0.0.1:1/hook", allow_local_callback=True),
        kling.TextToVideo(prompt="", shots=SHOTS, duration=10),
        kling.TextToVideo(prompt="A chef, three cuts", multi_shot="intelligence"),
    ]
    emulator.allow_local_callbacks = True
    async with make_client(emulator) as client:
        for request in requests:
            await client.submit(request)
    first, second, third = emulator.received
    assert first == {
        "model": "kling-v3-text-to-video", "prompt": "A cat", "negative_prompt": "people, text",
        "duration": 8, "aspect_ratio": "9:16", "quality": "1080p", "sound": "on",
        "model_params": {"watermark_info": {"enabled": False}},
        "callback_url": "http://127.0.0.1:1/hook"}
    assert second["model_params"] == {
        "multi_shot": True, "shot_type": "customize", "multi_prompt": [
            {"index": 1, "prompt": "sunrise over the ridge", "duration": "4"},
            {"index": 2, "prompt": "camera pulls back", "duration": "6"}]}
    assert second["sound"] == "off"
    assert second["quality"] == "720p"
    assert third["model_params"] == {"multi_shot": True, "shot_type": "intelligence"}
    assert "aspect_ratio" not in third
    assert "negative_prompt" not in third
