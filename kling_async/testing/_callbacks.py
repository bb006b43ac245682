"""Callback delivery: POST the task JSON when a task ends, retried at +1, +2, +4 s."""

from __future__ import annotations

import heapq
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio

from ._clock import EmulatorClock

RETRY_DELAYS = (1.0, 2.0, 4.0)  # API seconds after a failed attempt (documented)


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine (the only place the Emulator may call)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_or_private(url: str) -> bool:
    """True when ``url`` names a loopback or private address literal (refused by the API)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


class CallbackSender:
    """A schedule of callback attempts in API time, drained by the Emulator's ticker."""

    def __init__(self, clock: EmulatorClock, *, duplicates: int, delay: float) -> None:
        self._clock = clock
        self._duplicates = duplicates
        self._delay = delay
        self._due: list[tuple[float, int, int, str, bytes]] = []
        self._seq = 0
        self.sent = 0
        self.failed = 0
        self.undeliverable = 0

    def schedule(self, url: str, payload: dict[str, Any]) -> None:
        """Queue the first attempt (and any configured duplicates) for ``url``."""
        if not is_loopback_url(url):
            # Never send traffic off the machine: record it instead.
            self.undeliverable += 1
            return
        body = json.dumps(payload).encode()
        for copy in range(1 + self._duplicates):
            self._push(self._clock.now() + self._delay + copy * 0.5, 0, url, body)

    def _push(self, due: float, attempt: int, url: str, body: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due, self._seq, attempt, url, body))

    def pop_due(self) -> list[tuple[int, str, bytes]]:
        """Remove and return the attempts whose time has come."""
        now = self._clock.now()
        ready = []
        while self._due and self._due[0][0] <= now:
            _, _, attempt, url, body = heapq.heappop(self._due)
            ready.append((attempt, url, body))
        return ready

    async def deliver(self, session: aiohttp.ClientSession, attempt: int, url: str,
                      body: bytes) -> None:
        """Make one attempt; on failure schedule the next one (at most 3 retries)."""
        timeout = max(self._clock.to_real(10.0), 0.5) if self._clock.time_scale else 10.0
        try:
            with anyio.fail_after(timeout):
                async with session.post(url, data=body, headers={
                        "Content-Type": "application/json"}) as response:
                    await response.read()
                    ok = 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if ok:
            self.sent += 1
            return
        self.failed += 1
        if attempt < len(RETRY_DELAYS):
            self._push(self._clock.now() + RETRY_DELAYS[attempt], attempt + 1, url, body)
