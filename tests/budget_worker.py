"""One process of a fleet sharing a RedisBudget (used by tests/test_budget.py and
benchmarks/shared_budget.py):

    python -m tests.budget_worker --redis URL --name N --tasks 25 --limit 8 [--adaptive]

It reads ``EVOLINK_BASE_URL``, ``EVOLINK_API_KEY`` and ``KLING_ASYNC_TIME_SCALE`` like any
program, prints ``submitted`` once per submission as it goes, and one JSON line at the end:
every event's kind per item, the 429s it met and its makespan.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import anyio

import kling_async as kling


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Generate ``args.tasks`` clips through a Client sharing the budget."""
    budget = (kling.RedisBudget(args.redis, name=args.name, lease=args.lease)
              if args.redis else None)
    limit: int | kling.AdaptiveLimit = (kling.AdaptiveLimit(initial=4) if args.adaptive
                                        else args.limit)
    scale = float(args.scale)
    retry = kling.RetryPolicy(backoff_base=0.5 / scale, backoff_max=30 / scale,
                              retry_after_max=60 / scale)
    requests = [kling.TextToVideo(prompt=f"{args.tag} clip {i}") for i in range(args.tasks)]
    events: dict[int, list[str]] = {i: [] for i in range(args.tasks)}
    started = time.monotonic()
    async with kling.Client(max_in_flight=limit, budget=budget, retry=retry,
                            max_requests_per_second=args.rate) as client:
        async with client.generate_many(requests) as stream:
            async for event in stream:
                if isinstance(event, kling.Progressed):
                    continue
                events[event.index].append(type(event).__name__)
                if isinstance(event, kling.Submitted):
                    print("submitted", event.task_id, flush=True)
        rejected = client.statistics().rate_limited
    return {"events": events, "rejected": rejected, "makespan": time.monotonic() - started}


def main() -> None:
    """Parse the arguments, run, print the summary as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m tests.budget_worker")
    parser.add_argument("--redis", default=None, help="no budget when left out")
    parser.add_argument("--name", default="default")
    parser.add_argument("--tasks", type=int, default=25)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--adaptive", action="store_true")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--scale", type=float, default=1.0, help="the Emulator's time scale")
    parser.add_argument("--tag", default="worker")
    summary = anyio.run(run, parser.parse_args())
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
