"""Several processes, one account: budget workers (``tests/budget_worker.py``) against an
Emulator process with an account limit, sharing a RedisBudget on a real redis-server.

Every worker runs 25 items; the Emulator allows 8 unfinished tasks and answers 429
beyond; a clip takes about a second (``--time-scale 300``).
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from .fleet import RemoteEmulator, emulator_process, finish, run_fleet, start_worker, wait_submitted
from .redis_server import RedisServer, free_port

LIMIT = 8
WORKERS = 4
ITEMS = 25
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def account() -> AsyncIterator[RemoteEmulator]:
    """An Emulator process whose account allows LIMIT unfinished tasks."""
    async with emulator_process("--time-scale", "300",
                                "--max-concurrent-tasks", str(LIMIT)) as emu:
        yield emu


def worker_args(redis: RedisServer, *extra: str) -> list[str]:
    """Arguments of a budget worker sharing ``redis``'s budget."""
    return ["--redis", redis.url, "--name", "fleet", "--tasks", str(ITEMS),
            "--limit", str(LIMIT), "--scale", "300", "--lease", "2", *extra]


def assert_each_item_once(summary: dict[str, Any]) -> None:
    """Every item of a worker ended in exactly one Submitted and one Succeeded."""
    assert summary["events"] == {str(i): ["Submitted", "Succeeded"] for i in range(ITEMS)}


def slots_left(redis: RedisServer) -> int:
    """Members still counted in the budget's slots."""
    return redis.zcard("kling_async:{fleet}:slots")


async def test_four_processes_share_the_account_limit(
        redis: RedisServer, account: RemoteEmulator) -> None:
    summaries = await run_fleet(account, WORKERS, *worker_args(redis))
    stats = await account.statistics()
    for summary in summaries:
        assert_each_item_once(summary)
    assert max(stats["peak_in_flight"].values()) == LIMIT  # used fully, never more
    assert stats["requests"].get("create 429", 0) == 0
    assert stats["tasks_created"] == WORKERS * ITEMS
    assert slots_left(redis) == 0


async def test_four_processes_find_an_unknown_limit_together(
        redis: RedisServer, account: RemoteEmulator) -> None:
    summaries = await run_fleet(account, WORKERS, *worker_args(redis, "--adaptive"))
    stats = await account.statistics()
    for summary in summaries:
        assert_each_item_once(summary)
    rejected = stats["requests"].get("create 429", 0)
    assert rejected == sum(s["rejected"] for s in summaries)
    assert rejected <= 0.05 * WORKERS * ITEMS
    assert stats["tasks_created"] == WORKERS * ITEMS


async def test_a_killed_process_tasks_keep_counting_until_they_end(
        redis: RedisServer, account: RemoteEmulator) -> None:
    victim = await start_worker(account, *worker_args(redis), "--tag", "victim")
    await wait_submitted(victim, 6)
    others = [await start_worker(account, *worker_args(redis), "--tag", f"w{n}")
              for n in range(WORKERS - 1)]
    await anyio.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    await victim.aclose()
    summaries: list[dict[str, Any]] = []
    for process in others:
        summaries.append(await finish(process))
    stats = await account.statistics()
    for summary in summaries:
        assert_each_item_once(summary)
    assert max(stats["peak_in_flight"].values()) <= LIMIT
    assert stats["requests"].get("create 429", 0) == 0
    # The victim's tasks were adopted once its 2 s leases ran out, read, and released as
    # they ended: nothing is left counted, and nobody restarted anything.
    with anyio.fail_after(10):
        while slots_left(redis):
            await anyio.sleep(0.1)


async def test_redis_restarted_empty_mid_run(redis: RedisServer,
                                            account: RemoteEmulator) -> None:
    processes = [await start_worker(account, *worker_args(redis), "--tag", f"w{n}")
                 for n in range(WORKERS)]
    seen = await wait_submitted(processes[0], 5)
    redis.stop()
    await anyio.sleep(2.0)
    redis.start()  # empty: persistence is off
    summaries = [await finish(processes[0], seen)]
    for process in processes[1:]:
        summaries.append(await finish(process))
    stats = await account.statistics()
    for summary in summaries:
        assert_each_item_once(summary)
    assert max(stats["peak_in_flight"].values()) <= LIMIT  # no over-admission
    assert stats["tasks_created"] == WORKERS * ITEMS  # no duplicate task
    assert stats["duplicate_bodies"] == 0


async def test_fastapi_with_three_workers_shares_one_budget(
        redis: RedisServer, account: RemoteEmulator) -> None:
    port = free_port()
    env = {**account.worker_env(), "KLING_ASYNC_REDIS_URL": redis.url,
           "KLING_ASYNC_MAX_IN_FLIGHT": str(LIMIT)}
    server = await anyio.open_process(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--workers", "3",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=Path(__file__).parent.parent, stdout=None, stderr=None)
    try:
        with anyio.fail_after(30):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    await anyio.sleep(0.1)
            # every worker's Client has joined the budget (one subscriber each)
            channel = "kling_async:{default}:events"
            while b":3\r\n" not in redis.command("PUBSUB", "NUMSUB", channel):
                await anyio.sleep(0.1)
        ids: list[str] = []

        async def submit(n: int) -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                         timeout=60) as http:  # a connection each
                response = await http.post("/videos", json={"prompt": f"clip {n}"})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])

        async with anyio.create_task_group() as tg:
            for n in range(3 * LIMIT):
                tg.start_soon(submit, n)
        stats = await account.statistics()
    finally:
        server.terminate()
        with anyio.CancelScope(shield=True):
            await server.wait()
            await server.aclose()
    assert len(set(ids)) == 3 * LIMIT
    assert stats["tasks_created"] == 3 * LIMIT
    assert max(stats["peak_in_flight"].values()) <= LIMIT
    assert stats["requests"].get("create 429", 0) == 0
