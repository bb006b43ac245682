"""The batch journal: a killed batch resumes without paying twice or losing a task id."""

from __future__ import annotations

import stat
from pathlib import Path

import anyio
import pytest

import kling_async as kling
from kling_async._convert import request_to_wire as kling_body
from kling_async._journal import digest_of
from kling_async.testing import Emulator, Fault

from .conftest import FAST_RETRY

SCALE = 3000.0
POLL = kling.PollPolicy(min_interval=0.005, max_interval=0.05, time_scale=SCALE)


def client_for(emu: Emulator, **options: object) -> kling.Client:
    return kling.Client(emu.api_key, base_url=emu.url, poll=POLL, retry=FAST_RETRY,
                        max_requests_per_second=None, **options)  # type: ignore[arg-type]


def requests(n: int) -> list[kling.TextToVideo]:
    return [kling.TextToVideo(prompt=f"journaled clip {i}") for i in range(n)]


async def run(client: kling.Client, batch: list[kling.TextToVideo], journal: kling.Journal,
              folder: Path, stop_after: int | None = None) -> list[kling.BatchEvent]:
    events: list[kling.BatchEvent] = []
    with anyio.fail_after(20):
        async with client.generate_many(batch, download_to=folder, journal=journal) as stream:
            async for event in stream:
                events.append(event)
                if stop_after is not None and len(events) >= stop_after:
                    break
    return events


def finals(events: list[kling.BatchEvent]) -> dict[int, kling.BatchEvent]:
    return {e.index: e for e in events if isinstance(e, kling.Succeeded | kling.Failed)}


async def test_an_interrupted_batch_resumes_without_duplicates(tmp_path: Path) -> None:
    batch = requests(12)
    async with Emulator(time_scale=SCALE, seed=8) as emu:
        journal = kling.Journal(tmp_path / "journal.sqlite3")
        async with client_for(emu, max_in_flight=4) as client:
            first = await run(client, batch, journal, tmp_path, stop_after=6)
        assert len(finals(first)) < 12
        async with client_for(emu, max_in_flight=4) as client:
            second = await run(client, batch, journal, tmp_path)
        journal.close()
        stats = emu.statistics()
    ends = finals(second)
    assert sorted(ends) == list(range(12))
    assert all(isinstance(e, kling.Succeeded) for e in ends.values())
    assert stats.tasks_created == 12
    assert stats.duplicate_bodies == 0
    files = sorted(p.name for p in tmp_path.glob("*.mp4"))
    assert len(files) == 12
    entries = kling.Journal(tmp_path / "journal.sqlite3").entries()
    assert {e.state for e in entries.values()} == {"downloaded"}


async def test_finished_items_are_not_read_again(tmp_path: Path) -> None:
    batch = requests(4)
    async with Emulator(time_scale=SCALE, seed=9) as emu:
        journal = kling.Journal(tmp_path / "journal.sqlite3")
        async with client_for(emu) as client:
            await run(client, batch, journal, tmp_path)
        emu.reset_statistics()
        async with client_for(emu) as client:
            again = await run(client, batch, journal, tmp_path)
        journal.close()
        stats = emu.statistics()
    assert all(isinstance(e, kling.Succeeded) and e.path for e in finals(again).values())
    assert sum(stats.requests.values()) == 0


async def test_an_unsettled_submission_is_resent_with_its_key(tmp_path: Path) -> None:
    batch = requests(3)
    async with Emulator(time_scale=SCALE, seed=10) as emu:
        journal = kling.Journal(tmp_path / "journal.sqlite3")
        emu.fail_next("create", Fault.reset(after_commit=True), times=FAST_RETRY.max_attempts)
        async with client_for(emu, max_in_flight=1) as client:
            first = await run(client, batch, journal, tmp_path)
        unknown = [e for e in finals(first).values() if isinstance(e, kling.Failed)]
        assert len(unknown) == 1
        assert isinstance(unknown[0].error, kling.SubmissionUnknownError)
        assert journal.entries()[unknown[0].index].state == "submitting"
        async with client_for(emu) as client:
            second = await run(client, batch, journal, tmp_path)
        journal.close()
        stats = emu.statistics()
    assert all(isinstance(e, kling.Succeeded) for e in finals(second).values())
    assert stats.tasks_created == 3
    assert stats.duplicate_bodies == 0
    assert all(n == 1 for n in stats.tasks_per_idempotency_key.values())


async def test_a_foreign_journal_is_refused_before_sending(tmp_path: Path) -> None:
    async with Emulator(time_scale=SCALE) as emu:
        journal = kling.Journal(tmp_path / "journal.sqlite3")
        async with client_for(emu) as client:
            await run(client, requests(2), journal, tmp_path)
            emu.reset_statistics()
            other = [kling.TextToVideo(prompt="something else"), *requests(2)]
            with pytest.raises(ValueError, match="different request"):
                async with client.generate_many(other, journal=journal):
                    pass
        journal.close()
        assert sum(emu.statistics().requests.values()) == 0


async def test_the_journal_is_private_and_keeps_no_key(tmp_path: Path) -> None:
    secret = "sk-journal-secret-000000000000"
    async with Emulator(time_scale=SCALE, api_key=secret) as emu:
        path = tmp_path / "journal.sqlite3"
        journal = kling.Journal(path)
        async with client_for(emu) as client:
            await run(client, requests(2), journal, tmp_path)
        journal.close()
    for file in tmp_path.glob("journal.sqlite3*"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert secret.encode() not in file.read_bytes()
    assert secret not in repr(journal)


async def test_a_replayed_submission_that_already_finished_still_reports(
        tmp_path: Path) -> None:
    batch = requests(1)
    async with Emulator(time_scale=0) as emu:
        journal = kling.Journal(tmp_path / "journal.sqlite3")
        body = kling_body(batch[0])
        await journal.begin(0, digest_of(body), body, "replayed-key-000000001")
        async with client_for(emu) as client:
            await client.submit(batch[0], idempotency_key="replayed-key-000000001")
        emu.advance(1000)  # the task finished while its submitter was "dead"
        async with client_for(emu) as client:
            events = await run(client, batch, journal, tmp_path)
        journal.close()
        stats = emu.statistics()
    assert [type(e).__name__ for e in events] == ["Submitted", "Succeeded"]
    assert stats.tasks_created == 1
    assert stats.replays == 1
