"""Habits users bring from peer SDKs: one-call generate, a blocking client, item keys,
request ids on every reading."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

import kling_async as kling
from kling_async.testing import Emulator

SCALE = 3000.0
SCALED = kling.PollPolicy(min_interval=0.005, max_interval=0.05, time_scale=SCALE)


# -- generate ------------------------------------------------------------------------------

async def test_generate_returns_the_finished_task(tmp_path: Path) -> None:
    async with Emulator(time_scale=SCALE) as emu, emu.client(poll=SCALED) as client:
        seen: list[kling.TaskUpdate] = []
        with anyio.fail_after(10):
            done = await client.generate(kling.TextToVideo(prompt="a cat"),
                                         on_progress=seen.append)
            path = await client.generate_file(kling.TextToVideo(prompt="a dog"),
                                              tmp_path / "dog.mp4")
        assert done.status is kling.TaskStatus.COMPLETED
        assert done.video_url
        assert seen[-1].is_final
        assert [u.progress for u in seen] == sorted(u.progress for u in seen)
        dog = next(t for t in emu.world.tasks if t != done.id)
        assert path.read_bytes() == emu.result_file(dog)
        emu.fail_next_tasks("content_policy_violation")
        with anyio.fail_after(10), pytest.raises(kling.TaskFailedError) as caught:
            await client.generate(kling.TextToVideo(prompt="refused later"))
        assert caught.value.code == "content_policy_violation"
        assert not caught.value.retryable


# -- request ids ---------------------------------------------------------------------------

async def test_every_reading_tells_its_request_id(emulator: Emulator,
                                                  client: kling.Client) -> None:
    snap = await client.submit(kling.TextToVideo(prompt="a cat"))
    assert snap.request_id is not None
    assert snap.request_id.startswith("req-")
    read = await client.get(snap.id)
    assert read.request_id is not None
    assert read.request_id != snap.request_id
    emulator.advance(1000)
    with anyio.fail_after(5):
        done = await client.wait_finished(snap.id)
    assert done.request_id is not None
    assert done.request_id.startswith("req-")


# -- item keys -----------------------------------------------------------------------------

async def test_item_keys_ride_on_every_event_and_the_journal(tmp_path: Path) -> None:
    items = [kling.Item(kling.TextToVideo(prompt=f"clip {i}"), key=f"sku-{i}")
             for i in range(4)]
    journal_path = tmp_path / "journal.sqlite3"
    async with Emulator(time_scale=SCALE) as emu:
        async with emu.client(poll=SCALED) as client:
            journal = kling.Journal(journal_path)
            events: list[kling.BatchEvent] = []
            with anyio.fail_after(20):
                async with client.generate_many(items, journal=journal) as stream:
                    async for event in stream:
                        events.append(event)
            journal.close()
        assert events
        assert all(e.key == f"sku-{e.index}" for e in events)
        assert {e.item_key for e in kling.Journal(journal_path).entries().values()} == {
            f"sku-{i}" for i in range(4)}
        async with emu.client(poll=SCALED) as client:  # resume: nothing new, keys back
            journal = kling.Journal(journal_path)
            async with client.generate_many(items, journal=journal) as stream:
                replayed = [event async for event in stream]
            journal.close()
            renamed = [kling.Item(i.request, key="other") for i in items]
            with pytest.raises(ValueError, match="different request"):
                async with client.generate_many(renamed, journal=kling.Journal(journal_path)):
                    pass
        assert emu.statistics().tasks_created == 4
    assert sorted((e.index, e.key) for e in replayed) == [(i, f"sku-{i}") for i in range(4)]
    with pytest.raises(ValueError, match=r"Item\.key"):
        kling.Item(kling.TextToVideo(prompt="x"), key="")


# -- SyncClient ----------------------------------------------------------------------------

@pytest.fixture
def hosted_emulator() -> Iterator[Emulator]:
    """An Emulator on its own event loop thread, for tests that block their own."""
    with start_blocking_portal("asyncio") as portal, \
            portal.wrap_async_context_manager(Emulator(time_scale=SCALE, seed=2)) as emu:
        yield emu


def sync_client(emu: Emulator, **options: object) -> kling.SyncClient:
    return kling.SyncClient(emu.api_key, base_url=emu.url, poll=SCALED,
                            max_requests_per_second=None, **options)


def test_sync_client_in_a_plain_script(hosted_emulator: Emulator, tmp_path: Path) -> None:
    threads_before = threading.active_count()
    with sync_client(hosted_emulator) as client:
        snap = client.submit(kling.TextToVideo(prompt="a cat"))
        with client.watch([snap.id]) as updates:
            seen = list(updates)
        assert seen[-1].status is kling.TaskStatus.COMPLETED
        path = client.generate_file(kling.TextToVideo(prompt="a dog"), tmp_path / "d.mp4")
        assert path.stat().st_size > 0
        items = [kling.Item(kling.TextToVideo(prompt=f"c{i}"), key=str(i)) for i in range(3)]
        with client.generate_many(items) as events:
            finals = [e for e in events if isinstance(e, kling.Succeeded)]
        assert sorted(e.key or "" for e in finals) == ["0", "1", "2"]
        assert client.credits().remaining > 0
        assert client.statistics().in_flight == 0
    assert threading.active_count() == threads_before


async def test_sync_client_inside_a_running_event_loop(hosted_emulator: Emulator) -> None:
    # As in a Jupyter cell: an event loop runs in this thread, asyncio.run would fail.
    client = sync_client(hosted_emulator)
    try:
        done = client.generate(kling.TextToVideo(prompt="from a notebook"))
        assert done.status is kling.TaskStatus.COMPLETED
    finally:
        client.close()
    client.close()  # twice is fine


CTRL_C_SCRIPT = """
import threading
from anyio.from_thread import start_blocking_portal
import kling_async as kling
from kling_async.testing import Emulator

with start_blocking_portal("asyncio") as portal, \\
        portal.wrap_async_context_manager(Emulator(time_scale=0)) as emu:
    client = kling.SyncClient(emu.api_key, base_url=emu.url,
                              poll=kling.PollPolicy(min_interval=0.02, max_interval=0.2))
    snap = client.submit(kling.TextToVideo(prompt="never finishes"))
    print("waiting", flush=True)
    try:
        client.wait_finished(snap.id)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    client.close()
    try:
        client.submit(kling.TextToVideo(prompt="after close"))
    except RuntimeError:
        print("closed", flush=True)
print("threads", threading.active_count(), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_ctrl_c_then_close_leaves_no_thread_behind() -> None:
    process = await anyio.open_process([sys.executable, "-c", CTRL_C_SCRIPT])
    assert process.stdout is not None
    with anyio.fail_after(30):
        output = b""
        async for chunk in process.stdout:
            output += chunk
            if b"waiting" in output:
                break
        await anyio.sleep(0.2)
        process.send_signal(signal.SIGINT)
        async for chunk in process.stdout:
            output += chunk
        code = await process.wait()
    await process.aclose()
    lines = output.decode().split()
    assert code == 0
    assert "interrupted" in lines
    assert "closed" in lines
    assert output.decode().strip().endswith("threads 1")


def test_sync_client_checks_arguments_before_starting_a_thread() -> None:
    threads_before = threading.active_count()
    with pytest.raises(ValueError, match="max_connections"):
        kling.SyncClient("sk-any-000000000000", max_connections=0)
    assert threading.active_count() == threads_before

