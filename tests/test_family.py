"""The Kling family: every model's rules in the SDK agree with the Emulator's independent
validator (property tests), each reaches the wire as documented, local images are
uploaded once and checked first, and cost is known before money is spent."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import kling_async as kling
from kling_async._convert import request_body
from kling_async.testing import Emulator, Fault
from kling_async.testing._family import validate_family
from kling_async.testing._validate import BodyError

from .cli_helpers import SCALE, cli, write_prompts
from .conftest import make_client

URL = "https://example.com/frame.png"
VIDEO = "https://example.com/dance.mp4"
FAMILY = [
    (kling.TextToVideo, "kling-v3-turbo-text-to-video"),
    (kling.TextToVideo, "kling-o3-text-to-video"),
    (kling.ImageToVideo, "kling-v3-image-to-video"),
    (kling.ImageToVideo, "kling-v3-turbo-image-to-video"),
    (kling.ImageToVideo, "kling-o3-image-to-video"),
    (kling.MotionControl, "kling-v3-motion-control"),
]


def png(width: int, height: int) -> bytes:
    """A real PNG of ``width`` x ``height`` pixels."""
    rows = b"".join(b"\x00" + b"\x30\x60\x90" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# -- the SDK and the Emulator agree on every model's rules ------------------------------------

SHOT_SETS = [(), (kling.Shot("wide", 5),), (kling.Shot("a", 2), kling.Shot("b", 3)),
             (kling.Shot("x" * 513, 5),)]
# Valid values come more often than invalid ones, so both outcomes are well covered.
POOLS: dict[str, list[Any]] = {
    "prompt": ["a lighthouse at dusk"] * 4 + ["", " ", "x" * 2501],
    "duration": [3, 5, 5, 10, 15, 2, 16],
    "quality": ["720p", "720p", "1080p", "4k", "8k"],
    "sound": [False, False, True],
    "aspect_ratio": [None, None, "9:16", "4:3"],
    "negative_prompt": [None, None, "blur"],
    "multi_shot": [None, None, None, "customize", "intelligence"],
    "shots": [(), (), *SHOT_SETS],
    "elements": [(), (), ("e1",), ("e1", "e2", "e3", "e4"), tuple(f"e{i}" for i in range(8))],
    "watermark": [None, True],
    "image_start": [URL, URL, None, "ftp://example.com/a.png"],
    "image_end": [None, None, URL],
    "images": [(), (), (URL,), (URL,) * 5],
    "image": [URL],
    "video": [VIDEO],
    "character_orientation": ["image", "video", "image", "video", "sideways"],
    "keep_sound": [True, False],
}


@st.composite
def family_fields(draw: st.DrawFn) -> tuple[type[Any], dict[str, Any]]:
    """A request class and a mix of valid and invalid field values for one model."""
    cls, model = draw(st.sampled_from(FAMILY))
    names = [a.name for a in attrs.fields(cls) if a.name in POOLS]
    fields: dict[str, Any] = {"model": model, "prompt": "a lighthouse at dusk"}
    if cls is kling.ImageToVideo:
        fields["image_start"] = URL  # a valid start; the draws below change any of it
    for name in names:
        required = name in ("image", "video", "character_orientation")
        if required or draw(st.integers(0, 2)) == 0:  # each other field a third of the time
            fields[name] = draw(st.sampled_from(POOLS[name]))
    return cls, fields


def unchecked(cls: type[Any], fields: dict[str, Any]) -> Any:
    """The request as the SDK would send it, without its checks (shots still imply
    customize, as on construction)."""
    request = object.__new__(cls)
    for field in attrs.fields(cls):
        value = fields.get(field.name, field.default)
        if isinstance(value, attrs.Factory):  # type: ignore[arg-type]
            value = value.factory()
        object.__setattr__(request, field.name, value)
    if getattr(request, "shots", ()) and getattr(request, "multi_shot", "") is None:
        object.__setattr__(request, "multi_shot", "customize")
    return request


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family_fields())
@example((kling.ImageToVideo, {  # once found by the search: shots with intelligence
    "model": "kling-v3-image-to-video", "prompt": "a lighthouse at dusk", "image_start": URL,
    "multi_shot": "intelligence", "shots": (kling.Shot(prompt="wide", duration=5),)}))
def test_the_sdk_and_the_emulator_agree_on_every_model(
        drawn: tuple[type[Any], dict[str, Any]]) -> None:
    cls, fields = drawn
    refused: Exception | None = None
    try:
        request = cls(**fields)
    except (ValueError, TypeError) as exc:
        refused = exc
    if refused is None:
        validate_family(request_body(request), lambda url: True)  # accepted as sent
        return
    assert str(refused).startswith(f"{cls.__name__}.")  # names the class and the field
    if (fields.get("multi_shot") == "intelligence" and fields.get("shots")
            and str(refused).startswith(f"{cls.__name__}.shots are only allowed")):
        # Stricter than the server on purpose: with shot_type=intelligence the model cuts
        # the shots itself (multi_prompt is required only with customize, per the API
        # reference), so shots given with it would be dropped silently. The SDK refuses
        # them before anything is paid; the server (and the Emulator) accept the body.
        return
    with pytest.raises(BodyError):
        validate_family(request_body(unchecked(cls, fields), every_field=True),
                        lambda url: True)


# -- on the wire -------------------------------------------------------------------------------

@pytest.mark.parametrize(("request_", "body"), [
    (kling.TextToVideo(model="kling-v3-turbo-text-to-video", prompt="a", quality="1080p",
                       aspect_ratio="9:16"),
     {"model": "kling-v3-turbo-text-to-video", "prompt": "a", "duration": 5,
      "quality": "1080p", "aspect_ratio": "9:16"}),
    (kling.TextToVideo(model="kling-o3-text-to-video", prompt="<<<element_1>>> runs",
                       elements=["el-1"], sound=True, watermark=False),
     {"model": "kling-o3-text-to-video", "prompt": "<<<element_1>>> runs", "duration": 5,
      "quality": "720p", "sound": "on", "model_params": {
          "element_list": [{"element_id": "el-1"}], "watermark_info": {"enabled": False}}}),
    (kling.ImageToVideo(image_start=URL, image_end=URL, prompt="zoom", duration=10,
                        negative_prompt="blur"),
     {"model": "kling-v3-image-to-video", "image_start": URL, "image_end": URL,
      "prompt": "zoom", "negative_prompt": "blur", "duration": 10, "quality": "720p",
      "sound": "off"}),
    (kling.ImageToVideo(model="kling-v3-turbo-image-to-video", image_start=URL),
     {"model": "kling-v3-turbo-image-to-video", "image_start": URL, "duration": 5,
      "quality": "720p"}),
    (kling.ImageToVideo(model="kling-o3-image-to-video", prompt="<<<image_1>>> waves",
                        images=[URL], shots=[kling.Shot("a", 2), kling.Shot("b", 3)]),
     {"model": "kling-o3-image-to-video", "image_urls": [URL], "prompt": "<<<image_1>>> waves",
      "duration": 5, "quality": "720p", "sound": "off", "model_params": {
          "multi_shot": True, "shot_type": "customize", "multi_prompt": [
              {"index": 1, "prompt": "a", "duration": "2"},
              {"index": 2, "prompt": "b", "duration": "3"}]}}),
    (kling.MotionControl(image=URL, video=VIDEO, character_orientation="video",
                         elements=["el-9"], keep_sound=False, quality="1080p"),
     {"model": "kling-v3-motion-control", "image_urls": [URL], "video_urls": [VIDEO],
      "quality": "1080p", "keep_sound": False, "model_params": {
          "character_orientation": "video", "element_list": [{"element_id": "el-9"}]}}),
], ids=lambda v: getattr(v, "model", "body"))
async def test_each_model_reaches_the_emulator_as_documented(
        emulator: Emulator, request_: Any, body: dict[str, Any]) -> None:
    async with make_client(emulator) as client:
        snapshot = await client.submit(request_)
    assert emulator.received[-1] == body
    assert snapshot.model == request_.model


@pytest.mark.parametrize(("cls", "fields", "field"), [
    (kling.TextToVideo, {"model": "kling-v3-turbo-text-to-video", "prompt": "a",
                         "quality": "4k"}, "quality"),
    (kling.TextToVideo, {"model": "kling-v3-turbo-text-to-video", "prompt": "a",
                         "sound": True}, "sound"),
    (kling.TextToVideo, {"model": "kling-o3-text-to-video", "prompt": "a",
                         "multi_shot": "intelligence"}, "multi_shot"),
    (kling.TextToVideo, {"model": "kling-o3-text-to-video", "prompt": "a",
                         "negative_prompt": "x"}, "negative_prompt"),
    (kling.TextToVideo, {"model": "kling-v3-image-to-video", "prompt": "a"}, "model"),
    (kling.ImageToVideo, {"prompt": "a"}, "image_start"),
    (kling.ImageToVideo, {"model": "kling-v3-turbo-image-to-video", "image_end": URL},
     "image_end"),
    (kling.ImageToVideo, {"model": "kling-o3-image-to-video", "image_end": URL,
                          "prompt": "a"}, "image_end"),
    (kling.ImageToVideo, {"model": "kling-o3-image-to-video", "image_start": URL},
     "prompt"),
    (kling.ImageToVideo, {"image_start": "frame.png"}, "image_start"),
    (kling.ImageToVideo, {"image_start": URL, "elements": ["a", "b", "c", "d"]},
     "elements"),
    (kling.MotionControl, {"image": URL, "video": VIDEO, "character_orientation": "image",
                           "elements": ["e"]}, "elements"),
    (kling.MotionControl, {"image": URL, "video": VIDEO, "character_orientation": "video",
                           "video_seconds": 45}, "video_seconds"),
])
def test_violations_name_the_class_and_field(cls: type[Any], fields: dict[str, Any],
                                             field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{field} "):
        cls(**fields)


# -- local images ------------------------------------------------------------------------------

async def test_an_image_batch_from_local_files_runs_end_to_end(tmp_path: Path) -> None:
    frames = []
    for n in range(3):
        frames.append(tmp_path / f"product-{n}.png")
        frames[-1].write_bytes(png(640 + n, 480))
    requests = [kling.ImageToVideo(image_start=frame, prompt="slow turntable spin")
                for frame in frames]
    requests.append(kling.ImageToVideo(image_start=frames[0], prompt="a second take"))
    async with Emulator(time_scale=SCALE, seed=4) as emu:
        async with emu.client() as client, client.generate_many(
                requests, download_to=tmp_path / "clips") as events:
            done = [e async for e in events if isinstance(e, kling.Succeeded)]
        stats = emu.statistics()
        hosted = dict(emu.world.uploads)
        sent = [body["image_start"] for body in emu.received]
        asked = list(emu.world.upload_requests)
    assert len(done) == 4
    assert all(e.path is not None and e.path.stat().st_size > 0 for e in done)
    assert stats.count("upload") == 3  # the repeated frame was uploaded once
    assert sorted(hosted.values()) == sorted(f.read_bytes() for f in frames)
    assert all(url.startswith(emu.url + "/uploads/") for url in sent)
    assert len(set(sent)) == 3
    # The upload host saw the file and the key, and nothing else of the user's.
    assert asked[0]["keys"] == ["base64_data"]
    assert "user-agent" not in asked[0]["headers"]
    assert "idempotency-key" not in asked[0]["headers"]


@pytest.mark.parametrize(("data", "problem"), [
    (png(200, 400), "at least 300 px"),
    (png(1000, 300), "within 1:2.5"),
    (b"GIF89a" + b"\x00" * 100, "not a png, jpeg image"),
    (b"%PDF-1.4 not an image", "not a png, jpeg image"),
])
async def test_a_bad_local_image_is_refused_before_anything_is_sent(
        emulator: Emulator, tmp_path: Path, data: bytes, problem: str) -> None:
    frame = tmp_path / "frame.png"
    frame.write_bytes(data)
    async with make_client(emulator) as client:
        with pytest.raises(kling.ImageFileError, match=problem) as caught:
            await client.submit(kling.ImageToVideo(image_start=frame))
    assert "ImageToVideo.image_start" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    stats = emulator.statistics()
    assert stats.count("upload") == 0
    assert stats.tasks_created == 0


async def test_upload_returns_a_url_and_retries_a_failing_host(emulator: Emulator,
                                                                tmp_path: Path) -> None:
    emulator.fail_next("upload", Fault.error(503))
    emulator.fail_next("upload", Fault.raw(b"[" * 200_000))  # deeply nested: unreadable
    emulator.fail_next("upload", Fault.raw(b" " * 9_000_000))  # over the 8 MB answer cap
    async with make_client(emulator) as client:
        url = await client.upload(png(320, 320))
        again = await client.upload(png(320, 320))
        with pytest.raises(kling.ImageFileError, match="cannot be read"):
            await client.upload(tmp_path / "missing.png")
    assert url == again
    assert url.startswith(emulator.url + "/uploads/")
    stats = emulator.statistics()
    assert stats.count("upload", 503) == 1
    assert stats.count("upload", 200) == 3  # two unreadable answers, then the upload


# -- cost ----------------------------------------------------------------------------------------

def test_estimates_follow_the_published_prices() -> None:
    assert kling.TextToVideo(prompt="a").estimated_credits == 27.0  # 5.4 x 5 s
    assert kling.TextToVideo(prompt="a", quality="1080p", sound=True,
                             duration=10).estimated_credits == 108.0
    assert kling.TextToVideo(prompt="a", quality="4k").estimated_credits is None
    assert kling.TextToVideo(prompt="a", model="kling-v3-turbo-text-to-video",
                             quality="1080p").estimated_credits == 45.0
    assert kling.ImageToVideo(image_start=URL, model="kling-o3-image-to-video", prompt="a",
                              sound=True).estimated_credits == 36.018
    motion = kling.MotionControl(image=URL, video=VIDEO, character_orientation="image")
    assert motion.estimated_credits is None
    assert attrs.evolve(motion, video_seconds=25).estimated_credits == round(8.1648 * 10, 4)


async def test_max_credits_below_the_estimate_refuses_before_any_request(
        emulator: Emulator) -> None:
    requests = [kling.TextToVideo(prompt=f"clip {n}") for n in range(4)]  # 4 x 27
    async with make_client(emulator) as client:
        with pytest.raises(ValueError, match=r"estimated at 108 credits.*max_credits=100"):
            async with client.generate_many(requests, max_credits=100):
                pass
        with pytest.raises(ValueError, match="published price"):
            async with client.generate_many(
                    [kling.TextToVideo(prompt="a", quality="4k")], max_credits=1000):
                pass
    assert sum(emulator.statistics().requests.values()) == 0


async def test_max_credits_stops_submitting_when_reservations_would_pass_it(
        emulator: Emulator) -> None:
    """The server reserves more than the estimate (motion control is billed on the
    reference video): the batch stops before the reservations pass the cap."""
    motion = kling.MotionControl(image=URL, video=VIDEO, character_orientation="image",
                                 video_seconds=3)  # estimated 3 s, billed 10 s
    async with make_client(emulator) as client:
        emulator.advance(0)
        async with client.generate_many([motion] * 4, max_credits=100,
                                        submit_concurrency=1) as events:
            outcomes = []
            async for event in events:
                if isinstance(event, kling.Submitted):
                    emulator.advance(1000)
                if isinstance(event, kling.Succeeded | kling.Failed):
                    outcomes.append(event)
    refused = [e for e in outcomes if isinstance(e, kling.Failed)]
    assert emulator.statistics().tasks_created == 1  # 81.6 reserved; 24.5 more would pass
    assert len(refused) == 3
    assert all(isinstance(e.error, kling.CreditLimitError) for e in refused)


async def test_the_command_estimates_and_refuses_a_cap(tmp_path: Path) -> None:
    prompts = Path(__file__).parents[1] / "examples" / "prompts.txt"
    lines = [line for line in prompts.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    code, out, _ = await cli("batch", str(prompts), "--out", str(tmp_path / "clips"),
                             "--estimate", "--quality", "1080p", emu=None)
    assert code == 0
    assert f"total: {7.1982 * 5 * len(lines):g} credits" in out
    assert out.count("kling-v3-text-to-video") == len(lines)
    async with Emulator(time_scale=SCALE, seed=4) as emu:
        code, _, err = await cli("batch", str(prompts), "--out", str(tmp_path / "clips"),
                                 "--max-credits", "50", emu=emu)
        assert sum(emu.statistics().requests.values()) == 0
    assert code == 2
    assert "max_credits=50" in err


async def test_the_command_animates_local_images(tmp_path: Path) -> None:
    (tmp_path / "cup.png").write_bytes(png(500, 500))
    table = tmp_path / "shots.csv"
    table.write_text("prompt,image,quality\nsteam rises,cup.png,1080p\n"
                     "a slow pan,cup.png,720p\n")
    async with Emulator(time_scale=SCALE, seed=4) as emu:
        code, out, err = await cli("batch", str(table), "--out", str(tmp_path / "clips"),
                                   emu=emu)
        bodies = list(emu.received)
        stats = emu.statistics()
    assert code == 0, err
    assert {b["model"] for b in bodies} == {"kling-v3-image-to-video"}
    assert stats.count("upload") == 1
    assert "credits reserved" in out
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 2
    write_prompts(tmp_path / "p.txt", 1)
    code, _, err = await cli("generate", "x", "-o", str(tmp_path / "x.mp4"), "--model",
                             "kling-v3-turbo-text-to-video", "--quality", "4k", emu=None)
    assert code == 2
    assert "TextToVideo.quality must be one of 720p, 1080p" in err


async def test_a_journaled_image_batch_resumes_without_paying_again(tmp_path: Path) -> None:
    frame = tmp_path / "frame.png"
    frame.write_bytes(png(400, 400))
    requests = [kling.ImageToVideo(image_start=frame, prompt=f"take {n}") for n in range(3)]
    async with Emulator(time_scale=SCALE, seed=4) as emu:
        for _ in range(2):
            journal = kling.Journal(tmp_path / "journal.sqlite3")
            async with emu.client() as client, client.generate_many(
                    requests, journal=journal) as events:
                kinds = [type(e).__name__ async for e in events
                         if not isinstance(e, kling.Progressed)]
            journal.close()
        stats = emu.statistics()
    assert kinds == ["Succeeded"] * 3  # the second run only reports
    assert stats.tasks_created == 3
    assert stats.count("upload") == 1
