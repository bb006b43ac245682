"""Reads per task at equal lag: the SDK against the careful loop of the same kind.

    python -m benchmarks.equal_lag --tasks 400 --scale 20 --rounds 3

A schedule trades reads for lag (reading more often finds ends sooner), so two
schedules measured at two different lags are not compared by their reads alone. Each
round runs the careful loop ((a3) for batch reads, (a2) with ``--per-task``), then the
SDK like for like (``max_interval`` 240 API-s: as blind to early failures as the loop)
at several read floors (``min_interval``, API seconds), every run against its own
Emulator, and reads the SDK's requests per task at the loop's p95 lag off the line
through the two floors whose lags bracket it (or the two nearest, marked
extrapolated). The SDK's defaults are not changed by this: it only places the loop on
the SDK's curve of reads against lag.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from ._harness import Server, save, table
from .polling import VARIANTS, kling_run, measure_runner

KINDS = {  # kind -> (the careful loop's variant, the Emulator's flags for the SDK)
    "batch": ("(a3) careful: sleep 0.8E, then batch-read every 5 s", ()),
    "per-task": ("(a2) careful: sleep 0.8E, then GET every 5 s", ("--no-batch",)),
}


def at_lag(points: list[tuple[float, float]], lag: float) -> tuple[float, bool]:
    """Reads per task at ``lag`` on the line through ``points`` ((p95 lag, reads)), and
    whether it lies outside them (extrapolated)."""
    ordered = sorted(points)
    below = [p for p in ordered if p[0] <= lag]
    above = [p for p in ordered if p[0] > lag]
    if below and above:
        (x0, y0), (x1, y1) = below[-1], above[0]
        outside = False
    else:
        (x0, y0), (x1, y1) = ordered[:2] if above else ordered[-2:]
        outside = True
    return y0 + (y1 - y0) * (lag - x0) / (x1 - x0), outside


async def sdk_run(min_interval: float, flags: tuple[str, ...], tasks: int,
                  scale: float) -> dict[str, Any]:
    """The SDK like for like at the read floor ``min_interval`` (API seconds)."""
    async def run(server: Server, tasks: int, scale: float, waves: int) -> dict[str, float]:
        return await kling_run(server, tasks, scale, waves, max_interval=240,
                               min_interval=min_interval)

    name = f"kling_async, max_interval 240 s, min_interval {min_interval:g} s"
    return await measure_runner(name, run, flags, tasks, scale)


async def one_round(kind: str, floors: list[float], tasks: int, scale: float,
                    backwards: bool) -> list[dict[str, Any]]:
    """The loop and the SDK at each floor (in reverse order on odd rounds), then the
    SDK's reads at the loop's lag."""
    loop_name, flags = KINDS[kind]
    runner, loop_flags = VARIANTS[loop_name]
    loop = await measure_runner(loop_name, runner, loop_flags, tasks, scale)
    rows = [loop]
    rows += [await sdk_run(floor, flags, tasks, scale)
             for floor in (floors[::-1] if backwards else floors)]
    reads, outside = at_lag([(r["lag_p95_s"], r["reads_per_task"]) for r in rows[1:]],
                            loop["lag_p95_s"])
    rows.append({"variant": "kling_async at the loop's p95" + (" (extrapolated)"
                                                              if outside else ""),
                 "reads_per_task": reads, "lag_p95_s": loop["lag_p95_s"],
                 "vs_loop": reads / loop["reads_per_task"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-task", action="store_true",
                        help="per-task GETs against (a2) instead of batch reads against (a3)")
    parser.add_argument("--floor", type=float, action="append",
                        help="a read floor (min_interval, API seconds) of the SDK; "
                        "default 5, 5.5 and 6")
    args = parser.parse_args()
    kind = "per-task" if args.per_task else "batch"
    floors = args.floor or [5.0, 5.5, 6.0]
    rows: list[dict[str, Any]] = []
    for number in range(args.rounds):
        rows += [{"round": number + 1, **row}
                 for row in asyncio.run(one_round(kind, floors, args.tasks, args.scale,
                                                  backwards=number % 2 == 1))]
    print(table(rows, ["round", "variant", "reads_per_task", "lag_p95_s", "client_cpu_s",
                       "vs_loop"]))
    at_loop_lag = [row for row in rows if "vs_loop" in row]
    summary = {"reads_at_loop_lag_median": statistics.median(
        row["reads_per_task"] for row in at_loop_lag),
        "vs_loop_median": statistics.median(row["vs_loop"] for row in at_loop_lag)}
    print(summary)
    command = (f"python -m benchmarks.equal_lag --tasks {args.tasks} --scale {args.scale:g} "
               f"--rounds {args.rounds}" + (" --per-task" if args.per_task else "")
               + "".join(f" --floor {f:g}" for f in args.floor or ()))
    print("saved", save(f"equal_lag_{kind}", command, rows, scale=args.scale, **summary))


if __name__ == "__main__":
    main()
