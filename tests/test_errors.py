"""Every documented error answer becomes its typed exception, with the response facts."""

from __future__ import annotations

import logging
import pickle
from datetime import UTC, datetime

import anyio
import pytest

import kling_async as kling
from kling_async._retry import parse_retry_after
from kling_async.testing import Emulator, Fault

from .conftest import FAST_RETRY, make_client


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "invalid_request", kling.InvalidRequestError),
    (401, "unauthorized", kling.AuthenticationError),
    (402, "insufficient_quota", kling.InsufficientCreditsError),
    (403, "model_access_denied", kling.PermissionDeniedError),
    (404, "task_not_found", kling.NotFoundError),
    (409, "idempotency_conflict", kling.IdempotencyConflictError),
    (429, "rate_limit_exceeded", kling.RateLimitError),
    (500, "internal_error", kling.ServerError),
    (502, "upstream_error", kling.ServerError),
    (503, "service_unavailable", kling.ServerError),
])
async def test_status_maps_to_class(emulator: Emulator, client: kling.Client, status: int,
                                    code: str, cls: type[kling.APIError]) -> None:
    emulator.fail_next("credits", Fault.error(status, code=code), times=FAST_RETRY.max_attempts)
    with pytest.raises(cls) as caught:
        await client.credits()
    error = caught.value
    assert isinstance(error, kling.APIError)
    assert isinstance(error, kling.KlingError)
    assert (error.status, error.code) == (status, code)
    assert error.message
    assert error.type
    assert error.request_id is not None
    assert error.request_id.startswith("req-")
    assert error.request_id in str(error)
    assert code in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    retried = status in (429, 500, 502, 503)
    expected = FAST_RETRY.max_attempts if retried else 1
    assert emulator.statistics().count("credits") == expected


async def test_real_refusals(emulator: Emulator) -> None:
    emulator.add_account("sk-poor-00000000000000000", balance=1.0)
    emulator.add_account("sk-other-model-0000000000", models=["kling-o3-text-to-video"])
    request = kling.TextToVideo(prompt="a cat")
    async with make_client(emulator, api_key="sk-poor-00000000000000000") as poor:
        with pytest.raises(kling.InsufficientCreditsError, match=r"(?i)top up"):
            await poor.submit(request)
        with pytest.raises(kling.NotFoundError):
            await poor.get("task-unified-1-missing0")
    async with make_client(emulator, api_key="sk-other-model-0000000000") as denied:
        with pytest.raises(kling.PermissionDeniedError) as caught:
            await denied.submit(request)
        assert caught.value.code == "model_access_denied"
    async with make_client(emulator, api_key="sk-wrong-key-00000000000") as stranger:
        with pytest.raises(kling.AuthenticationError, match="EVOLINK_API_KEY"):
            await stranger.submit(request)
    assert emulator.statistics().tasks_created == 0


async def test_html_error_page_still_maps(emulator: Emulator, client: kling.Client) -> None:
    emulator.fail_next("credits", Fault.html(502), times=FAST_RETRY.max_attempts)
    with pytest.raises(kling.ServerError) as caught:
        await client.credits()
    assert caught.value.status == 502
    assert "non-JSON error body" in caught.value.message
    assert "Bad Gateway" in str(caught.value)


async def test_legacy_envelope_with_integer_code(emulator: Emulator,
                                                 client: kling.Client) -> None:
    emulator.fail_next("credits", Fault.error(500, legacy_envelope=True),
                       times=FAST_RETRY.max_attempts)
    with pytest.raises(kling.ServerError) as caught:
        await client.credits()
    assert caught.value.code == "500"
    assert caught.value.suggestion == "retry after 30 seconds"


async def test_transient_errors_are_retried_to_success(emulator: Emulator,
                                                       client: kling.Client) -> None:
    emulator.fail_next("credits", Fault.error(503))
    emulator.fail_next("credits", Fault.html(502))
    emulator.fail_next("credits", Fault.malformed_json())
    credits = await client.credits()
    assert credits.remaining > 0
    assert emulator.statistics().count("credits") == 4


async def test_retry_after_pauses_the_whole_client(emulator: Emulator,
                                                   client: kling.Client) -> None:
    snap = await client.submit(kling.TextToVideo(prompt="a cat"))
    emulator.fail_next("credits", Fault.error(429, retry_after=0.4))
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.credits)
        with anyio.fail_after(5):
            while emulator.statistics().count("credits", 429) == 0:
                await anyio.sleep(0.005)
        started = anyio.current_time()
        await client.get(snap.id)  # another request, after the 429: it waits too
        waited = anyio.current_time() - started
    assert waited >= 0.3
    assert emulator.statistics().count("credits", 200) == 1


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Tue, 24 Nov 2026 12:00:05 GMT", now=now) == 5.0
    assert parse_retry_after("Tue, 24 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_unreadable_answers_become_decode_errors(emulator: Emulator,
                                                       client: kling.Client) -> None:
    emulator.fail_next("credits", Fault.malformed_json(), times=FAST_RETRY.max_attempts)
    with pytest.raises(kling.ResponseDecodeError):
        await client.credits()


async def test_the_key_never_shows(emulator: Emulator,
                                   caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-very-secret-0123456789abcdef"
    emulator.add_account(secret)
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    client = make_client(emulator, api_key=secret)
    seen.append(repr(client))
    async with client:
        emulator.fail_next("create", Fault.reset(after_commit=True))
        emulator.fail_next("credits", Fault.error(401), times=1)
        snap = await client.submit(kling.TextToVideo(prompt="a cat"))
        with pytest.raises(kling.AuthenticationError) as caught:
            await client.credits()
        seen += [repr(snap), str(caught.value), repr(caught.value), repr(client),
                 repr(client.statistics())]
        emulator.fail_next("create", Fault.error(500), times=FAST_RETRY.max_attempts)
        with pytest.raises(kling.SubmissionUnknownError) as unknown:
            await client.submit(kling.TextToVideo(prompt="a dog"))
        seen += [str(unknown.value), repr(unknown.value.__cause__)]
    seen += [record.getMessage() for record in caplog.records]
    assert caplog.records  # retries were logged
    assert all(secret not in text for text in seen)
