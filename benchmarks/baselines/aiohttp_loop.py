"""Baseline (a): what people write from the API docs with aiohttp.

One coroutine per task: POST, then GET every 5 API-seconds until the task is finished;
``asyncio.gather`` over all tasks; one shared ``ClientSession``. Not weakened: it reuses
its session and reads the documented fields.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

BODY = {"model": "kling-v3-text-to-video", "prompt": "benchmark clip", "duration": 5}


async def one_task(session: aiohttp.ClientSession, url: str, interval: float,
                   detected: dict[str, float]) -> None:
    async with session.post(f"{url}/v1/videos/generations", json=BODY) as response:
        task = await response.json()
    while True:
        await asyncio.sleep(interval)
        async with session.get(f"{url}/v1/tasks/{task['id']}") as response:
            if response.status != 200:
                continue
            data = await response.json()
        if data["status"] in ("completed", "failed"):
            detected[task["id"]] = time.monotonic()
            return


async def run(url: str, key: str, tasks: int, interval: float) -> dict[str, float]:
    """Run ``tasks`` tasks; return detection times (monotonic) by task id."""
    detected: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(one_task(session, url, interval, detected)
                               for _ in range(tasks)))
    return detected
