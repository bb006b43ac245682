"""Paid submissions: one key per submission, retried only with it, never paid twice."""

from __future__ import annotations

import pytest

import kling_async as kling
from kling_async.testing import Emulator, Fault

from .conftest import FAST_RETRY, make_client

REQUEST = kling.TextToVideo(prompt="A cat running on grass")


async def test_lost_answer_is_replayed_not_recreated(emulator: Emulator,
                                                     client: kling.Client) -> None:
    emulator.fail_next("create", Fault.reset(after_commit=True))
    snap = await client.submit(REQUEST)
    stats = emulator.statistics()
    assert stats.tasks_created == 1
    assert stats.replays == 1
    assert list(stats.tasks_per_idempotency_key.values()) == [1]
    assert emulator.statistics().count("create") == 2
    assert snap.id in {t for t in emulator.world.tasks}


async def test_read_timeout_after_commit_is_settled_with_the_same_key(
        emulator: Emulator) -> None:
    emulator.fail_next("create", Fault.slow(1.0, after_commit=True))
    async with make_client(emulator, timeouts=kling.Timeouts(submit=0.2)) as client:
        snap = await client.submit(REQUEST)
    stats = emulator.statistics()
    assert stats.tasks_created == 1
    assert stats.replays == 1
    assert snap.status is kling.TaskStatus.PENDING


async def test_unknown_outcome_carries_the_key_and_settles(emulator: Emulator,
                                                           client: kling.Client) -> None:
    emulator.fail_next("create", Fault.reset(after_commit=True), times=FAST_RETRY.max_attempts)
    with pytest.raises(kling.SubmissionUnknownError) as caught:
        await client.submit(REQUEST)
    key = caught.value.idempotency_key
    assert key in str(caught.value)
    assert emulator.statistics().tasks_created == 1
    snap = await client.submit(REQUEST, idempotency_key=key)
    stats = emulator.statistics()
    assert stats.tasks_created == 1
    assert stats.tasks_per_idempotency_key == {key: 1}
    assert snap.id == next(iter(emulator.world.tasks))


async def test_server_errors_retry_with_the_same_key(emulator: Emulator,
                                                     client: kling.Client) -> None:
    emulator.fail_next("create", Fault.error(502), times=2)
    await client.submit(REQUEST, idempotency_key="my-own-key-000000001")
    stats = emulator.statistics()
    assert stats.count("create") == 3
    assert stats.tasks_created == 1
    assert stats.tasks_per_idempotency_key == {"my-own-key-000000001": 1}


@pytest.mark.parametrize("fault", [
    Fault.error(400), Fault.error(401), Fault.error(402), Fault.error(403)])
async def test_refusals_are_never_retried(emulator: Emulator, client: kling.Client,
                                          fault: Fault) -> None:
    emulator.fail_next("create", fault)
    with pytest.raises(kling.APIError):
        await client.submit(REQUEST)
    assert emulator.statistics().count("create") == 1


async def test_conflicting_key_is_reported(emulator: Emulator, client: kling.Client) -> None:
    await client.submit(REQUEST, idempotency_key="shared-key-0000000001")
    with pytest.raises(kling.IdempotencyConflictError):
        await client.submit(kling.TextToVideo(prompt="another"),
                            idempotency_key="shared-key-0000000001")


@pytest.mark.parametrize("key", ["short", "x" * 97, "has space in it 000", "ключ-0000000000000"])
async def test_bad_keys_are_refused_before_sending(emulator: Emulator, client: kling.Client,
                                                   key: str) -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        await client.submit(REQUEST, idempotency_key=key)
    assert emulator.statistics().count("create") == 0


async def test_connect_errors_mean_nothing_was_sent() -> None:
    async with Emulator(time_scale=0) as emu:
        url = emu.url  # the port is free again once the Emulator stops
    client = kling.Client(emu.api_key, base_url=url, retry=FAST_RETRY)
    async with client:
        with pytest.raises(kling.ConnectError):
            await client.credits()
        with pytest.raises(kling.ConnectError):
            await client.submit(REQUEST)  # never sent, so not "unknown"


def test_generated_keys_are_valid_and_distinct() -> None:
    keys = {kling.new_idempotency_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(16 <= len(k) <= 96 for k in keys)


@pytest.mark.parametrize("url", ["http://example.com", "http://10.1.2.3:8080", "ftp://x"])
def test_key_never_travels_over_plain_http(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        kling.Client("sk-any-key", base_url=url)


def test_https_and_loopback_are_fine() -> None:
    kling.Client("sk-any-key", base_url="https://api.evolink.ai")
    kling.Client("sk-any-key", base_url="http://127.0.0.1:8000")
    kling.Client("sk-any-key", base_url="http://localhost:8000/")
