"""Shared budget: several processes, one account, against the same Emulator process.

    python -m benchmarks.shared_budget --processes 4 --tasks 100 --limit 16 --scale 300

Each variant starts ``--processes`` worker processes (``tests/budget_worker.py``) of
``--tasks`` clips each, against an account that allows ``--limit`` unfinished tasks:

- **shared fixed**: one ``RedisBudget``, ``max_in_flight=limit`` (the account's total);
- **shared adaptive**: one ``RedisBudget``, ``AdaptiveLimit`` learnt together;
- **static split**: no budget, ``max_in_flight=limit // processes`` each;
- **uncoordinated**: no budget, ``max_in_flight=limit`` each (each thinks it owns it).

With ``--uneven`` the processes get unequal shares of the same total (4:3:2:1 for four),
as when a web app and a batch job share an account: a static split then leaves slots idle.

Makespan is compared with the ideal: the same task durations list-scheduled on exactly
``--limit`` slots. Utilisation is busy slot-time over ``limit x makespan``. Redis cost is
counted on the server (``INFO``): script calls (round trips that change the budget),
pace calls included, and commands (what the scripts run inside) per task.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

import anyio

from tests.fleet import emulator_process, run_fleet
from tests.redis_server import RedisServer

from ._harness import save, table
from .admission import ideal_makespan

VARIANTS = ("shared fixed", "shared adaptive", "static split", "uncoordinated")


def redis_counts(server: RedisServer) -> tuple[int, int]:
    """(commands processed, script calls) on ``server`` so far."""
    stats = server.command("INFO", "stats").decode()
    commands = int(re.search(r"total_commands_processed:(\d+)", stats).group(1))  # type: ignore[union-attr]
    calls = server.command("INFO", "commandstats").decode()
    scripts = sum(int(n) for n in re.findall(r"cmdstat_evalsha:calls=(\d+)", calls))
    return commands, scripts


async def measure(variant: str, args: argparse.Namespace, redis: RedisServer) -> dict[str, Any]:
    """Run one variant against a fresh Emulator process; one row of the table."""
    limit, processes = args.limit, args.processes
    worker = ["--tasks", str(args.tasks), "--scale", str(args.scale), "--lease", "30"]
    if variant.startswith("shared"):
        worker += ["--redis", redis.url, "--name", f"bench-{time.monotonic_ns()}",
                   "--limit", str(limit)]
        if variant == "shared adaptive":
            worker.append("--adaptive")
    else:
        worker += ["--limit", str(limit // processes if variant == "static split" else limit)]
    before = redis_counts(redis)
    async with emulator_process("--time-scale", str(args.scale),
                                "--max-concurrent-tasks", str(limit)) as emu:
        summaries = await run_fleet(emu, processes, *worker, tasks=shares(args))
        stats = await emu.statistics()
        timeline = await emu.timeline()
    after = redis_counts(redis)
    created, ends = timeline["created"], timeline["ends"]
    order = sorted(created, key=created.get)
    durations = [ends[t] - created[t] for t in order]
    makespan = max(ends.values()) - min(created.values())
    tasks = len(order)
    return {"variant": variant, "tasks": tasks,
            "rejected_429": stats["requests"].get("create 429", 0),
            "peak_in_flight": max(stats["peak_in_flight"].values()),
            "vs_ideal": makespan / ideal_makespan(durations, limit),
            "utilisation": sum(durations) / (makespan * limit),
            "slowest_worker_s": max(s["makespan"] for s in summaries),
            "redis_calls_per_task": (after[1] - before[1]) / tasks,
            "redis_commands_per_task": (after[0] - before[0]) / tasks}


def shares(args: argparse.Namespace) -> list[int]:
    """Tasks per process: equal, or with ``--uneven`` proportional to n, n-1, ... 1."""
    total, count = args.tasks * args.processes, args.processes
    if not args.uneven:
        return [args.tasks] * count
    weights = list(range(count, 0, -1))
    split = [total * w // sum(weights) for w in weights]
    split[0] += total - sum(split)
    return split


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every variant, ``--runs`` times, against one redis-server."""
    redis = RedisServer()
    redis.start()
    try:
        rows = []
        for number in range(args.runs):
            for variant in VARIANTS:
                row = await measure(variant, args, redis)
                rows.append({"run": number + 1, **row})
        return rows
    finally:
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=100, help="per process")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--scale", type=float, default=300.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--uneven", action="store_true", help="unequal shares (4:3:2:1)")
    args = parser.parse_args()
    rows = anyio.run(run, args)
    print(table(rows, ["run", "variant", "tasks", "rejected_429", "peak_in_flight",
                       "vs_ideal", "utilisation", "redis_calls_per_task",
                       "redis_commands_per_task"]))
    command = (f"python -m benchmarks.shared_budget --processes {args.processes} --tasks "
               f"{args.tasks} --limit {args.limit} --scale {args.scale:g} --runs {args.runs}"
               + (" --uneven" if args.uneven else ""))
    name = "shared_budget_uneven" if args.uneven else "shared_budget"
    print("saved", save(name, command, rows, limit=args.limit, scale=args.scale,
                        shares=shares(args)))


if __name__ == "__main__":
    main()
