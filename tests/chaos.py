"""The chaos run: a batch under every kind of fault at once. Used by the test suite (a
bounded run) and on demand: ``python -m tests.chaos --tasks 500``.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from typing import Any

import anyio
import attrs

import kling_async as kling
from kling_async.testing import Emulator, Fault

from .receiver import run_receiver

SCALE = 3000.0


@attrs.frozen
class ChaosReport:
    """What a chaos run saw."""

    tasks: int
    finals_per_request: dict[int, int]
    succeeded: int
    failed_tasks: int
    unknown_settled: int
    duplicates: int
    lost_ids: int
    created: int
    peak_connections: int
    max_connections: int
    faults: dict[str, int]
    failure_codes: dict[str, int]
    stale_callbacks_ignored: int

    def lines(self) -> list[str]:
        """The figures, for people."""
        faults = ", ".join(f"{n} x {kind}" for kind, n in sorted(self.faults.items()))
        return [
            f"requests: {self.tasks}; each ended in exactly one final event: "
            f"{all(n == 1 for n in self.finals_per_request.values())}",
            f"succeeded {self.succeeded}, tasks failed by the service {self.failed_tasks} "
            f"({dict(self.failure_codes)})",
            f"faults injected: {faults}",
            f"unknown submissions settled with their key: {self.unknown_settled}",
            f"duplicate paid submissions: {self.duplicates}; lost task ids: {self.lost_ids}; "
            f"tasks created: {self.created}",
            f"peak open connections: {self.peak_connections} (pool {self.max_connections}); "
            f"stale or forged callbacks ignored: {self.stale_callbacks_ignored}",
        ]


def add_faults(emu: Emulator, slow: float) -> None:
    """10 % 5xx, 5 % 429 with Retry-After, 3 % resets, 2 % slower than the read timeout."""
    for route in ("create", "get", "batch"):
        emu.set_fault_rate(route, Fault.error(503), 0.03)
        emu.set_fault_rate(route, Fault.error(500), 0.03)
        emu.set_fault_rate(route, Fault.html(502), 0.04)
        emu.set_fault_rate(route, Fault.error(429, retry_after=0.02), 0.05)
        emu.set_fault_rate(route, Fault.reset(after_commit=route == "create"), 0.03)
        emu.set_fault_rate(route, Fault.slow(slow), 0.02)


async def run_chaos(tasks: int, *, seed: int = 1, max_connections: int = 8) -> ChaosReport:
    """Run ``tasks`` requests through ``generate_many`` while everything goes wrong."""
    rng = random.Random(seed)
    requests = [kling.TextToVideo(prompt=f"chaos clip {i}", callback_url="http://x",
                                  allow_local_callback=True) for i in range(tasks)]
    stale_ignored = 0
    async with run_receiver() as receiver, Emulator(
            time_scale=SCALE, seed=seed, failure_rate=0.05, allow_local_callbacks=True,
            callback_duplicates=1, callback_delay=3) as emu:
        requests = [attrs.evolve(r, callback_url=receiver.url) for r in requests]
        add_faults(emu, slow=0.5)
        poll = kling.PollPolicy(min_interval=5 / SCALE, max_interval=60 / SCALE,
                                time_scale=SCALE)
        retry = kling.RetryPolicy(max_attempts=5, backoff_base=0.005, backoff_max=0.05,
                                  retry_after_max=0.1)
        timeouts = kling.Timeouts(connect=2, read=0.25, submit=0.25)
        async with kling.Client(emu.api_key, base_url=emu.url, poll=poll, retry=retry,
                                timeouts=timeouts, max_connections=max_connections,
                                max_requests_per_second=None, seed=seed) as client:
            receiver.on_body = client.ingest_callback
            events: list[kling.BatchEvent] = []
            with anyio.fail_after(120):
                async with client.generate_many(requests) as stream:
                    async for event in stream:
                        events.append(event)
                        if isinstance(event, kling.Succeeded) and rng.random() < 0.3:
                            # A late, out-of-order callback for a finished task.
                            stale = {**emu.task_json(event.task_id), "status": "processing",
                                     "progress": 12}
                            stale_ignored += not client.ingest_callback(stale)
            emu.clear_faults()
            settled = 0
            for event in events:
                if isinstance(event, kling.Failed) and isinstance(
                        event.error, kling.SubmissionUnknownError):
                    snap = await client.submit(requests[event.index],
                                               idempotency_key=event.error.idempotency_key)
                    events.append(kling.Submitted(index=event.index, task_id=snap.id,
                                                  snapshot=snap))
                    settled += 1
        stats = emu.statistics()
        created = set(emu.world.tasks)
        injected = dict(emu.faults.injected)
    finals = Counter(e.index for e in events if isinstance(e, kling.Succeeded | kling.Failed))
    known = {e.task_id for e in events if getattr(e, "task_id", None)}
    failed_tasks = [e for e in events if isinstance(e, kling.Failed)
                    and isinstance(e.error, kling.TaskFailedError)]
    return ChaosReport(
        tasks=tasks, finals_per_request=dict(finals),
        succeeded=sum(isinstance(e, kling.Succeeded) for e in events),
        failed_tasks=len(failed_tasks), unknown_settled=settled,
        duplicates=stats.duplicate_bodies, lost_ids=len(created - known),
        created=stats.tasks_created, peak_connections=stats.peak_connections,
        max_connections=max_connections, faults=injected,
        failure_codes=dict(Counter(e.error.code for e in failed_tasks
                                   if isinstance(e.error, kling.TaskFailedError))),
        stale_callbacks_ignored=stale_ignored)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the chaos suite and print figures.")
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report: Any = anyio.run(lambda: run_chaos(args.tasks, seed=args.seed))
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
