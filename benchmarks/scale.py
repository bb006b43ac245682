"""Scale: 10,000 tasks tracked at once by one client.

    python -m benchmarks.scale --tasks 10000 --seconds 20

The tasks are created first (outside the measurement) on an Emulator running in real
time, so all of them stay unfinished. Each variant then follows every task for
``--seconds``: memory growth per task, event-loop lag (a 10 ms ticker's overshoot) and
TCP connections opened are recorded.

The httpx baseline follows at most ``--httpx-tasks`` (2,000) tasks: httpcore's pool scans
every waiting request on each step, so 10,000 waiters keep one core busy for many minutes
(observed); its numbers are per task at that smaller count.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import httpx

import kling_async as kling

from ._harness import Server, emulator_process, loop_watch, percentile, save, table

BODY = {"model": "kling-v3-text-to-video", "prompt": "benchmark clip", "duration": 5}


async def create_tasks(server: Server, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    ids: list[str] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        async def create(n: int) -> None:
            for _ in range(n):
                async with session.post(f"{server.url}/v1/videos/generations",
                                        json=BODY) as response:
                    ids.append((await response.json())["id"])
        await asyncio.gather(*(create(count // 20 + (i < count % 20)) for i in range(20)))
    return ids


async def follow_kling(server: Server, ids: list[str], seconds: float) -> None:
    async with kling.Client(server.api_key, base_url=server.url, max_in_flight=len(ids) + 1,
                            max_requests_per_second=None) as client:
        client.track(ids)
        await asyncio.sleep(seconds)


async def follow_aiohttp(server: Server, ids: list[str], seconds: float) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async def poll(task_id: str) -> None:
            while True:
                async with session.get(f"{server.url}/v1/tasks/{task_id}") as response:
                    await response.json()
                await asyncio.sleep(5)
        await run_for(seconds, [poll(i) for i in ids])


async def run_for(seconds: float, loops: list[Coroutine[Any, Any, None]]) -> None:
    """Run a baseline's per-task loops for ``seconds``, then cancel them all."""
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def follow_httpx(server: Server, ids: list[str], seconds: float) -> None:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120,
                                 headers={"Authorization": f"Bearer {server.api_key}"}) as c:
        async def poll(task_id: str) -> None:
            while True:
                (await c.get(f"/v1/tasks/{task_id}")).json()
                await asyncio.sleep(5)
        await run_for(seconds, [poll(i) for i in ids])


VARIANTS: dict[str, Callable[[Server, list[str], float], Awaitable[None]]] = {
    "kling_async (batch reads)": follow_kling,
    "(a) aiohttp, GET every 5 s": follow_aiohttp,
    "(b) httpx, GET every 5 s": follow_httpx,
}


async def measure(name: str, tasks: int, seconds: float) -> dict[str, Any]:
    print(f"measuring {name} with {tasks} tasks...", flush=True)
    with emulator_process("--time-scale", "1") as server:
        ids = await create_tasks(server, tasks)
        async with aiohttp.ClientSession() as session:
            before = (await server.stats(session))["connections"]
        async with loop_watch() as watch:
            await VARIANTS[name](server, ids, seconds)
        async with aiohttp.ClientSession() as session:
            after = (await server.stats(session))["connections"]
    return {"variant": name, "tasks": len(ids),
            "rss_growth_kib": watch.growth_kib,
            "bytes_per_task": watch.growth_kib * 1024 / len(ids),
            "loop_lag_p50_ms": percentile(watch.lags, 0.5) * 1000,
            "loop_lag_p99_ms": percentile(watch.lags, 0.99) * 1000,
            "connections": after - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--httpx-tasks", type=int, default=2000)
    args = parser.parse_args()
    rows = [asyncio.run(measure(name, min(args.tasks, args.httpx_tasks)
                                if name.startswith("(b)") else args.tasks, args.seconds))
            for name in VARIANTS]
    print(table(rows, ["variant", "tasks", "bytes_per_task", "loop_lag_p50_ms",
                       "loop_lag_p99_ms", "connections"]))
    command = (f"python -m benchmarks.scale --tasks {args.tasks} --seconds {args.seconds:g} "
               f"--httpx-tasks {args.httpx_tasks}")
    print("saved", save("scale", command, rows))


if __name__ == "__main__":
    main()
