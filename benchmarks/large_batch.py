"""A large batch through ``generate_many``: 1,000, 10,000 or 50,000 tasks, batch reads.

    python -m benchmarks.large_batch --tasks 1000 10000 50000 --scale 10

Each size runs against its own Emulator process (time scaled, balance raised so 50,000
clips can be paid for, no concurrency limit): every request is submitted, followed to its
end and reported. Recorded: client RSS growth per task, event-loop lag (a 10 ms ticker's
overshoot: p50, p99, max), the number and longest of the full garbage collections,
completion-detection lag p95 (API seconds between a task's end on the Emulator and its
``Succeeded`` event), status requests per task and client CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp

import kling_async as kling

from ._harness import (
    Server,
    api_time,
    cpu_seconds,
    emulator_process,
    loop_watch,
    percentile,
    save,
    table,
)


async def run(server: Server, tasks: int, scale: float) -> dict[str, Any]:
    """One batch of ``tasks``; the figures of one row."""
    poll = kling.PollPolicy.scaled(scale)
    detected: dict[str, float] = {}
    async with loop_watch() as watch:  # the requests are part of what is measured
        cpu_before, started = cpu_seconds(), time.monotonic()
        requests = [kling.TextToVideo(prompt=f"large batch clip {n}") for n in range(tasks)]
        client = kling.Client(server.api_key, base_url=server.url, poll=poll,
                              max_in_flight=tasks + 1, max_requests_per_second=None)
        async with client, client.generate_many(requests, submit_concurrency=16) as events:
            async for event in events:
                if isinstance(event, kling.Succeeded | kling.Failed) and event.task_id:
                    detected[event.task_id] = time.monotonic()
        cpu, wall = cpu_seconds() - cpu_before, time.monotonic() - started
    async with aiohttp.ClientSession() as session:
        timeline = await server.stats(session)
    ends = timeline["ends"]
    detection = [api_time(at, timeline) - ends[t] for t, at in detected.items()]
    reads = timeline["requests"].get("get", 0) + timeline["requests"].get("batch", 0)
    return {"tasks": tasks, "finished": len(detected),
            "rss_bytes_per_task": watch.growth_kib * 1024 / tasks,
            "loop_lag_p50_ms": percentile(watch.lags, 0.5) * 1000,
            "loop_lag_p99_ms": percentile(watch.lags, 0.99) * 1000,
            "loop_lag_max_ms": max(watch.lags) * 1000,
            "full_gc_count": len(watch.full_collections),
            "full_gc_max_ms": max(watch.full_collections, default=0.0) * 1000,
            "detection_p95_api_s": percentile(detection, 0.95),
            "reads_per_task": reads / tasks, "client_cpu_s": cpu, "wall_s": wall}


async def measure(tasks: int, scale: float) -> dict[str, Any]:
    """``run`` against a fresh Emulator process sized for ``tasks``."""
    with emulator_process("--time-scale", str(scale),
                          "--balance", str(30.0 * tasks + 1000)) as server:
        return await run(server, tasks, scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--scale", type=float, default=10.0)
    args = parser.parse_args()
    rows = [asyncio.run(measure(n, args.scale)) for n in args.tasks]
    print(table(rows, ["tasks", "finished", "rss_bytes_per_task", "loop_lag_p50_ms",
                       "loop_lag_p99_ms", "loop_lag_max_ms", "full_gc_count",
                       "full_gc_max_ms", "detection_p95_api_s",
                       "reads_per_task", "client_cpu_s", "wall_s"]))
    command = (f"python -m benchmarks.large_batch --tasks {' '.join(map(str, args.tasks))} "
               f"--scale {args.scale:g}")
    print("saved", save("large_batch", command, rows, scale=args.scale))


if __name__ == "__main__":
    main()
