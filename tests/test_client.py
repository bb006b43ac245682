"""Client lifecycle: one use, clear misuse errors, clean across event loops."""

from __future__ import annotations

import asyncio

import anyio
import pytest

import kling_async as kling
from kling_async.testing import Emulator

from .conftest import make_client


async def test_entering_twice_is_refused(emulator: Emulator) -> None:
    client = make_client(emulator)
    async with client:
        with pytest.raises(RuntimeError, match="only once"):
            await client.__aenter__()
    with pytest.raises(RuntimeError, match="only once"):
        async with client:
            pass


async def test_use_before_enter_and_after_exit(emulator: Emulator) -> None:
    client = make_client(emulator)
    with pytest.raises(RuntimeError, match="async with"):
        await client.credits()
    async with client:
        assert (await client.credits()).remaining > 0
    with pytest.raises(RuntimeError, match="closed"):
        await client.submit(kling.TextToVideo(prompt="x"))
    with pytest.raises(RuntimeError, match="closed"):
        client.statistics()


def test_built_outside_a_loop_and_reused_across_asyncio_run() -> None:
    async def one_round() -> float:
        async with Emulator(time_scale=0) as emu, make_client(emu) as client:
            return (await client.credits()).remaining

    assert [asyncio.run(one_round()) for _ in range(3)] == [1_000_000.0] * 3


async def test_user_exceptions_come_out_unwrapped(emulator: Emulator) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with make_client(emulator):
            raise KeyError("mine")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVOLINK_API_KEY", raising=False)
    with pytest.raises(ValueError, match="EVOLINK_API_KEY"):
        kling.Client()
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-from-env")
    monkeypatch.setenv("EVOLINK_BASE_URL", "http://127.0.0.1:9")
    assert "127.0.0.1:9" in repr(kling.Client())


async def test_env_base_url_is_used(emulator: Emulator,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOLINK_API_KEY", emulator.api_key)
    monkeypatch.setenv("EVOLINK_BASE_URL", emulator.url)
    async with kling.Client() as client:
        assert (await client.credits()).remaining == 1_000_000.0


@pytest.mark.parametrize("task_id", ["abc", "", "task-unified-1/../x", "task-unified- 1"])
async def test_bad_task_ids_are_refused_before_sending(emulator: Emulator,
                                                       client: kling.Client,
                                                       task_id: str) -> None:
    with pytest.raises(ValueError, match="task id"):
        await client.get(task_id)
    with pytest.raises(ValueError, match="task id"):
        await client.wait_finished(task_id)
    assert emulator.statistics().count("get") == 0


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        kling.Client("k", base_url="http://127.0.0.1:1", max_in_flight=0)
    with pytest.raises(ValueError, match="max_requests_per_second"):
        kling.Client("k", base_url="http://127.0.0.1:1", max_requests_per_second=0)
    with pytest.raises(ValueError, match="min_interval"):
        kling.PollPolicy(min_interval=0)
    with pytest.raises(ValueError, match="batch_size"):
        kling.PollPolicy(batch_size=51)
    with pytest.raises(ValueError, match="AdaptiveLimit"):
        kling.AdaptiveLimit(initial=10, maximum=5)


async def test_get_and_credits(emulator: Emulator, client: kling.Client) -> None:
    snap = await client.submit(kling.TextToVideo(prompt="a cat", duration=10, quality="1080p"))
    again = await client.get(snap.id)
    assert again.id == snap.id
    assert again.status is kling.TaskStatus.PENDING
    assert snap.usage is not None
    assert snap.usage.credits_reserved == pytest.approx(71.982)
    credits = await client.credits()
    assert credits.remaining == pytest.approx(1_000_000 - 71.982)
    emulator.advance(1000)
    done = await client.get(snap.id)
    assert done.status is kling.TaskStatus.COMPLETED
    assert done.video_url is not None
    assert done.usage is not None
    assert done.usage.credits_used == pytest.approx(71.982)


async def test_the_emulator_hands_out_a_client_tuned_to_its_clock() -> None:
    async with Emulator(time_scale=3000) as emu, emu.client() as client:
        started = anyio.current_time()
        snap = await client.submit(kling.TextToVideo(prompt="a quick cat"))
        with anyio.fail_after(5):
            done = await client.wait_finished(snap.id)
        assert done.video_url
        assert anyio.current_time() - started < 2  # a 300 s task at 3000x, polled to match
    async with Emulator(time_scale=0) as emu, emu.client(max_in_flight=2) as client:
        snap = await client.submit(kling.TextToVideo(prompt="a stepped cat"))
        emu.advance(1000)
        with anyio.fail_after(5):
            assert (await client.wait_finished(snap.id)).status is kling.TaskStatus.COMPLETED
        assert client.statistics().capacity == 2
