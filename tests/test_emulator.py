"""The Emulator, checked with plain aiohttp requests (not the SDK), over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
import yarl

from kling_async.testing import Emulator, Fault
from kling_async.testing._timeline import make_timeline

from .receiver import run_receiver

BODY = {"model": "kling-v3-text-to-video", "prompt": "A cat on grass", "duration": 5}


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A raw session carrying the emulator's key."""
    async with aiohttp.ClientSession(
            base_url=emulator.url,
            headers={"Authorization": f"Bearer {emulator.api_key}"}) as session:
        yield session


async def create(http: aiohttp.ClientSession, body: dict[str, Any] | None = None,
                 **headers: str) -> tuple[int, dict[str, Any], Any]:
    async with http.post("/v1/videos/generations", json=body or BODY,
                         headers=headers) as response:
        return response.status, await response.json(), response.headers


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with http.get(path) as response:
        return response.status, await response.json()


async def test_create_answers_the_documented_task_shape(
        http: aiohttp.ClientSession) -> None:
    status, data, headers = await create(http)
    assert status == 200
    assert data["status"] == "pending"
    assert data["progress"] == 0
    assert data["object"] == "video.generation.task"
    assert data["type"] == "video"
    assert data["model"] == "kling-v3-text-to-video"
    prefix, unix, suffix = data["id"].rsplit("-", 2)
    assert prefix == "task-unified"
    assert unix == str(data["created"])
    assert len(suffix) == 8
    assert suffix.isalnum()
    assert suffix.lower() == suffix
    assert data["task_info"] == {"can_cancel": True, "estimated_time": 300,
                                 "video_duration": 5}
    assert data["usage"] == {"billing_rule": "per_second", "credits_reserved": 27.0,
                             "user_group": "default"}
    assert headers["x-request-id"].startswith("req-")


@pytest.mark.parametrize(("body", "credits"), [
    ({"duration": 10, "quality": "1080p"}, 71.982),
    ({"duration": 4, "quality": "720p", "sound": "on"}, 32.4),
    ({"duration": 3, "quality": "1080p", "sound": "on"}, 32.4),
])
async def test_reservations_use_published_prices(http: aiohttp.ClientSession,
                                                 body: dict[str, Any], credits: float) -> None:
    status, data, _ = await create(http, {**BODY, **body})
    assert status == 200
    assert data["usage"]["credits_reserved"] == pytest.approx(credits)


