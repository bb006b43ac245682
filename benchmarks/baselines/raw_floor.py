"""Baselines (c) and (c2): the CPU floor per status: bare aiohttp requests plus
``json.loads``, in a few loops. (c) one ``GET`` per status; (c2) one
``POST /v1/tasks/batch`` of 50 ids per 50 statuses."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp

Read = Callable[[aiohttp.ClientSession, int], Awaitable[int]]  # read number n -> statuses


async def _loops(key: str, seconds: float, concurrency: int, read: Read) -> int:
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        async def loop(offset: int) -> None:
            nonlocal done
            index = offset
            while time.monotonic() < deadline:
                statuses = await read(session, index)  # not `done += await`: that reads
                done += statuses                       # `done` before the await
                index += concurrency

        await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return done


async def run(url: str, key: str, task_ids: list[str], seconds: float,
              concurrency: int = 4) -> int:
    """(c): read statuses one GET each for ``seconds``; return how many."""
    async def read(session: aiohttp.ClientSession, n: int) -> int:
        async with session.get(f"{url}/v1/tasks/{task_ids[n % len(task_ids)]}") as response:
            json.loads(await response.read())
        return 1

    return await _loops(key, seconds, concurrency, read)


async def run_batch(url: str, key: str, task_ids: list[str], seconds: float,
                    concurrency: int = 4) -> int:
    """(c2): read statuses 50 per batch request for ``seconds``; return how many."""
    chunks = [task_ids[i:i + 50] for i in range(0, len(task_ids), 50)]

    async def read(session: aiohttp.ClientSession, n: int) -> int:
        async with session.post(f"{url}/v1/tasks/batch",
                                json={"task_ids": chunks[n % len(chunks)]}) as response:
            return len(json.loads(await response.read())["data"])

    return await _loops(key, seconds, concurrency, read)
