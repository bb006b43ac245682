"""CPU per task status processed, parsing and event fan-out included.

    python -m benchmarks.cpu --tasks 500 --seconds 5 --rounds 3

The floor (c) is a bare aiohttp GET plus ``json.loads`` per status; (c2) a bare batch
POST of 50 ids plus ``json.loads``. kling_async is measured reading the same tasks
through its poller with every status fanned out to a watcher, once with per-task GETs
(one status per request, like (c)) and once with batch reads (50 statuses per request,
like (c2)). The Emulator runs in its own process. A single run's figures move by a
third between runs on a shared machine, floors included, so the four variants run
``rounds`` times in alternating order (forward, then backward) and each ratio is the
median of the rounds' ratios (each SDK run against the floor of its own round).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

import kling_async as kling

from ._harness import cpu_seconds, emulator_process, save, table
from .baselines import raw_floor
from .scale import create_tasks


def fast_policy(interval: float) -> kling.PollPolicy:
    """Every task read every ``interval`` seconds (the SDK variants' demand)."""
    return kling.PollPolicy(min_interval=interval, max_interval=interval, jitter=0.0,
                            time_scale=50)


async def floor(name: str, tasks: int, seconds: float,
                runner: Callable[[str, str, list[str], float], Awaitable[int]]
                ) -> dict[str, Any]:
    with emulator_process("--time-scale", "50", "--estimated-time", "5000") as server:
        ids = await create_tasks(server, tasks)
        before = cpu_seconds()
        count = await runner(server.url, server.api_key, ids, seconds)
        cpu = cpu_seconds() - before
    return {"variant": name, "statuses": count, "cpu_us_per_status": cpu / count * 1e6}


async def kling_variant(name: str, tasks: int, seconds: float, flags: tuple[str, ...],
                        interval: float = 0.02) -> dict[str, Any]:
    with emulator_process("--time-scale", "50", "--estimated-time", "5000",
                          *flags) as server:
        ids = await create_tasks(server, tasks)
        async with kling.Client(server.api_key, base_url=server.url, poll=fast_policy(interval),
                                max_in_flight=tasks + 1, max_requests_per_second=None) as c:
            updates_seen = 0
            before = cpu_seconds()
            c.track(ids)
            with anyio.move_on_after(seconds):
                async with c.watch(ids) as updates:
                    async for _ in updates:
                        updates_seen += 1
            cpu = cpu_seconds() - before
            statuses = c.statistics().statuses_read
    return {"variant": name, "statuses": statuses, "updates": updates_seen,
            "cpu_us_per_status": cpu / max(statuses, 1) * 1e6}


Variant = Callable[[str], Awaitable[dict[str, Any]]]  # its name -> its figures


async def run_all(tasks: int, seconds: float, interval: float,
                  rounds: int) -> list[dict[str, Any]]:
    variants: dict[str, Variant] = {
        "(c) raw aiohttp GET + json":
            lambda name: floor(name, tasks, seconds, raw_floor.run),
        "(c2) raw aiohttp batch POST + json":
            lambda name: floor(name, tasks, seconds, raw_floor.run_batch),
        "kling_async, per-task GETs":
            lambda name: kling_variant(name, tasks, seconds, ("--no-batch",), interval),
        "kling_async, batch reads":
            lambda name: kling_variant(name, tasks, seconds, (), interval),
    }
    names = list(variants)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for number in range(rounds):
        for name in (names if number % 2 == 0 else names[::-1]):
            runs[name].append(await variants[name](name))
    rows = []
    for name in names:  # each against the floor of its own kind of read, round by round
        floor_name = names[1] if "batch" in name else names[0]
        ratios = [run["cpu_us_per_status"] / base["cpu_us_per_status"]
                  for run, base in zip(runs[name], runs[floor_name], strict=True)]
        per_status = [run["cpu_us_per_status"] for run in runs[name]]
        rows.append({"variant": name, "rounds": rounds,
                     "statuses": statistics.median(run["statuses"] for run in runs[name]),
                     "updates": runs[name][0].get("updates"),
                     "cpu_us_per_status": statistics.median(per_status),
                     "runs_cpu_us_per_status": per_status,
                     "vs_floor": statistics.median(ratios), "round_ratios": ratios})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.02,
                        help="seconds between two reads of a task in the SDK variants (the "
                        "floors read as fast as they can; at 0.02 the SDK's loop idles "
                        "between answers, at 0.005 it is as busy as the floors')")
    args = parser.parse_args()
    rows = asyncio.run(run_all(args.tasks, args.seconds, args.interval, args.rounds))
    print(table(rows, ["variant", "rounds", "statuses", "updates", "cpu_us_per_status",
                       "vs_floor"]))
    for row in rows[2:]:
        print(f"{row['variant']} / floor per round:",
              ", ".join(f"{r:.2f}" for r in row["round_ratios"]))
    command = (f"python -m benchmarks.cpu --tasks {args.tasks} --seconds {args.seconds:g} "
               f"--rounds {args.rounds}"
               + (f" --interval {args.interval:g}" if args.interval != 0.02 else ""))
    name = "cpu" if args.interval == 0.02 else f"cpu_interval{args.interval:g}"
    print("saved", save(name, command, rows))


if __name__ == "__main__":
    main()