async def test_auth_is_required(emulator: Emulator) -> None:
    async with aiohttp.ClientSession(base_url=emulator.url) as anonymous:
        async with anonymous.post("/v1/videos/generations", json=BODY) as response:
            assert response.status == 401
            assert (await response.json())["error"]["type"] == "authentication_error"
        async with anonymous.get("/v1/credits",
                                 headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"


async def test_model_checks(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    status, data, _ = await create(http, {**BODY, "model": "no-such-model"})
    assert status == 404
    assert data["error"]["param"] == "model"
    emulator.add_account("sk-limited-key-123456", models=["kling-o3-text-to-video"])
    status, data, _ = await create(http, BODY, Authorization="Bearer sk-limited-key-123456")
    assert status == 403
    assert data["error"]["code"] == "model_access_denied"


@pytest.mark.parametrize(("change", "param"), [
    ({"duration": 2}, "duration"),
    ({"duration": 16}, "duration"),
    ({"duration": "5"}, "duration"),
    ({"prompt": "x" * 2501}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"quality": "8k"}, "quality"),
    ({"sound": True}, "sound"),
    ({"model_params": {"multi_shot": True}}, "model_params.shot_type"),
    ({"model_params": {"multi_shot": True, "shot_type": "customize"}},
     "model_params.multi_prompt"),
    ({"model_params": {"multi_shot": True, "shot_type": "customize", "multi_prompt": [
        {"index": 1, "prompt": "a", "duration": "2"}]}}, "model_params.multi_prompt"),
    ({"model_params": {"multi_shot": True, "shot_type": "customize", "multi_prompt": [
        {"index": 1, "prompt": "a", "duration": 5}]}}, "model_params.multi_prompt[0].duration"),
    ({"model_params": {"multi_shot": True, "shot_type": "customize", "multi_prompt": [
        {"index": 2, "prompt": "a", "duration": "5"}]}}, "model_params.multi_prompt[0].index"),
    ({"model_params": {"watermark_info": {"enabled": "yes"}}}, "model_params.watermark_info"),
    ({"callback_url": "http://example.com/hook"}, "callback_url"),
    ({"callback_url": "https://127.0.0.1/hook"}, "callback_url"),
])
async def test_validation_answers_400_with_param(http: aiohttp.ClientSession,
                                                 change: dict[str, Any], param: str) -> None:
    status, data, _ = await create(http, {**BODY, **change})
    assert status == 400
    assert data["error"]["code"] == "invalid_request"
    assert data["error"]["type"] == "invalid_request_error"
    assert data["error"]["param"] == param


async def test_customize_multi_shot_may_leave_prompt_empty(
        http: aiohttp.ClientSession) -> None:
    shots = [{"index": 1, "prompt": "sunrise", "duration": "4"},
             {"index": 2, "prompt": "pull back", "duration": "6"}]
    status, _, _ = await create(http, {**BODY, "prompt": "", "duration": 10, "model_params": {
        "multi_shot": True, "shot_type": "customize", "multi_prompt": shots}})
    assert status == 200


async def test_ledger_reserves_settles_and_refunds(emulator: Emulator,
                                                   http: aiohttp.ClientSession) -> None:
    emulator.add_account("sk-ledger-0000000000000", balance=60.0)
    auth = {"Authorization": "Bearer sk-ledger-0000000000000"}
    ok, _, _ = await create(http, BODY, **auth)
    emulator.fail_next_tasks("content_policy_violation")
    failing, failed_task, _ = await create(http, BODY, **auth)
    assert (ok, failing) == (200, 200)
    status, data, _ = await create(http, BODY, **auth)
    assert status == 402
    assert data["error"]["code"] == "insufficient_quota"
    async with http.get("/v1/credits", headers=auth) as response:
        token = (await response.json())["data"]["token"]
    assert token["remaining_credits"] == pytest.approx(6.0)
    emulator.advance(1000)
    async with http.get("/v1/credits", headers=auth) as response:
        token = (await response.json())["data"]["token"]
    assert token["remaining_credits"] == pytest.approx(33.0)  # the failed task is refunded
    assert token["used_credits"] == pytest.approx(27.0)
    status, data = await get(http, f"/v1/tasks/{failed_task['id']}")
    assert status == 403  # another account's task


async def test_concurrency_limit_answers_429_with_retry_after(
        emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.add_account("sk-small-000000000000000", max_concurrent_tasks=2)
    auth = {"Authorization": "Bearer sk-small-000000000000000"}
    for _ in range(2):
        assert (await create(http, BODY, **auth))[0] == 200
    status, data, headers = await create(http, BODY, **auth)
    assert status == 429
    assert data["error"]["code"] == "rate_limit_exceeded"
    assert "Retry-After" in headers
    emulator.advance(1000)
    assert (await create(http, BODY, **auth))[0] == 200
    assert emulator.statistics().peak_in_flight["sk-small-000000000000000"] == 2


async def test_request_rate_limit(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.add_account("sk-rate-0000000000000000", requests_per_second=2)
    auth = {"Authorization": "Bearer sk-rate-0000000000000000"}
    statuses = []
    for _ in range(4):
        async with http.get("/v1/credits", headers=auth) as response:
            statuses.append(response.status)
            retry_after = response.headers.get("Retry-After")
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    assert retry_after is not None
    assert 0 < float(retry_after) <= 1


async def test_lifecycle_moves_on_the_stepped_clock(emulator: Emulator,
                                                    http: aiohttp.ClientSession) -> None:
    _, task, _ = await create(http)
    seen = []
    for _ in range(80):
        status, data = await get(http, f"/v1/tasks/{task['id']}")
        assert status == 200
        seen.append((data["status"], data["progress"]))
        if data["status"] == "completed":
            break
        emulator.advance(5)
    statuses = [s for s, _ in seen]
    assert statuses[0] == "pending"
    assert "processing" in statuses
    assert statuses[-1] == "completed"
    progresses = [p for _, p in seen]
    assert progresses == sorted(progresses)
    assert any(90 <= p < 100 for p in progresses)
    assert data["results"][0].split("?")[0].endswith(f"/files/{task['id']}.mp4")
    assert data["task_info"]["can_cancel"] is False
    assert data["usage"]["credits_used"] == 27.0


def test_timelines_look_like_the_real_service() -> None:
    import random

    rng = random.Random(5)
    timelines = [make_timeline(rng, 300.0) for _ in range(200)]
    totals = [t.total for t in timelines]
    assert min(totals) >= 240
    assert max(totals) <= 360
    assert max(totals) - min(totals) > 60  # really spread, not a constant
    for timeline in timelines:
        assert timeline.status_at(timeline.queue_wait / 2) == ("pending", 0)
        steps = [b - a for (_, a), (_, b) in zip(timeline.steps, timeline.steps[1:],
                                                 strict=False)]
        assert len(set(steps)) > 1  # uneven
        assert any(90 <= p < 100 for _, p in timeline.steps)  # a plateau in the 90s


async def test_failed_tasks_carry_the_documented_error(emulator: Emulator,
                                                       http: aiohttp.ClientSession) -> None:
    emulator.fail_next_tasks("generation_timeout")
    _, task, _ = await create(http)
    emulator.advance(1000)
    status, data = await get(http, f"/v1/tasks/{task['id']}")
    assert status == 200
    assert data["status"] == "failed"
    assert data["error"]["code"] == "generation_timeout"
    assert data["error"]["type"] == "task_error"
    assert "results" not in data


async def test_read_errors(http: aiohttp.ClientSession) -> None:
    status, data = await get(http, "/v1/tasks/not-a-task")
    assert status == 400
    assert data["error"]["code"] == "invalid_task_id"
    status, data = await get(http, "/v1/tasks/task-unified-1-nothere0")
    assert status == 404
    assert data["error"]["code"] == "task_not_found"


async def test_batch_and_list(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    ids = [(await create(http))[1]["id"] for _ in range(3)]
    async with http.post("/v1/tasks/batch",
                         json={"task_ids": [*ids, "task-unified-1-unknown0"]}) as response:
        data = await response.json()
    assert sorted(t["id"] for t in data["data"]) == sorted(ids)
    async with http.post("/v1/tasks/batch", json={"task_ids": ids * 17}) as response:
        assert response.status == 400
    status, listing = await get(http, "/v1/tasks?page_size=2")
    assert status == 200
    assert listing["total"] == 3
    assert len(listing["data"]) == 2
    assert listing["data"][0]["id"] == ids[-1]
    emulator.batch_endpoint = emulator.list_endpoint = False
    async with http.post("/v1/tasks/batch", json={"task_ids": ids}) as response:
        assert response.status == 404
    assert (await get(http, "/v1/tasks"))[0] == 404


async def test_idempotency_keys(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    key = "key-0123456789abcdef"
    status, first, _ = await create(http, BODY, **{"Idempotency-Key": key})
    emulator.advance(100)
    status, again, headers = await create(http, BODY, **{"Idempotency-Key": key})
    assert status == 200
    assert again["id"] == first["id"]
    assert headers["Idempotency-Replayed"] == "true"
    status, data, _ = await create(http, {**BODY, "duration": 6}, **{"Idempotency-Key": key})
    assert status == 409
    assert data["error"]["code"] == "idempotency_conflict"
    status, data, _ = await create(http, BODY, **{"Idempotency-Key": "short"})
    assert status == 400
    assert data["error"]["param"] == "Idempotency-Key"
    stats = emulator.statistics()
    assert stats.tasks_created == 1
    assert stats.tasks_per_idempotency_key == {key: 1}
    assert stats.replays == 1


async def test_result_files_support_range_and_expire(emulator: Emulator,
                                                     http: aiohttp.ClientSession) -> None:
    emulator.result_size = 100_000
    _, task, _ = await create(http)
    emulator.advance(1000)
    _, data = await get(http, f"/v1/tasks/{task['id']}")
    url = yarl.URL(data["results"][0], encoded=True)  # presigned: sent byte for byte
    async with http.get(url) as response:
        body = await response.read()
        etag = response.headers["ETag"]
        assert response.status == 200
        assert response.headers["Content-Type"] == "video/mp4"
        assert int(response.headers["Content-Length"]) == len(body) == 100_000
    assert body[4:8] == b"ftyp"
    async with http.get(url, headers={"Range": "bytes=1000-"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == "bytes 1000-99999/100000"
        assert await response.read() == body[1000:]
    async with http.get(url, headers={"Range": "bytes=999999-"}) as response:
        assert response.status == 416
    async with http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}) as response:
        assert response.status == 200  # a changed file is sent whole
        assert response.headers["ETag"] == etag
    emulator.advance(24 * 3600 + 1)
    async with http.get(url) as response:
        assert response.status == 403


async def test_padded_results_stay_valid_mp4(tmp_path: Any) -> None:
    from kling_async.testing._files import result_bytes

    data = result_bytes(50_000)
    boxes, offset = [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        boxes.append(data[offset + 4:offset + 8])
        assert size >= 8
        offset += size
    assert offset == len(data) == 50_000
    assert boxes[0] == b"ftyp"
    assert b"moov" in boxes
    assert b"mdat" in boxes
    assert boxes[-1] == b"free"


async def test_callbacks_are_retried_and_can_be_duplicated() -> None:
    async with run_receiver(fail_first=2) as receiver, Emulator(
            time_scale=0, allow_local_callbacks=True, callback_duplicates=1) as emu, \
            aiohttp.ClientSession(base_url=emu.url,
                                  headers={"Authorization": f"Bearer {emu.api_key}"}) as http:
        _, task, _ = await create(http, {**BODY, "callback_url": receiver.url})
        emu.advance(1000)
        with anyio.fail_after(5):
            while len(receiver.bodies) < 2:
                emu.advance(1)
                await anyio.sleep(0.01)
    assert receiver.attempts == 4  # two refused, then the original and its duplicate
    assert all(b["id"] == task["id"] and b["status"] == "completed" for b in receiver.bodies)
    assert emu.statistics().callbacks_sent == 2


async def test_callbacks_never_leave_the_machine(emulator: Emulator,
                                                 http: aiohttp.ClientSession) -> None:
    await create(http, {**BODY, "callback_url": "https://example.com/hook"})
    emulator.advance(1000)
    assert emulator.statistics().callbacks_undeliverable == 1


@pytest.mark.parametrize(("fault", "check"), [
    (Fault.error(503, retry_after=2), lambda s, h, b: s == 503 and h["Retry-After"] == "2"),
    (Fault.error(429), lambda s, h, b: s == 429 and "Retry-After" not in h),
    (Fault.error(500, legacy_envelope=True),
     lambda s, h, b: s == 500 and json.loads(b)["error"]["code"] == 500),
    (Fault.html(502), lambda s, h, b: s == 502 and b.startswith(b"<html>")),
    (Fault.malformed_json(), lambda s, h, b: s == 200 and b.startswith(b"{")),
])
async def test_scripted_faults(emulator: Emulator, http: aiohttp.ClientSession,
                               fault: Fault, check: Any) -> None:
    emulator.fail_next("credits", fault)
    async with http.get("/v1/credits") as response:
        body = await response.read()
        assert check(response.status, response.headers, body)
    if fault.kind == "malformed":
        with pytest.raises(json.JSONDecodeError, match=r"Unterminated|Expecting"):
            json.loads(body)
    async with http.get("/v1/credits") as response:
        assert response.status == 200  # only the next call was scripted


async def test_reset_after_commit_still_creates_the_task(
        emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.fail_next("create", Fault.reset(after_commit=True))
    with pytest.raises(aiohttp.ClientPayloadError):
        await create(http)
    assert emulator.statistics().tasks_created == 1


async def test_slow_answers(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.fail_next("credits", Fault.slow(1.0))
    with pytest.raises(TimeoutError):
        async with http.get("/v1/credits", timeout=aiohttp.ClientTimeout(sock_read=0.1)):
            pass


async def test_fault_rates_are_seeded(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.set_fault_rate("*", Fault.error(500), 0.5)
    statuses = []
    for _ in range(40):
        async with http.get("/v1/credits") as response:
            statuses.append(response.status)
    assert 5 <= statuses.count(500) <= 35
    assert statuses.count(200) >= 5
    emulator.clear_faults()
    async with http.get("/v1/credits") as response:
        assert response.status == 200


async def test_statistics_count_routes_connections_and_bodies(
        emulator: Emulator, http: aiohttp.ClientSession) -> None:
    await create(http)
    await create(http)
    await get(http, "/v1/credits")
    stats = emulator.statistics()
    assert stats.count("create", 200) == 2
    assert stats.count("credits") == 1
    assert stats.connections == 1  # keep-alive: one TCP connection
    assert stats.duplicate_bodies == 1
    emulator.reset_statistics()
    assert emulator.statistics().count("create") == 0


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Emulator(host="0.0.0.0")  # noqa: S104 - the point is that it is refused


async def test_runs_as_a_module() -> None:
    with subprocess.Popen(
            [sys.executable, "-m", "kling_async.testing", "--time-scale", "1000"],
            stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip().split("=", 1)[1]
            key = process.stdout.readline().strip().split("=", 1)[1]
            async with aiohttp.ClientSession() as http, http.get(
                    f"{url}/v1/credits", headers={"Authorization": f"Bearer {key}"}) as response:
                assert response.status == 200
        finally:
            process.terminate()
            process.wait(timeout=10)


async def test_durations_can_disagree_with_the_estimate() -> None:
    async with Emulator(time_scale=0, seed=3, duration_factor=5) as emu, \
            aiohttp.ClientSession(base_url=emu.url, headers={
                "Authorization": f"Bearer {emu.api_key}"}) as session:
        _, task, _ = await create(session)
        assert task["task_info"]["estimated_time"] == 300
        emu.advance(400)  # past any duration the estimate allows
        _, data = await get(session, f"/v1/tasks/{task['id']}")
        assert data["status"] == "processing"
        emu.advance(1600)  # 5 x (300 + 20 %)
        _, data = await get(session, f"/v1/tasks/{task['id']}")
        assert data["status"] == "completed"
    with pytest.raises(ValueError, match="duration_factor"):
        Emulator(duration_factor=0)
