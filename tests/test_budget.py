"""RedisBudget: many Clients (in one process here, in several in test_fleet.py) share one
account's slots, request budget and pauses on a real redis-server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import kling_async as kling
from kling_async.testing import Emulator, Fault

from .cli_helpers import SCALE, cli, write_prompts
from .conftest import FAST_POLL, FAST_RETRY
from .redis_server import RedisServer, free_port
from .test_lifecycle import cancelled_as_the_client_closes

SLOTS = "kling_async:{%s}:slots"
QUEUE = "kling_async:{%s}:queue"


@pytest.fixture
async def scaled_emulator() -> AsyncIterator[Emulator]:
    """Tasks that end by themselves in about a second; four slots in the account."""
    async with Emulator(time_scale=300, seed=5, max_concurrent_tasks=4) as emu:
        yield emu


def budget_client(emu: Emulator, budget: kling.RedisBudget, **options: object) -> kling.Client:
    """A fast-polling Client for ``emu`` sharing ``budget``."""
    settings: dict[str, object] = {"poll": kling.PollPolicy.scaled(emu.clock.time_scale or 300),
                                   "retry": FAST_RETRY, "max_requests_per_second": None,
                                   "budget": budget, "max_in_flight": 4}
    return emu.client(**{**settings, **options})


async def test_clients_sharing_a_budget_stay_within_the_account_limit(
        redis: RedisServer, scaled_emulator: Emulator) -> None:
    budget = kling.RedisBudget(redis.url, name="three", lease=2)
    outcomes: list[str] = []

    async def one(n: int) -> None:
        async with budget_client(scaled_emulator, budget) as client:
            requests = [kling.TextToVideo(prompt=f"client {n} clip {i}") for i in range(6)]
            async with client.generate_many(requests) as events:
                async for event in events:
                    if isinstance(event, kling.Succeeded | kling.Failed):
                        outcomes.append(type(event).__name__)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(one, n)
    stats = scaled_emulator.statistics()
    assert outcomes == ["Succeeded"] * 18
    assert stats.peak_in_flight[scaled_emulator.api_key] == 4  # used fully, never more
    assert stats.count("create", 429) == 0
    assert stats.tasks_created == 18
    assert redis.zcard(SLOTS % "three") == 0  # every slot came back


async def test_without_the_budget_the_same_clients_overrun_the_account(
        scaled_emulator: Emulator) -> None:
    """The failure the budget exists for: each Client believes it owns the account."""

    async def one(n: int) -> None:
        async with scaled_emulator.client(poll=FAST_POLL, retry=FAST_RETRY, max_in_flight=4,
                                          max_requests_per_second=None) as client:
            await client.submit(kling.TextToVideo(prompt=f"client {n}"))
            await client.submit(kling.TextToVideo(prompt=f"client {n} again"))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(one, n)
    assert scaled_emulator.statistics().count("create", 429) > 0


async def test_a_cancelled_wait_leaves_the_shared_queue_and_spends_nothing(
        redis: RedisServer) -> None:
    async with Emulator(time_scale=0, seed=5) as emu:
        budget = kling.RedisBudget(redis.url, name="cancel", lease=2)
        async with budget_client(emu, budget, max_in_flight=1) as holder, \
                budget_client(emu, budget, max_in_flight=1) as waiter:
            await holder.submit(kling.TextToVideo(prompt="holds the only slot"))
            with anyio.move_on_after(0.5) as scope:
                await waiter.submit(kling.TextToVideo(prompt="waits"))
            assert scope.cancelled_caught
            with anyio.fail_after(5):
                while redis.zcard(QUEUE % "cancel"):
                    await anyio.sleep(0.02)
            assert emu.statistics().tasks_created == 1
            assert redis.zcard(SLOTS % "cancel") == 1


async def test_a_closing_client_hands_its_tasks_to_a_live_one(redis: RedisServer) -> None:
    async with Emulator(time_scale=0, seed=5) as emu:
        budget = kling.RedisBudget(redis.url, name="handover", lease=60)
        async with budget_client(emu, budget) as leaving:
            first = await leaving.submit(kling.TextToVideo(prompt="one"))
            await leaving.submit(kling.TextToVideo(prompt="two"))
        assert redis.zcard(SLOTS % "handover") == 2  # still running: still counted
        async with budget_client(emu, budget) as staying:
            # Its first sync adopts both at once (not after the 60 s lease).
            with anyio.fail_after(5):
                while staying.statistics().tracked < 2:
                    await anyio.sleep(0.02)
            assert staying.statistics().in_flight == 2
            emu.advance(1000)
            done = await staying.wait_finished(first.id)
            assert done.status is kling.TaskStatus.COMPLETED
            with anyio.fail_after(5):
                while redis.zcard(SLOTS % "handover"):
                    await anyio.sleep(0.02)


async def test_redis_down_submissions_wait_and_reads_carry_on(
        redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    async with Emulator(time_scale=0, seed=5) as emu:
        budget = kling.RedisBudget(redis.url, name="outage", lease=2)
        async with budget_client(emu, budget, max_requests_per_second=50) as client:
            task = await client.submit(kling.TextToVideo(prompt="before the outage"))
            redis.stop()
            with caplog.at_level(logging.WARNING, logger="kling_async"):
                with anyio.move_on_after(1.0) as scope:
                    await client.submit(kling.TextToVideo(prompt="during the outage"))
                assert scope.cancelled_caught  # failed closed: waited, sent nothing
                assert emu.statistics().tasks_created == 1
                emu.advance(1000)
                with anyio.fail_after(5):
                    done = await client.wait_finished(task.id)  # reads carried on
            assert done.status is kling.TaskStatus.COMPLETED
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any(f"127.0.0.1:{redis.port}" in w and "unreachable" in w for w in warnings)
            redis.start()
            with anyio.fail_after(10):
                after = await client.submit(kling.TextToVideo(prompt="after the outage"))
            assert after.status is kling.TaskStatus.PENDING
            assert redis.zcard(SLOTS % "outage") == 1  # re-registered


async def test_a_retry_after_pauses_every_client_of_the_budget(redis: RedisServer) -> None:
    retry = kling.RetryPolicy(backoff_base=0.005, backoff_max=0.02, retry_after_max=5)
    async with Emulator(time_scale=0, seed=5) as emu:
        budget = kling.RedisBudget(redis.url, name="pause", lease=2)
        async with budget_client(emu, budget, retry=retry) as hit, \
                budget_client(emu, budget, retry=retry) as other:
            task = await other.submit(kling.TextToVideo(prompt="read by the other"))
            emu.fail_next("create", Fault.error(429, retry_after=1.5))
            async with anyio.create_task_group() as tg:
                tg.start_soon(hit.submit, kling.TextToVideo(prompt="meets a 429"))
                with anyio.fail_after(5):
                    while emu.statistics().count("create", 429) == 0:
                        await anyio.sleep(0.01)
                started = anyio.current_time()
                await other.get(task.id)
                # The other Client heard the 1.5 s pause and held its read.
                assert anyio.current_time() - started > 1.0
            assert emu.statistics().tasks_created == 2


async def test_the_request_budget_is_one_bucket_for_all_clients(redis: RedisServer) -> None:
    async with Emulator(time_scale=0, seed=5) as emu:
        budget = kling.RedisBudget(redis.url, name="rate", lease=2)
        async with budget_client(emu, budget, max_requests_per_second=10) as a, \
                budget_client(emu, budget, max_requests_per_second=10) as b:
            task = await a.submit(kling.TextToVideo(prompt="read often"))
            await anyio.sleep(1.1)  # the bucket refills
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                for client in (a, b):
                    for _ in range(10):
                        tg.start_soon(client.get, task.id)
            # 20 reads at 10/s with a burst of 10: the last waits about a second. Two
            # private buckets would have sent all 20 at once.
            assert anyio.current_time() - started >= 0.8


def test_budget_arguments_are_checked_and_the_password_never_shown() -> None:
    with pytest.raises(ValueError, match="redis://"):
        kling.RedisBudget("http://localhost:6379")
    with pytest.raises(ValueError, match="name"):
        kling.RedisBudget("redis://localhost", name="a{b}")
    with pytest.raises(ValueError, match="lease"):
        kling.RedisBudget("redis://localhost", lease=0.1)
    with pytest.raises(TypeError, match="RedisBudget"):
        kling.Client("sk-test", base_url="http://127.0.0.1:1",
                     budget="redis://localhost")  # type: ignore[arg-type]
    budget = kling.RedisBudget("redis://:hunter2@localhost:6379/0")
    assert "hunter2" not in repr(budget)


async def test_an_unreachable_redis_at_start_fails_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    budget = kling.RedisBudget(nowhere, name="never")
    async with Emulator(time_scale=0, seed=5) as emu, budget_client(emu, budget) as client:
        with anyio.move_on_after(1.0) as scope:
            await client.submit(kling.TextToVideo(prompt="never sent"))
        assert scope.cancelled_caught
        assert emu.statistics().tasks_created == 0
    assert any(nowhere.removesuffix("/0") in r.getMessage() for r in caplog.records)


async def test_the_command_shares_the_budget(redis: RedisServer, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 6)
    async with Emulator(time_scale=SCALE, seed=5, max_concurrent_tasks=2) as emu:
        code, _, err = await cli("batch", str(prompts), "--out", str(tmp_path / "clips"),
                                 "--concurrency", "2", "--redis", redis.url, emu=emu)
        assert code == 0, err
        stats = emu.statistics()
    assert stats.tasks_created == 6
    assert stats.count("create", 429) == 0
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 6
    assert redis.zcard(SLOTS % "default") == 0


async def test_the_command_names_a_bad_redis_url(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 1)
    code, _, err = await cli("batch", str(prompts), "--out", str(tmp_path / "clips"),
                             "--redis", "localhost:6379", emu=None)
    assert code == 2
    assert "--redis" in err
    assert "redis://" in err


async def test_a_client_closing_ends_its_waiters_and_leaves_the_queue(
        redis: RedisServer) -> None:
    async with Emulator(time_scale=0, seed=5) as emu:
        budget = kling.RedisBudget(redis.url, name="closing", lease=2)
        errors: list[BaseException] = []
        async with budget_client(emu, budget, max_in_flight=1) as holder:
            await holder.submit(kling.TextToVideo(prompt="holds the slot"))
            closing = budget_client(emu, budget, max_in_flight=1)

            async def wait_for_a_slot() -> None:
                try:
                    await closing.submit(kling.TextToVideo(prompt="never sent"))
                except kling.ClientClosedError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg, closing:
                tg.start_soon(wait_for_a_slot)
                with anyio.fail_after(5):
                    while redis.zcard(QUEUE % "closing") == 0:
                        await anyio.sleep(0.02)
            assert len(errors) == 1  # the waiter ended with the Client, not hanging
            assert redis.zcard(QUEUE % "closing") == 0  # and left the shared queue
            assert emu.statistics().tasks_created == 1


async def test_a_shared_waiter_cancelled_as_the_client_closes_ends_cleanly(
        redis: RedisServer) -> None:
    async with Emulator(time_scale=0, seed=5) as emu:
        budget = kling.RedisBudget(redis.url, name="race", lease=2)
        scope = await cancelled_as_the_client_closes(
            budget_client(emu, budget, max_in_flight=1))
        assert scope.cancelled_caught
        assert emu.statistics().tasks_created == 1
