"""Run the Emulator until interrupted: ``python -m kling_async.testing --port 8000``."""

from __future__ import annotations

import argparse
import sys

import anyio

from ._emulator import DEFAULT_API_KEY, Emulator


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, start the Emulator, print its URL and key, serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m kling_async.testing",
                                     description="A faithful EvoLink API server on loopback.")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument("--time-scale", type=float, default=100.0,
                        help="API seconds per real second (default 100; 0 freezes time)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--max-concurrent-tasks", type=int, default=None)
    parser.add_argument("--balance", type=float, default=1_000_000.0,
                        help="credits of the default account (each 5 s clip costs 27)")
    parser.add_argument("--requests-per-second", type=float, default=None)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--result-size", type=int, default=None)
    parser.add_argument("--estimated-time", type=float, default=300.0,
                        help="estimated_time of every task, in API seconds")
    parser.add_argument("--duration-spread", type=float, default=0.2,
                        help="real durations spread +/- this share around the estimate")
    parser.add_argument("--duration-factor", type=float, default=1.0,
                        help="real durations are the estimate times this (5: estimates "
                        "five times too short)")
    parser.add_argument("--progress-ceiling", type=int, default=None,
                        help="progress climbs steadily to this percent, then the task "
                        "completes (default: it creeps through the 90s first)")
    parser.add_argument("--no-batch", action="store_true", help="switch POST /v1/tasks/batch off")
    parser.add_argument("--allow-local-callbacks", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with Emulator(port=args.port, time_scale=args.time_scale, api_key=args.api_key,
                            balance=args.balance,
                            max_concurrent_tasks=args.max_concurrent_tasks,
                            requests_per_second=args.requests_per_second,
                            failure_rate=args.failure_rate, result_size=args.result_size,
                            estimated_time=args.estimated_time,
                            duration_spread=args.duration_spread,
                            duration_factor=args.duration_factor,
                            progress_ceiling=args.progress_ceiling,
                            batch_endpoint=not args.no_batch,
                            allow_local_callbacks=args.allow_local_callbacks,
                            seed=args.seed) as emu:
            # Export all three: the SDK and the command read them; the last one makes
            # clients poll at the Emulator's speed.
            print(f"EVOLINK_BASE_URL={emu.url}", flush=True)
            print(f"EVOLINK_API_KEY={emu.api_key}", flush=True)
            print(f"KLING_ASYNC_TIME_SCALE={args.time_scale:g}", flush=True)
            await anyio.sleep_forever()

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
