"""Hostile input: generated requests on our side, fuzzed answers on the server's side."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kling_async as kling
from kling_async._convert import CONVERTER, plain_snapshot, request_to_wire, snapshot_from_wire
from kling_async.testing import Emulator
from kling_async.testing._validate import BodyError, validate_body

from .conftest import make_client

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
               max_size=60).filter(lambda s: s.strip() != "")


@st.composite
def shot_lists(draw: st.DrawFn, duration: int) -> list[kling.Shot]:
    count = draw(st.integers(1, min(6, duration)))
    cuts = sorted(draw(st.lists(st.integers(1, duration - 1), min_size=count - 1,
                                max_size=count - 1, unique=True)))
    bounds = [0, *cuts, duration]
    return [kling.Shot(draw(text), b - a) for a, b in itertools.pairwise(bounds)]


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    duration = draw(st.integers(3, 15))
    fields: dict[str, Any] = {
        "duration": duration,
        "quality": draw(st.sampled_from(["720p", "1080p", "4k"])),
        "sound": draw(st.booleans()),
        "aspect_ratio": draw(st.sampled_from([None, "16:9", "9:16", "1:1"])),
        "watermark": draw(st.sampled_from([None, True, False])),
        "negative_prompt": draw(st.none() | text),
    }
    mode = draw(st.sampled_from(["single", "intelligence", "customize"]))
    if mode == "customize":
        fields["shots"] = draw(shot_lists(duration))
        fields["prompt"] = draw(st.just("") | text)
    else:
        fields["prompt"] = draw(text)
        if mode == "intelligence":
            fields["multi_shot"] = "intelligence"
    return fields


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_requests())
def test_every_valid_request_is_accepted_and_sent_as_documented(fields: dict[str, Any]) -> None:
    request = kling.TextToVideo(**fields)
    body = request_to_wire(request)
    validate_body(body)  # the Emulator's independent reading of the documented rules
    assert body["model"] == "kling-v3-text-to-video"
    assert body["duration"] == fields["duration"]
    assert body["sound"] == ("on" if fields["sound"] else "off")
    shots = body.get("model_params", {}).get("multi_prompt", [])
    assert [s["index"] for s in shots] == list(range(1, len(shots) + 1))
    assert all(isinstance(s["duration"], str) for s in shots)
    if shots:
        assert sum(int(s["duration"]) for s in shots) == fields["duration"]


VIOLATIONS: list[tuple[str, Any]] = [
    ("duration", st.integers(-100, 2) | st.integers(16, 1000)),
    ("prompt", st.text(min_size=2501, max_size=2600).filter(lambda s: s.strip() != "")),
    ("aspect_ratio", st.text(max_size=8).filter(lambda s: s not in ("16:9", "9:16", "1:1"))),
    ("quality", st.text(max_size=8).filter(lambda s: s not in ("720p", "1080p", "4k"))),
    ("callback_url", st.sampled_from(["http://example.com/x", "https://10.1.1.1/x",
                                      "https://127.0.0.1/x", "ftp://x/y", "nonsense"])),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), valid_requests(), st.sampled_from(VIOLATIONS))
def test_every_violation_is_refused_naming_the_field(
        data: st.DataObject, fields: dict[str, Any], violation: tuple[str, Any]) -> None:
    name, strategy = violation
    fields = {**fields, "prompt": fields["prompt"] or "x", "shots": (), "multi_shot": None,
              name: data.draw(strategy)}
    with pytest.raises(ValueError, match=rf"^TextToVideo\.{name} "):
        kling.TextToVideo(**fields)


@settings(max_examples=100, deadline=None)
@given(st.integers(3, 15), st.lists(st.integers(1, 15), min_size=1, max_size=6))
def test_shot_durations_must_add_up(duration: int, parts: list[int]) -> None:
    shots = [kling.Shot("shot", p) for p in parts]
    valid = sum(parts) == duration and all(p <= duration for p in parts)
    if valid:
        body = request_to_wire(kling.TextToVideo(shots=shots, duration=duration))
        validate_body(body)
    else:
        with pytest.raises(ValueError, match=r"TextToVideo\.shots"):
            kling.TextToVideo(shots=shots, duration=duration)
        with pytest.raises(BodyError):
            validate_body({"model": "kling-v3-text-to-video", "duration": duration,
                           "model_params": {"multi_shot": True, "shot_type": "customize",
                                            "multi_prompt": [
                                                {"index": i + 1, "prompt": "s",
                                                 "duration": str(p)}
                                                for i, p in enumerate(parts)]}})


# Values a task's fields may hold on the wire when they are odd.
ODD = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                st.text(max_size=12), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
USUAL: dict[str, list[Any]] = {  # documented values, and a few near misses
    "id": ["task-unified-1-abc", ""],
    "status": ["pending", "processing", "completed", "failed", "Processing", "cancelled"],
    "progress": [0, 37, 100, 101, -1, 37.5],
    "model": ["kling-v3-text-to-video", 7],
    "created": [1764000000, 1764000000.5, 10**12, -1],
    "results": [[], ["https://x/y.mp4"], None],
    "error": [None, {"code": "x", "message": "m"}],
    "estimated_time": [300, 300.0, -5, 2**60, 2**53, float("nan")],
    "video_duration": [5, 2**60 + 1, 5.0],
    "can_cancel": [True, False, "yes"],
    "usage": [None, {"billing_rule": "per_call", "credits_reserved": 50, "credits_used": None,
                     "user_group": "default"}, {"credits_reserved": True}],
    "request_id": ["req-1", 5],
}
INFO = ("estimated_time", "video_duration", "can_cancel")


@st.composite
def task_objects(draw: st.DrawFn) -> Any:
    """Task objects as a server might send them: a well-formed unfinished task, with up
    to three fields changed to another documented value, a near miss or an odd one, or
    left out (task_info fields at the top level or in task_info)."""
    task: dict[str, Any] = {"id": "task-unified-1-abc", "status": draw(st.sampled_from(
        ["pending", "processing"])), "progress": draw(st.integers(0, 100)),
        "model": "kling-v3-text-to-video", "created": 1764000000,
        "usage": USUAL["usage"][1], "results": []}
    info = {"estimated_time": 300, "video_duration": 5, "can_cancel": True}
    for name in draw(st.lists(st.sampled_from(sorted(USUAL)), max_size=3, unique=True)):
        value = draw(st.sampled_from(USUAL[name]) if draw(st.integers(0, 3)) else ODD)
        target = info if name in INFO and draw(st.booleans()) else task
        if draw(st.integers(0, 5)) == 0:
            task.pop(name, None)
            info.pop(name, None)
        else:
            target[name] = value
    task["task_info"] = draw(st.sampled_from([info, None, [1]]) | ODD) if draw(
        st.integers(0, 5)) == 0 else info
    return task


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task_objects(), st.sampled_from([None, "req-header"]),
       st.sampled_from([None, 240.0, 300.0]), st.sampled_from([None, "task-unified-1-abc",
                                                              "task-unified-2-xyz"]))
def test_the_fast_reading_of_a_task_equals_the_general_one(
        task: Any, request_id: str | None, estimate: float | None,
        task_id: str | None) -> None:
    """The hot path (plain_snapshot) reads what the converter reads (with the estimate
    known from earlier readings when it gives none; with or without the id asked
    about, equal or not), or leaves it to it."""
    try:
        fast = plain_snapshot(task, request_id, estimate=estimate, task_id=task_id)
    except Exception:  # it may refuse by raising: the general path reads it
        fast = None
    general_input = task if request_id is None else {**task, "request_id": request_id}
    try:
        general = CONVERTER.structure(general_input, kling.TaskSnapshot)
    except Exception:  # any refusal: the fast path must have refused too
        assert fast is None
        return
    if general.estimated_time is None and fast is not None:
        general = attrs.evolve(general, estimated_time=estimate)
    assert fast is None or fast == general
    assert snapshot_from_wire(task, request_id) == CONVERTER.structure(general_input,
                                                                       kling.TaskSnapshot)


def test_readings_share_the_values_a_task_already_holds() -> None:
    """A reading keeps no private copy of what the registry already holds (the id asked
    about, an equal estimate, the status and model strings): at 50,000 followed tasks
    each distinct object is one more for every full garbage collection to visit."""
    held_id, held_estimate = "".join(["task-unified-1-", "abc"]), 300.0
    answers = [json.loads(b'{"id": "task-unified-1-abc", "status": "processing", '
                          b'"progress": 40, "model": "kling-v3-text-to-video", '
                          b'"created": 1764000000, "task_info": {"estimated_time": 300}}')
               for _ in range(2)]
    first, second = (plain_snapshot(a, "req", estimate=held_estimate, task_id=held_id)
                     for a in answers)
    assert first is not None
    assert second is not None
    assert first == second
    assert first.id is held_id
    assert second.id is held_id
    assert first.estimated_time is held_estimate
    assert first.model is second.model
    assert first.raw_status is second.raw_status
    assert first.created is second.created
    other = plain_snapshot(answers[0], "req", estimate=240.0, task_id="task-unified-2-x")
    assert other is not None
    assert other.id == "task-unified-1-abc"
    assert other.estimated_time == 300.0


BROKEN: dict[str, bytes] = {
    "truncated JSON": b'{"id": "task-unified-1-x", "status": "pro',
    "HTML": b"<html><body>Gateway</body></html>",
    "invalid UTF-8": b'{"id": "\xff\xfe", "status": "pending"}',
    "not an object": b"[1, 2, 3]",
    "wrong id type": b'{"id": 5, "status": "pending"}',
    "missing fields": b"{}",
    "ten megabytes": b'{"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}',
    "progress of the wrong type": b'{"id": "ID", "status": "processing", "progress": "lots"}',
    "usage of the wrong type": b'{"id": "ID", "status": "processing", '
                               b'"usage": {"credits_reserved": [1, 2]}}',
}


async def test_fuzzed_answers_fail_one_task_not_the_poller() -> None:
    async with Emulator(time_scale=0, seed=6, batch_endpoint=False) as emu, \
            make_client(emu, max_in_flight=20) as client:
        snaps = [await client.submit(kling.TextToVideo(prompt=f"p{i}")) for i in range(13)]
        broken = dict(zip([s.id for s in snaps], BROKEN.values(), strict=False))
        for task_id, body in broken.items():
            emu.corrupt(task_id, body.replace(b'"ID"', json.dumps(task_id).encode()))
        healthy = [s.id for s in snaps if s.id not in broken]
        odd = {healthy[0]: {"progress": 150}, healthy[1]: {"progress": -20},
               healthy[2]: {"status": "exploding"},
               healthy[3]: {"surprise": {"a": [1]}, "usage": {"billing_rule": "x" * 100_000}}}
        for task_id, change in odd.items():
            emu.corrupt(task_id, json.dumps({**emu.task_json(task_id), **change}).encode())
        finals: dict[str, kling.TaskUpdate] = {}
        progress_seen: list[int] = []
        with anyio.fail_after(30):
            async with client.watch([s.id for s in snaps]) as updates:
                async for update in updates:
                    progress_seen.append(update.progress)
                    if update.is_final:
                        finals[update.task_id] = update
                    if len(finals) == len(broken):  # the broken ones gave up: heal the rest
                        for task_id in odd:
                            emu.corrupt(task_id, None)
                        emu.advance(1000)
    assert set(finals) == {s.id for s in snaps}
    for task_id in broken:
        assert isinstance(finals[task_id].error, kling.ResponseDecodeError), task_id
    for task_id in healthy:
        assert finals[task_id].error is None
        assert finals[task_id].status is kling.TaskStatus.COMPLETED
    assert all(0 <= p <= 100 for p in progress_seen)
