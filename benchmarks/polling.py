"""Polling efficiency: status requests per task and completion-detection lag.

    python -m benchmarks.polling --tasks 1000 --scale 10

Every variant runs the same number of tasks (``estimated_time`` 300 API-s, real durations
±20 %) against its own Emulator process, scaled ``--scale`` times faster than real time.
Lag is the API time between a task's real end (from the Emulator's timeline) and the
moment the client reported it; requests are the Emulator's count of status reads.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
from aiohttp import web

import kling_async as kling

from ._harness import Server, api_time, cpu_seconds, emulator_process, percentile, save, table
from .baselines import aiohttp_loop, careful_loop, httpx_loop

Runner = Callable[[Server, int, float, int], Awaitable[dict[str, float]]]


def client_for(server: Server, tasks: int, scale: float, max_interval: float = 60,
               min_interval: float = 5) -> kling.Client:
    """The SDK's defaults (``max_interval`` and ``min_interval`` in API seconds),
    ``scale`` times faster."""
    poll = kling.PollPolicy(min_interval=min_interval / scale,
                            max_interval=max_interval / scale, time_scale=scale)
    return kling.Client(server.api_key, base_url=server.url, poll=poll, max_in_flight=tasks,
                        max_requests_per_second=None, max_connections=16)


async def kling_run(server: Server, tasks: int, scale: float, waves: int = 1,
                    callback_url: str | None = None,
                    on_client: Callable[[kling.Client], None] | None = None,
                    max_interval: float = 60, min_interval: float = 5) -> dict[str, float]:
    """``tasks`` clips in ``waves`` batches one after the other, through one Client."""
    detected: dict[str, float] = {}
    request = kling.TextToVideo(prompt="benchmark clip", callback_url=callback_url,
                                allow_local_callback=callback_url is not None)
    async with client_for(server, tasks, scale, max_interval, min_interval) as client:
        if on_client is not None:
            on_client(client)
        for _ in range(waves):
            async with client.generate_many([request] * (tasks // waves),
                                            submit_concurrency=16) as events:
                async for event in events:
                    if isinstance(event, kling.Succeeded | kling.Failed) and event.task_id:
                        detected[event.task_id] = time.monotonic()
    return detected


async def kling_callbacks(server: Server, tasks: int, scale: float,
                          waves: int = 1) -> dict[str, float]:
    holder: list[kling.Client] = []

    async def hook(request: web.Request) -> web.Response:
        if holder:
            holder[0].ingest_callback(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        return await kling_run(server, tasks, scale, waves,
                               callback_url=f"http://{host}:{port}/hook",
                               on_client=holder.append)
    finally:
        await runner.cleanup()


async def kling_blind(server: Server, tasks: int, scale: float,
                      waves: int = 1) -> dict[str, float]:
    """The SDK with the careful loops' failure blindness: no read before 80 % of the
    estimate (``max_interval`` = 240 API-s), so the schedules compare like for like."""
    return await kling_run(server, tasks, scale, waves, max_interval=240)


def in_waves(loop: Callable[[Server, int, float], Awaitable[dict[str, float]]]) -> Runner:
    """A baseline loop run ``waves`` times one after the other, ``tasks / waves`` each."""
    async def run(server: Server, tasks: int, scale: float, waves: int) -> dict[str, float]:
        detected: dict[str, float] = {}
        for _ in range(waves):
            detected.update(await loop(server, tasks // waves, scale))
        return detected
    return run


@in_waves
async def baseline_a(server: Server, tasks: int, scale: float) -> dict[str, float]:
    return await aiohttp_loop.run(server.url, server.api_key, tasks, 5 / scale)


@in_waves
async def baseline_a2(server: Server, tasks: int, scale: float) -> dict[str, float]:
    return await careful_loop.per_task(server.url, server.api_key, tasks, 5 / scale, scale)


@in_waves
async def baseline_a3(server: Server, tasks: int, scale: float) -> dict[str, float]:
    return await careful_loop.batched(server.url, server.api_key, tasks, 5 / scale, scale)


@in_waves
async def baseline_b(server: Server, tasks: int, scale: float) -> dict[str, float]:
    return await httpx_loop.run(server.url, server.api_key, tasks, 5 / scale)


VARIANTS: dict[str, tuple[Runner, tuple[str, ...]]] = {
    "(a) aiohttp, GET every 5 s": (baseline_a, ("--no-batch",)),
    "(a2) careful: sleep 0.8E, then GET every 5 s": (baseline_a2, ("--no-batch",)),
    "(a3) careful: sleep 0.8E, then batch-read every 5 s": (baseline_a3, ()),
    "(b) httpx, GET every 5 s": (baseline_b, ("--no-batch",)),
    "kling_async, per-task GETs": (kling_run, ("--no-batch",)),
    "kling_async, batch reads": (kling_run, ()),
    "kling_async, per-task GETs, max_interval 240 s": (kling_blind, ("--no-batch",)),
    "kling_async, batch reads, max_interval 240 s": (kling_blind, ()),
    "kling_async, callbacks": (kling_callbacks, ("--allow-local-callbacks",)),
}


async def measure(name: str, tasks: int, scale: float,
                  world: tuple[str, ...] = (), waves: int = 1) -> dict[str, Any]:
    """One variant against its own Emulator process (``world``: extra Emulator flags,
    such as failures or durations that disagree with the estimate; ``waves``: the tasks
    in that many batches one after the other)."""
    runner, flags = VARIANTS[name]
    return await measure_runner(name, runner, flags, tasks, scale, world, waves)


async def measure_runner(name: str, runner: Runner, flags: tuple[str, ...], tasks: int,
                         scale: float, world: tuple[str, ...] = (),
                         waves: int = 1) -> dict[str, Any]:
    """:func:`measure` of any ``runner`` (``flags``: the Emulator's, such as
    ``--no-batch``), reported as ``name``."""
    with emulator_process("--time-scale", str(scale), *flags, *world) as server:
        cpu_before, started = cpu_seconds(), time.monotonic()
        with anyio.fail_after(waves * 3600 / scale + 120):
            detected = await runner(server, tasks, scale, waves)
        wall, cpu = time.monotonic() - started, cpu_seconds() - cpu_before
        async with aiohttp.ClientSession() as session:
            timeline = await server.stats(session)
    ends, failed = timeline["ends"], set(timeline.get("failed", ()))
    lag_of = {task_id: api_time(at, timeline) - ends[task_id]
              for task_id, at in detected.items()}
    lags = [lag for task_id, lag in lag_of.items() if task_id not in failed]
    failed_lags = [lag for task_id, lag in lag_of.items() if task_id in failed]
    reads = timeline["requests"].get("get", 0) + timeline["requests"].get("batch", 0)
    real_lags_ms = [lag / scale * 1000 for lag in lags]
    return {"variant": name, "tasks": len(detected), "reads": reads,
            "reads_per_task": reads / max(len(detected), 1),
            "failed_tasks": len(failed_lags),
            "failed_lag_p95_s": percentile(failed_lags, 0.95) if failed_lags else None,
            "lag_p50_s": percentile(lags, 0.5), "lag_p95_s": percentile(lags, 0.95),
            "lag_p95_real_ms": percentile(real_lags_ms, 0.95),
            "connections": timeline["connections"], "client_cpu_s": cpu, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--only", action="append", help="run only variants containing this")
    parser.add_argument("--failure-rate", type=float, default=0.0,
                        help="share of tasks failing at a random point of their run")
    parser.add_argument("--duration-factor", type=float, default=1.0,
                        help="real durations over the reported estimate (5: five times "
                        "longer than estimated)")
    parser.add_argument("--duration-spread", type=float, default=0.2,
                        help="real durations spread +/- this share around the estimate "
                        "times the factor (the Emulator's default: 0.2)")
    parser.add_argument("--progress-ceiling", type=int, default=None,
                        help="progress climbs steadily to this percent, then the task "
                        "completes (default: the Emulator's creep through the 90s)")
    parser.add_argument("--waves", type=int, default=1,
                        help="run the tasks in this many batches one after the other (a "
                        "client learns from the first what to expect of the next)")
    args = parser.parse_args()
    world: tuple[str, ...] = ("--failure-rate", str(args.failure_rate),
                              "--duration-factor", str(args.duration_factor),
                              "--duration-spread", str(args.duration_spread))
    if args.progress_ceiling is not None:
        world += ("--progress-ceiling", str(args.progress_ceiling))
    names = [n for n in VARIANTS if not args.only or any(o in n for o in args.only)]
    rows = [asyncio.run(measure(name, args.tasks, args.scale, world, args.waves))
            for name in names]
    base = next((r for r in rows if r["variant"].startswith("(a)")), None)
    for row in rows:
        if base is not None:
            row["fewer_reads_than_a"] = base["reads"] / max(row["reads"], 1)
    columns = ["variant", "tasks", "reads_per_task", "fewer_reads_than_a", "lag_p50_s",
               "lag_p95_s", "failed_tasks", "failed_lag_p95_s", "lag_p95_real_ms",
               "connections", "client_cpu_s"]
    print(table(rows, columns))
    command = (f"python -m benchmarks.polling --tasks {args.tasks} --scale {args.scale:g}"
               + "".join(f' --only "{o}"' for o in args.only or ())
               + (f" --failure-rate {args.failure_rate:g}" if args.failure_rate else "")
               + (f" --duration-factor {args.duration_factor:g}"
                  if args.duration_factor != 1 else "")
               + (f" --duration-spread {args.duration_spread:g}"
                  if args.duration_spread != 0.2 else "")
               + (f" --progress-ceiling {args.progress_ceiling}"
                  if args.progress_ceiling is not None else "")
               + (f" --waves {args.waves}" if args.waves != 1 else ""))
    # Runs of some variants, or in another world, are kept apart from the full table
    # (and its chart).
    name = "polling"
    if args.only:
        name += "_selected"
    if args.failure_rate or args.duration_factor != 1:
        name += f"_failures{args.failure_rate:g}_durations{args.duration_factor:g}"
    if args.duration_spread != 0.2:
        name += f"_spread{args.duration_spread:g}"
    if args.progress_ceiling is not None:
        name += f"_ceiling{args.progress_ceiling}"
    if args.waves != 1:
        name += f"_waves{args.waves}"
    print("saved", save(name, command, rows, scale=args.scale))


if __name__ == "__main__":
    main()
