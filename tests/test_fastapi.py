"""The FastAPI example, served by uvicorn on loopback against the Emulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import kling_async as kling
from examples.fastapi_app import create_app
from kling_async.testing import Emulator

from .browser import chromium, open_page

SCALE = 300.0
QUICK = kling.PollPolicy(min_interval=0.02, max_interval=0.2, time_scale=SCALE)


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (any free port) for the block."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def read_events(http: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    events = []
    async with http.stream("GET", f"/videos/{task_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def test_submit_status_and_progress_stream() -> None:
    async with Emulator(time_scale=SCALE, allow_local_callbacks=True) as emu:
        app = create_app(api_key=emu.api_key, base_url=emu.url, poll=QUICK,
                         allow_local_callback=True)
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            response = await http.post("/videos", json={"prompt": "a cat", "duration": 6})
            assert response.status_code == 202
            task_id = response.json()["id"]
            with anyio.fail_after(20):
                events = await read_events(http, task_id)
            assert events[-1]["status"] == "completed"
            assert events[-1]["video_url"].split("?")[0].endswith(".mp4")
            progress = [e["progress"] for e in events]
            assert progress == sorted(progress)
            assert len(set(progress)) > 2
            status = (await http.get(f"/videos/{task_id}")).json()
            assert status["status"] == "completed"
            assert status["progress"] == 100
            refused = await http.post("/videos", json={"prompt": "a cat", "duration": 40})
            assert refused.status_code == 422
            assert "TextToVideo.duration" in refused.text
            assert (await http.get("/videos/nonsense")).status_code == 422
            missing = await http.get("/videos/task-unified-1-missing0")
            assert missing.status_code == 404
        assert emu.received[0]["callback_url"].endswith("/webhooks/evolink")
        assert emu.statistics().tasks_created == 1


async def test_webhooks_short_circuit_polling() -> None:
    slow = kling.PollPolicy(min_interval=30, max_interval=60)
    async with Emulator(time_scale=0, allow_local_callbacks=True) as emu:
        app = create_app(api_key=emu.api_key, base_url=emu.url, poll=slow,
                         allow_local_callback=True)
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            task_id = (await http.post("/videos", json={"prompt": "a cat"})).json()["id"]
            started = anyio.current_time()

            async def finish_while_streaming() -> None:
                await anyio.sleep(0.05)
                emu.finish_task(task_id)

            async with anyio.create_task_group() as tg:
                tg.start_soon(finish_while_streaming)
                with anyio.fail_after(5):
                    events = await read_events(http, task_id)
            lag = anyio.current_time() - started
        stats = emu.statistics()
    assert events[-1]["status"] == "completed"
    assert lag < 2.0  # the next poll was 30 s away
    assert stats.callbacks_sent >= 1


async def test_concurrent_requests_share_one_client_and_pool() -> None:
    async with Emulator(time_scale=0, allow_local_callbacks=True) as emu:
        app = create_app(api_key=emu.api_key, base_url=emu.url, poll=QUICK)
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            ids: list[str] = []

            async def submit(n: int) -> None:
                response = await http.post("/videos", json={"prompt": f"clip {n}"})
                ids.append(response.json()["id"])

            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(submit, n)
            stats = app.state.client.statistics()
            assert stats.in_flight == 20
            assert stats.tracked == 20
        emu_stats = emu.statistics()
    assert len(set(ids)) == 20
    assert emu_stats.tasks_created == 20
    assert emu_stats.peak_connections <= 16  # the one Client's pool


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed")
async def test_the_page_in_headless_chromium(tmp_path: Path) -> None:
    executable = chromium()
    assert executable is not None
    async with Emulator(time_scale=60, allow_local_callbacks=True) as emu:
        poll = kling.PollPolicy(min_interval=0.05, max_interval=0.3, time_scale=60)
        app = create_app(api_key=emu.api_key, base_url=emu.url, poll=poll)
        async with serve(app) as url, open_page(executable) as page:
            await page.call("Page.navigate", url=f"{url}/")
            with anyio.fail_after(15):
                while await page.evaluate("document.readyState") != "complete" or not (
                        await page.evaluate("!!document.getElementById('go')")):
                    await anyio.sleep(0.05)
            await page.evaluate("document.getElementById('go').click()")
            seen: list[float] = []
            with anyio.fail_after(30):
                while not await page.evaluate("!!document.getElementById('video')"):
                    seen.append(await page.evaluate("document.getElementById('bar').value"))
                    await anyio.sleep(0.05)
            href = await page.evaluate("document.getElementById('video').href")
            shot = tmp_path / "page.png"
            await page.screenshot(shot)
    moving = sorted({v for v in seen if 0 < v < 100})
    assert len(moving) >= 2, seen  # the bar filled in steps while the clip was made
    assert href.startswith(emu.url)
    assert href.split("?")[0].endswith(".mp4")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 5000
