"""Drive headless Chromium over the DevTools protocol (aiohttp websockets, no extra deps)."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=900,560"]


def chromium() -> str | None:
    """Path of Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab spoken to with DevTools protocol commands."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        await self._ws.send_json({"id": self._next, "method": method, "params": params})
        while True:
            message = await self._ws.receive_json()
            if message.get("id") == self._next:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression,
                                 returnByValue=True)
        return result.get("result", {}).get("value")

    async def screenshot(self, path: Path) -> None:
        data = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(data["data"]))


@asynccontextmanager
async def open_page(executable: str) -> AsyncIterator[Page]:
    """Start Chromium with a fresh profile and connect to its first tab.

    The browser runs in its own process group, which is killed and waited for before
    the profile is removed: its helper processes write to the profile after the main
    process has gone, so removing it any earlier fails now and then.
    """
    profile = tempfile.mkdtemp(prefix="kling-chromium-")
    try:
        process = await anyio.open_process(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            with anyio.fail_after(30):
                while not port_file.exists() or not port_file.read_text().strip():
                    await anyio.sleep(0.05)
            port = port_file.read_text().split()[0]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
                url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                async with session.ws_connect(url, max_msg_size=0) as ws:
                    page = Page(ws)
                    await page.call("Page.enable")
                    yield page
        finally:
            with anyio.CancelScope(shield=True):
                await stop_group(process)
    finally:
        await remove_profile(Path(profile))


async def stop_group(process: anyio.abc.Process) -> None:
    """Terminate the browser's whole process group, then kill what is left, and wait."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with anyio.move_on_after(grace):
            await process.wait()
            while _group_alive(process.pid):
                await anyio.sleep(0.05)
            break
    await process.aclose()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def remove_profile(profile: Path) -> None:
    """Remove the browser profile, retrying while late writers finish."""
    for _ in range(50):
        try:
            await anyio.to_thread.run_sync(shutil.rmtree, profile)
            return
        except FileNotFoundError:
            return
        except OSError:
            await anyio.sleep(0.1)
    await anyio.to_thread.run_sync(lambda: shutil.rmtree(profile, ignore_errors=True))
