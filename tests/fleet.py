"""Several processes, one account: the Emulator in its own process and budget workers
(``tests/budget_worker.py``) started against it. Used by tests/test_budget.py and
benchmarks/shared_budget.py."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import anyio.abc


class RemoteEmulator:
    """An Emulator process: the environment that points programs at it, its counters."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.url = env["EVOLINK_BASE_URL"]

    async def statistics(self) -> dict[str, Any]:
        """``GET /_emulator/statistics``."""
        async with aiohttp.ClientSession() as session, session.get(
                f"{self.url}/_emulator/statistics") as response:
            data: dict[str, Any] = await response.json()
            return data

    async def timeline(self) -> dict[str, Any]:
        """``GET /_emulator/timeline`` (every task's creation and end, in API time)."""
        async with aiohttp.ClientSession() as session, session.get(
                f"{self.url}/_emulator/timeline") as response:
            data: dict[str, Any] = await response.json()
            return data

    def worker_env(self) -> dict[str, str]:
        """This process's environment plus the Emulator's three variables."""
        return {**os.environ, **self.env}


@asynccontextmanager
async def emulator_process(*args: str) -> AsyncIterator[RemoteEmulator]:
    """``python -m kling_async.testing ARGS`` for the block, stopped by its PID."""
    process = await anyio.open_process(
        [sys.executable, "-m", "kling_async.testing", "--seed", "1", *args])
    try:
        assert process.stdout is not None
        text = b""
        with anyio.fail_after(20):
            while text.count(b"\n") < 3:
                text += await process.stdout.receive()
        env = dict(line.split("=", 1) for line in text.decode().split("\n") if "=" in line)
        yield RemoteEmulator(env)
    finally:
        process.terminate()
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()


async def start_worker(emu: RemoteEmulator, *args: str,
                       env: Mapping[str, str] | None = None) -> anyio.abc.Process:
    """Start ``python -m tests.budget_worker ARGS`` against ``emu``."""
    return await anyio.open_process(
        [sys.executable, "-m", "tests.budget_worker", *args],
        env={**emu.worker_env(), **(env or {})}, stderr=None)


async def wait_submitted(process: anyio.abc.Process, count: int) -> bytes:
    """Read the worker's output until it has submitted ``count`` tasks."""
    assert process.stdout is not None
    seen = b""
    with anyio.fail_after(30):
        while seen.count(b"submitted") < count:
            seen += await process.stdout.receive()
    return seen


async def finish(process: anyio.abc.Process, already: bytes = b"") -> dict[str, Any]:
    """Wait for the worker to end and return its summary (its last output line)."""
    assert process.stdout is not None
    out = already
    async for chunk in process.stdout:
        out += chunk
    code = await process.wait()
    await process.aclose()
    assert code == 0, f"worker exited with {code}: {out[-2000:]!r}"
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


async def run_fleet(emu: RemoteEmulator, workers: int, *args: str,
                    tasks: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """``workers`` budget workers with the same ``args`` (each its own tag, and its own
    ``--tasks`` if ``tasks`` is given), all finished."""
    processes = []
    for n in range(workers):
        own = ["--tag", f"w{n}"] + (["--tasks", str(tasks[n])] if tasks else [])
        processes.append(await start_worker(emu, *args, *own))
    summaries: list[dict[str, Any]] = [{} for _ in processes]

    async def one(n: int) -> None:
        summaries[n] = await finish(processes[n])

    async with anyio.create_task_group() as tg:
        for n in range(workers):
            tg.start_soon(one, n)
    return summaries
