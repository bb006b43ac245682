"""Admission: many tasks against an account limit the client is not told.

    python -m benchmarks.admission --tasks 300 --limit 16 --scale 100

The Emulator allows ``--limit`` unfinished tasks per account and answers 429 beyond it.
Makespan is compared with the ideal: the same task durations list-scheduled on exactly
``--limit`` slots with no gaps.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import time
from typing import Any

import aiohttp
import anyio

import kling_async as kling

from ._harness import Server, emulator_process, save, table

BODY = {"model": "kling-v3-text-to-video", "prompt": "benchmark clip", "duration": 5}


async def kling_variant(server: Server, tasks: int, scale: float,
                        limit: int | kling.AdaptiveLimit | None) -> int:
    poll = kling.PollPolicy(min_interval=5 / scale, max_interval=60 / scale, time_scale=scale)
    retry = kling.RetryPolicy(backoff_base=0.5 / scale, backoff_max=30 / scale)
    async with kling.Client(server.api_key, base_url=server.url, poll=poll, retry=retry,
                            max_in_flight=limit, max_requests_per_second=None) as client:
        request = kling.TextToVideo(prompt="benchmark clip")
        async with client.generate_many([request] * tasks) as events:
            async for _ in events:
                pass
        return client.statistics().rate_limited


async def naive_variant(server: Server, tasks: int, scale: float) -> int:
    """``asyncio.gather`` over every task; on 429 wait Retry-After and POST again."""
    rejected = 0
    headers = {"Authorization": f"Bearer {server.api_key}"}

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal rejected
        while True:
            async with session.post(f"{server.url}/v1/videos/generations",
                                    json=BODY) as response:
                if response.status == 429:
                    rejected += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", 5 / scale)))
                    continue
                task = await response.json()
                break
        while True:
            await asyncio.sleep(5 / scale)
            async with session.get(f"{server.url}/v1/tasks/{task['id']}") as response:
                if (await response.json())["status"] in ("completed", "failed"):
                    return

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(one(session) for _ in range(tasks)))
    return rejected


def ideal_makespan(durations: list[float], slots: int) -> float:
    """List scheduling of ``durations`` in order on ``slots`` slots, no gaps."""
    free = [0.0] * slots
    end = 0.0
    for duration in durations:
        start = heapq.heappop(free)
        end = max(end, start + duration)
        heapq.heappush(free, start + duration)
    return end


async def measure(name: str, tasks: int, limit: int, scale: float) -> dict[str, Any]:
    with emulator_process("--time-scale", str(scale), "--max-concurrent-tasks",
                          str(limit)) as server:
        started = time.monotonic()
        with anyio.fail_after(36000 / scale):
            if name == "naive gather":
                rejected = await naive_variant(server, tasks, scale)
            else:
                mode: int | kling.AdaptiveLimit | None = (
                    limit if name == f"max_in_flight={limit}" else None)
                rejected = await kling_variant(server, tasks, scale, mode)
        wall = time.monotonic() - started
        async with aiohttp.ClientSession() as session:
            timeline = await server.stats(session)
    created, ends = timeline["created"], timeline["ends"]
    order = sorted(created, key=created.get)
    durations = [ends[t] - created[t] for t in order]
    makespan = max(ends.values()) - min(created.values())
    ideal = ideal_makespan(durations, limit)
    busy = sum(durations)
    return {"variant": name, "tasks": len(order), "rejected_429": rejected,
            "rejected_share": rejected / (rejected + len(order)),
            "makespan_api_s": makespan, "ideal_api_s": ideal, "vs_ideal": makespan / ideal,
            "slot_utilisation": busy / (makespan * limit), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--scale", type=float, default=100.0)
    args = parser.parse_args()
    names = ["adaptive (default)", f"max_in_flight={args.limit}", "naive gather"]
    rows = [asyncio.run(measure(n, args.tasks, args.limit, args.scale)) for n in names]
    print(table(rows, ["variant", "tasks", "rejected_429", "rejected_share", "makespan_api_s",
                       "ideal_api_s", "vs_ideal", "slot_utilisation"]))
    command = (f"python -m benchmarks.admission --tasks {args.tasks} --limit {args.limit} "
               f"--scale {args.scale:g}")
    print("saved", save("admission", command, rows, limit=args.limit, scale=args.scale))


if __name__ == "__main__":
    main()
