"""Baselines (a2) and (a3): the loops a careful user writes after reading the API docs.

(a2) one coroutine per task: POST, sleep 0.8 x ``estimated_time`` (real durations are
rarely shorter), then GET every 5 API-seconds until the task is finished.
(a3) the same schedule with the batch read: one loop that, every 5 API-seconds, reads
every unfinished task whose 0.8 x estimate has passed, 50 ids per ``POST /v1/tasks/batch``.
Both share one session and read only documented fields.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from .aiohttp_loop import BODY

EARLY_SHARE = 0.8  # what a careful reader of "estimated_time" waits before the first read


async def submit(session: aiohttp.ClientSession, url: str) -> tuple[str, float]:
    """POST one clip; return its id and its estimate (API seconds)."""
    async with session.post(f"{url}/v1/videos/generations", json=BODY) as response:
        task = await response.json()
    return task["id"], float(task.get("task_info", {}).get("estimated_time") or 300)


async def per_task(url: str, key: str, tasks: int, interval: float,
                   scale: float) -> dict[str, float]:
    """(a2): detection times (monotonic) by task id."""
    detected: dict[str, float] = {}

    async def one(session: aiohttp.ClientSession) -> None:
        task_id, estimate = await submit(session, url)
        await asyncio.sleep(EARLY_SHARE * estimate / scale)
        while True:
            async with session.get(f"{url}/v1/tasks/{task_id}") as response:
                data = await response.json() if response.status == 200 else {}
            if data.get("status") in ("completed", "failed"):
                detected[task_id] = time.monotonic()
                return
            await asyncio.sleep(interval)

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        await asyncio.gather(*(one(session) for _ in range(tasks)))
    return detected


async def batched(url: str, key: str, tasks: int, interval: float,
                  scale: float) -> dict[str, float]:
    """(a3): detection times (monotonic) by task id."""
    detected: dict[str, float] = {}
    due: dict[str, float] = {}  # task id -> monotonic time of its first read

    async def one(session: aiohttp.ClientSession, limiter: asyncio.Semaphore) -> None:
        async with limiter:
            task_id, estimate = await submit(session, url)
        due[task_id] = time.monotonic() + EARLY_SHARE * estimate / scale

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        limiter = asyncio.Semaphore(16)
        await asyncio.gather(*(one(session, limiter) for _ in range(tasks)))
        while due:
            now = time.monotonic()
            ready = [t for t, at in due.items() if at <= now]
            for start in range(0, len(ready), 50):
                ids = ready[start:start + 50]
                async with session.post(f"{url}/v1/tasks/batch",
                                        json={"task_ids": ids}) as response:
                    data = await response.json() if response.status == 200 else {}
                for item in data.get("data", []):
                    if item.get("status") in ("completed", "failed"):
                        detected[item["id"]] = time.monotonic()
                        due.pop(item["id"], None)
            await asyncio.sleep(interval if ready else min(due.values(), default=now) - now)
    return detected
