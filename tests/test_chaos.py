"""Chaos: a batch survives 5xx, 429, resets, slow answers, failed tasks and bad callbacks."""

from __future__ import annotations

from .chaos import run_chaos


async def test_a_batch_survives_everything_at_once() -> None:
    report = await run_chaos(150, seed=3)
    assert sorted(report.finals_per_request) == list(range(150))
    assert set(report.finals_per_request.values()) == {1}  # exactly one final each
    assert report.duplicates == 0
    assert report.lost_ids == 0
    assert report.created == 150
    assert report.peak_connections <= report.max_connections
    assert report.succeeded + report.failed_tasks + report.unknown_settled >= 150
    assert sum(report.faults.values()) > 50  # the faults really happened
    assert report.failed_tasks > 0
    assert report.stale_callbacks_ignored > 0
