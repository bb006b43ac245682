"""Downloads: streamed, resumed with Range, size-checked, atomic, inside their folder."""

from __future__ import annotations

import fcntl
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

import kling_async as kling
from kling_async._download import (
    FIRST_PAUSE,
    INLINE_WRITE_BUDGET,
    LONGEST_PAUSE,
    WritePlace,
    inside,
    safe_name,
)
from kling_async.testing import Emulator, Fault

from .conftest import make_client

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
    assert target.read_bytes() == emulator.result_file(done.id)
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
    assert path.read_bytes() == emulator.result_file(done.id)
    stats = emulator.statistics()
    assert stats.count("file", 200) == 1
    assert stats.count("file", 206) == 1
    assert stats.file_bytes_sent < SIZE * 1.6  # the second request sent only the rest


async def killed_download(emulator: Emulator, done: kling.TaskSnapshot, target: Path) -> None:
    """A download that dies halfway, leaving its partial file (as a killed run would)."""
    emulator.fail_next("file", Fault.reset())
    async with make_client(emulator, retry=kling.RetryPolicy(max_attempts=1)) as one_shot:
        with pytest.raises(kling.DownloadError):
            await one_shot.download(done, target)
    assert target.with_name(f".{target.name}.part").stat().st_size > 0


async def test_a_partial_left_by_a_killed_download_is_resumed(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    emulator.result_size = SIZE
    done = await finished_task(emulator, client)
    target = tmp_path / "cat.mp4"
    await killed_download(emulator, done, target)
    await client.download(done, target)
    assert target.read_bytes() == emulator.result_file(done.id)
    assert emulator.statistics().count("file", 206) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.mp4"]


async def test_a_partial_of_another_clip_is_discarded(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    emulator.result_size = SIZE
    clip_a = await finished_task(emulator, client)
    clip_b = await finished_task(emulator, client)
    target = tmp_path / "clip.mp4"
    await killed_download(emulator, clip_a, target)
    await client.download(clip_b, target)
    assert target.read_bytes() == emulator.result_file(clip_b.id)
    assert target.read_bytes() != emulator.result_file(clip_a.id)
    assert emulator.statistics().count("file", 206) == 0  # nothing of A was reused


async def test_two_downloads_to_one_path_at_once(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    emulator.result_size = SIZE
    done = await finished_task(emulator, client)
    target = tmp_path / "cat.mp4"
    paths: list[Path] = []

    async def fetch() -> None:
        paths.append(await client.download(done, target))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            tg.start_soon(fetch)
    assert paths == [target, target]
    assert target.read_bytes() == emulator.result_file(done.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.mp4"]


async def test_a_path_another_process_writes_is_refused(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    done = await finished_task(emulator, client)
    target = tmp_path / "cat.mp4"
    other = await anyio.open_file(tmp_path / ".cat.mp4.part", "a+b")
    fcntl.flock(other.wrapped.fileno(), fcntl.LOCK_EX)  # what another process's download holds
    with pytest.raises(kling.DownloadError, match="another process"):
        await client.download(done, target)
    await other.aclose()
    await client.download(done, target)
    assert target.read_bytes() == emulator.result_file(done.id)


async def test_presigned_urls_reach_the_server_unchanged(
        emulator: Emulator, client: kling.Client, tmp_path: Path) -> None:
    done = await finished_task(emulator, client)
    assert done.video_url is not None
    assert "%2F" in done.video_url  # the signature is percent-encoded base64
    await client.download(done.video_url, tmp_path / "cat.mp4")
    assert (tmp_path / "cat.mp4").read_bytes() == emulator.result_file(done.id)
    assert emulator.statistics().bad_signatures == 0
    async with aiohttp.ClientSession() as plain, plain.get(done.video_url) as response:
        assert response.status == 403  # what aiohttp does to a str URL: re-encoded
    assert emulator.statistics().bad_signatures == 1


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
        assert event.path.read_bytes() == emu.result_file(event.task_id)
        assert event.path.name.startswith(f"{event.index:05d}-")


async def test_a_chunked_body_is_written_whole(client: kling.Client, tmp_path: Path) -> None:
    """A body without a length (chunked transfer encoding, pieces of odd sizes) is taken
    piece by piece as aiohttp buffered it, and written whole."""
    body = bytes(range(256)) * 12_000

    async def clip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 77_777):
            await response.write(body[start:start + 77_777])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/clip.mp4", clip)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        path = await client.download(f"http://{host}:{port}/clip.mp4", tmp_path / "clip.mp4")
    finally:
        await runner.cleanup()
    assert path.read_bytes() == body


def test_a_slow_write_sends_a_few_blocks_to_a_thread_then_the_loop_tries_again() -> None:
    fast, slow = INLINE_WRITE_BUDGET / 10, INLINE_WRITE_BUDGET * 10

    def until_inline(place: WritePlace) -> int:
        """Blocks written in the worker thread before the next one on the loop."""
        threaded = 0
        while not place.inline():
            threaded += 1
        return threaded

    place = WritePlace()
    assert until_inline(place) == 0  # a new download writes on the loop
    place.took(fast)
    assert until_inline(place) == 0
    place.took(slow)  # a moment of slowness: a few blocks in the thread, then the loop
    assert until_inline(place) == FIRST_PAUSE
    pauses = []
    for _ in range(10):  # a disk that stays slow: ever fewer of its writes on the loop
        place.took(slow)
        pauses.append(until_inline(place))
    assert pauses == [min(FIRST_PAUSE * 2 ** n, LONGEST_PAUSE) for n in range(1, 11)]
    place.took(fast)  # fast again: the next slow moment costs a short pause again
    place.took(slow)
    assert until_inline(place) == FIRST_PAUSE
