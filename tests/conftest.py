"""Shared fixtures: a stepped-clock Emulator on loopback and a Client tuned for tests."""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import kling_async as kling
from kling_async.testing import Emulator

from .redis_server import RedisServer, redis_server

# A test run started as a background job ignores SIGINT, and so would every command it
# starts: the Ctrl-C tests would then wait for a command that cannot hear them. Children
# of a process with a handler start with the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Reads every 20-200 ms of real time; retries back off in milliseconds.
FAST_POLL = kling.PollPolicy(min_interval=0.02, max_interval=0.2, jitter=0.1)
FAST_RETRY = kling.RetryPolicy(max_attempts=4, backoff_base=0.005, backoff_max=0.02,
                               retry_after_max=0.5)


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every async test the stray-task check, set up first and torn down last."""
    for item in items:
        function = getattr(item, "function", None)
        if inspect.iscoroutinefunction(function) and isinstance(item, pytest.Function):
            item.fixturenames.insert(0, "no_stray_tasks")


@pytest.fixture
async def no_stray_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running on the loop after its fixtures closed."""
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    stray = [t for t in asyncio.all_tasks()
             if t is not current and not t.done()
             and not t.get_coro().__qualname__.startswith("TestRunner.")]  # anyio's own
    assert not stray, f"stray tasks left running: {stray}"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An Emulator whose clock moves only when a test calls ``advance``."""
    async with Emulator(time_scale=0, seed=7) as emu:
        yield emu


def make_client(emu: Emulator, **overrides: Any) -> kling.Client:
    """A Client for ``emu`` with fast polls and retries (override anything)."""
    options: dict[str, Any] = {"poll": FAST_POLL, "retry": FAST_RETRY,
                               "max_requests_per_second": None, "seed": 3}
    return emu.client(**{**options, **overrides})


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[kling.Client]:
    """An open Client talking to the ``emulator`` fixture."""
    async with make_client(emulator) as opened:
        yield opened


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A fresh redis-server for the test (skipped where Redis is not installed)."""
    with redis_server() as server:
        yield server
