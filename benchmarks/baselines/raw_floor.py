"""Baseline (c): the CPU floor per request: aiohttp GET plus ``json.loads``, in a loop."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp


async def run(url: str, key: str, task_ids: list[str], seconds: float,
              concurrency: int = 4) -> int:
    """Read statuses with ``concurrency`` loops for ``seconds``; return how many."""
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        async def loop(offset: int) -> None:
            nonlocal done
            index = offset
            while time.monotonic() < deadline:
                task_id = task_ids[index % len(task_ids)]
                async with session.get(f"{url}/v1/tasks/{task_id}") as response:
                    json.loads(await response.read())
                done += 1
                index += concurrency

        await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return done


async def run_batch(url: str, key: str, task_ids: list[str], seconds: float,
                    concurrency: int = 4) -> int:
    """(c2) the same floor for batch reads: ``POST /v1/tasks/batch`` of 50 ids plus
    ``json.loads``, in ``concurrency`` loops for ``seconds``; return statuses read."""
    done = 0
    deadline = time.monotonic() + seconds
    chunks = [task_ids[i:i + 50] for i in range(0, len(task_ids), 50)]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        async def loop(offset: int) -> None:
            nonlocal done
            index = offset
            while time.monotonic() < deadline:
                ids = chunks[index % len(chunks)]
                async with session.post(f"{url}/v1/tasks/batch",
                                        json={"task_ids": ids}) as response:
                    done += len(json.loads(await response.read())["data"])
                index += concurrency

        await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return done
