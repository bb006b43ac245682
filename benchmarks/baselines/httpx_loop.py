"""Baseline (b): the same loop as (a), written with ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import time

import httpx

BODY = {"model": "kling-v3-text-to-video", "prompt": "benchmark clip", "duration": 5}


async def one_task(client: httpx.AsyncClient, interval: float,
                   detected: dict[str, float]) -> None:
    task = (await client.post("/v1/videos/generations", json=BODY)).json()
    while True:
        await asyncio.sleep(interval)
        response = await client.get(f"/v1/tasks/{task['id']}")
        if response.status_code != 200:
            continue
        data = response.json()
        if data["status"] in ("completed", "failed"):
            detected[task["id"]] = time.monotonic()
            return


async def run(url: str, key: str, tasks: int, interval: float) -> dict[str, float]:
    """Run ``tasks`` tasks; return detection times (monotonic) by task id."""
    detected: dict[str, float] = {}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 limits=limits, timeout=60) as client:
        await asyncio.gather(*(one_task(client, interval, detected) for _ in range(tasks)))
    return detected
