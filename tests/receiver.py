"""A tiny callback receiver on loopback, for tests of callback delivery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from aiohttp import web


class Receiver:
    """Records every POSTed JSON body; answers 500 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.url = ""
        self.on_body: Callable[[dict[str, Any]], None] | None = None
        self.arrived = anyio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=500)
        body = json.loads(await request.read())
        self.bodies.append(body)
        if self.on_body is not None:
            self.on_body(body)
        self.arrived.set()
        return web.Response(status=204)


@asynccontextmanager
async def run_receiver(fail_first: int = 0) -> AsyncIterator[Receiver]:
    """Serve a :class:`Receiver` on 127.0.0.1 until the block ends."""
    receiver = Receiver(fail_first)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()
