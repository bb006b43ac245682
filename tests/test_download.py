"""Downloads: streamed, resumed with Range, size-checked, atomic, inside their folder."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import kling_async as kling
from kling_async._download import inside, safe_name
from kling_async.testing import Emulator, Fault
from kling_async.testing._files import result_bytes

SIZE = 3_000_000


async def finished_task(emulator: Emulator, client: kling.Client) -> kling.TaskSnapshot:
    snap = await client.submit(kling.TextToVideo(prompt="a cat"))
    emulator.advance(1000)
    with anyio.fail_after(5):
        return await client.wait_finished(snap.id)


async def test_download_writes_the_whole_file_atomically(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    emulator.result_size = SIZE
    done = await finished_task(emulator, client)
    target = tmp_path / "nested" / "cat.mp4"
    path = await client.download(done, target)
    assert path == target
    assert target.read_bytes() == result_bytes(SIZE)
    assert [p.name for p in target.parent.iterdir()] == ["cat.mp4"]  # no partial left
    stats = emulator.statistics()
    assert stats.count("file", 200) == 1
    assert stats.file_requests_with_key == 0


async def test_download_resumes_after_a_dropped_connection(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    emulator.result_size = SIZE
    done = await finished_task(emulator, client)
    emulator.fail_next("file", Fault.reset())
    path = await client.download(done.video_url or "", tmp_path / "cat.mp4")
    assert path.read_bytes() == result_bytes(SIZE)
    stats = emulator.statistics()
    assert stats.count("file", 200) == 1
    assert stats.count("file", 206) == 1
    assert stats.file_bytes_sent < SIZE * 1.6  # the second request sent only the rest


async def test_a_stale_partial_from_a_killed_run_is_resumed(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    emulator.result_size = SIZE
    done = await finished_task(emulator, client)
    target = tmp_path / "cat.mp4"
    (tmp_path / ".cat.mp4.part").write_bytes(result_bytes(SIZE)[:1000])
    await client.download(done, target)
    assert target.read_bytes() == result_bytes(SIZE)
    assert emulator.statistics().count("file", 206) == 1


async def test_expired_links_say_to_generate_again(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    done = await finished_task(emulator, client)
    emulator.advance(25 * 3600)
    with pytest.raises(kling.ResultExpiredError, match="generate the clip again") as caught:
        await client.download(done, tmp_path / "late.mp4")
    assert isinstance(caught.value, kling.DownloadError)
    assert not (tmp_path / "late.mp4").exists()


async def test_bad_sources_are_refused(emulator: Emulator, client: kling.Client,
                                       tmp_path: Path) -> None:
    snap = await client.submit(kling.TextToVideo(prompt="not yet"))
    with pytest.raises(ValueError, match="no result"):
        await client.download(snap, tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="URL"):
        await client.download("file:///etc/passwd", tmp_path / "x.mp4")


@pytest.mark.parametrize("name", ["../escape.mp4", "/etc/passwd", "sub/dir.mp4", "..", ""])
def test_names_cannot_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="outside"):
        inside(tmp_path, name)


@pytest.mark.parametrize(("raw", "safe"), [
    ("task-unified-1-abc", "task-unified-1-abc"), ("../../etc/passwd", "_.._etc_passwd"),
    ("a/b\\c", "a_b_c"), ("...", "clip"), ("", "clip")])
def test_safe_names(raw: str, safe: str) -> None:
    assert safe_name(raw) == safe
    assert "/" not in safe_name(raw)
    assert safe_name(raw) not in (".", "..")


async def test_batches_download_as_tasks_succeed(tmp_path: Path) -> None:
    async with Emulator(time_scale=3000, seed=4) as emu:
        poll = kling.PollPolicy(min_interval=0.005, max_interval=0.05, time_scale=3000)
        async with kling.Client(emu.api_key, base_url=emu.url, poll=poll,
                                max_requests_per_second=None) as client:
            requests = [kling.TextToVideo(prompt=f"clip {i}") for i in range(6)]
            succeeded: list[kling.Succeeded] = []
            with anyio.fail_after(20):
                async with client.generate_many(requests, download_to=tmp_path) as events:
                    async for event in events:
                        if isinstance(event, kling.Succeeded):
                            succeeded.append(event)
    assert len(succeeded) == 6
    for event in succeeded:
        assert event.path is not None
        assert event.path.parent == tmp_path.resolve()
        assert event.path.read_bytes() == result_bytes(None)
        assert event.path.name.startswith(f"{event.index:05d}-")
