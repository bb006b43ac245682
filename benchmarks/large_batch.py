"""A large batch through ``generate_many``: 1,000, 10,000 or 50,000 tasks, batch reads.

    python -m benchmarks.large_batch --tasks 1000 10000 50000 --scale 10

Each size runs against its own Emulator process (time scaled, balance raised so 50,000
clips can be paid for, no concurrency limit): every request is submitted, followed to its
end and reported. Recorded: client RSS growth per task, event-loop lag (a 10 ms ticker's
overshoot: p50, p99, max), the number and longest of the full garbage collections,
completion-detection lag p95 (API seconds between a task's end on the Emulator and its
``Succeeded`` event), status requests per task and client CPU.

Two more variants run beside it when asked, each against its own Emulator process:

- ``--careful``: baseline (a3), the careful batch loop of ``baselines/careful_loop.py``
  (sleep 0.8 x the estimate, then batch-read every unfinished task every 5 API-s), on
  the same number of tasks: what the machine allows a loop that does far less per task;
- ``--frozen``: the same SDK run, but the caller calls ``gc.freeze()`` once it has built
  its requests (and ``gc.unfreeze()`` after the batch), so full collections no longer
  walk the caller's own objects (its requests, every imported module): what is left of
  the longest stall is the SDK's own state.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
from .baselines import careful_loop

SDK, FROZEN, CAREFUL = "kling_async", "kling_async, caller froze", "(a3) careful batch loop"


async def run(server: Server, tasks: int, scale: float, variant: str = SDK
              ) -> dict[str, Any]:
    """One batch of ``tasks`` by ``variant``; the figures of one row."""
    async with loop_watch() as watch:  # the requests are part of what is measured
        cpu_before, started = cpu_seconds(), time.monotonic()
        if variant == CAREFUL:
            detected = await careful_loop.batched(server.url, server.api_key, tasks,
                                                  5 / scale, scale)
        else:
            detected = await sdk_batch(server, tasks, scale, freeze=variant == FROZEN)
        cpu, wall = cpu_seconds() - cpu_before, time.monotonic() - started
    async with aiohttp.ClientSession() as session:
        timeline = await server.stats(session)
    ends = timeline["ends"]
    detection = [api_time(at, timeline) - ends[t] for t, at in detected.items()]
    reads = timeline["requests"].get("get", 0) + timeline["requests"].get("batch", 0)
    return {"variant": variant, "tasks": tasks, "finished": len(detected),
            "rss_bytes_per_task": watch.growth_kib * 1024 / tasks,
            "loop_lag_p50_ms": percentile(watch.lags, 0.5) * 1000,
            "loop_lag_p99_ms": percentile(watch.lags, 0.99) * 1000,
            "loop_lag_max_ms": max(watch.lags) * 1000,
            "full_gc_count": len(watch.full_collections),
            "full_gc_max_ms": max(watch.full_collections, default=0.0) * 1000,
            "detection_p95_api_s": percentile(detection, 0.95),
            "reads_per_task": reads / tasks, "client_cpu_s": cpu, "wall_s": wall}


async def sdk_batch(server: Server, tasks: int, scale: float, *, freeze: bool
                    ) -> dict[str, float]:
    """``tasks`` clips through ``generate_many``: detection times (monotonic) by task id.
    ``freeze``: the caller freezes its objects once its requests are built."""
    poll = kling.PollPolicy.scaled(scale)
    detected: dict[str, float] = {}
    requests = [kling.TextToVideo(prompt=f"large batch clip {n}") for n in range(tasks)]
    if freeze:
        gc.freeze()
    try:
        client = kling.Client(server.api_key, base_url=server.url, poll=poll,
                              max_in_flight=tasks + 1, max_requests_per_second=None)
        async with client, client.generate_many(requests, submit_concurrency=16) as events:
            async for event in events:
                if isinstance(event, kling.Succeeded | kling.Failed) and event.task_id:
                    detected[event.task_id] = time.monotonic()
    finally:
        if freeze:
            gc.unfreeze()
    return detected


async def measure(tasks: int, scale: float, variant: str = SDK) -> dict[str, Any]:
    """``run`` against a fresh Emulator process sized for ``tasks``."""
    with emulator_process("--time-scale", str(scale),
                          "--balance", str(30.0 * tasks + 1000)) as server:
        return await run(server, tasks, scale, variant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--careful", action="store_true",
                        help="also run baseline (a3) on each size")
    parser.add_argument("--frozen", action="store_true",
                        help="also run the SDK with the caller's objects frozen (gc.freeze)")
    args = parser.parse_args()
    variants = [SDK, *([FROZEN] if args.frozen else []), *([CAREFUL] if args.careful else [])]
    rows = [asyncio.run(measure(n, args.scale, variant))
            for n in args.tasks for variant in variants]
    print(table(rows, ["variant", "tasks", "finished", "rss_bytes_per_task",
                       "loop_lag_p50_ms", "loop_lag_p99_ms", "loop_lag_max_ms",
                       "full_gc_count", "full_gc_max_ms", "detection_p95_api_s",
                       "reads_per_task", "client_cpu_s", "wall_s"]))
    flags = (" --frozen" if args.frozen else "") + (" --careful" if args.careful else "")
    command = (f"python -m benchmarks.large_batch --tasks {' '.join(map(str, args.tasks))} "
               f"--scale {args.scale:g}{flags}")
    name = "large_batch" + ("_compared" if flags else "")
    print("saved", save(name, command, rows, scale=args.scale))


if __name__ == "__main__":
    main()
