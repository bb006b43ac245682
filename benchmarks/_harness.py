"""Shared benchmark plumbing: an Emulator in its own process, timings, results files."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiohttp
import attrs

RESULTS = Path(__file__).parent / "results"


@attrs.frozen
class Server:
    """A running Emulator process."""

    url: str
    api_key: str

    async def stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """The Emulator's timeline (clock and task ends)."""
        async with session.get(f"{self.url}/_emulator/timeline") as response:
            data: dict[str, Any] = await response.json()
            return data


@contextmanager
def emulator_process(*args: str) -> Iterator[Server]:
    """Start ``python -m kling_async.testing`` with ``args`` in its own process."""
    command = [sys.executable, "-m", "kling_async.testing", "--seed", "1", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip().split("=", 1)[1]
            key = process.stdout.readline().strip().split("=", 1)[1]
            yield Server(url, key)
        finally:
            process.terminate()
            process.wait(timeout=10)


def api_time(monotonic: float, timeline: dict[str, Any]) -> float:
    """Turn this process's ``time.monotonic()`` into the Emulator's API time."""
    return (monotonic - float(timeline["monotonic_start"])) * float(timeline["time_scale"])


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` percentile (0-1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class LoopWatch:
    """While it runs: the event loop's lag (how late a 10 ms sleep wakes up), this
    process's peak resident memory, from a baseline taken after a full collection, and
    how long each full (oldest-generation) garbage collection took."""

    def __init__(self) -> None:
        gc.collect()
        self.baseline = self.peak = rss_kib()
        self.lags: list[float] = []
        self.full_collections: list[float] = []  # seconds each
        self._collecting = 0.0

    def on_collection(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` hook: times collections of the oldest generation."""
        if info["generation"] != 2:
            return
        if phase == "start":
            self._collecting = time.perf_counter()
        else:
            self.full_collections.append(time.perf_counter() - self._collecting)

    @property
    def growth_kib(self) -> int:
        """Peak RSS over the baseline."""
        return self.peak - self.baseline

    async def run(self) -> None:
        """Tick every 10 ms until cancelled."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - started - 0.01)
            self.peak = max(self.peak, rss_kib())


@asynccontextmanager
async def loop_watch() -> AsyncIterator[LoopWatch]:
    """A :class:`LoopWatch` running beside the block."""
    watch = LoopWatch()
    ticker = asyncio.ensure_future(watch.run())
    gc.callbacks.append(watch.on_collection)
    try:
        yield watch
    finally:
        gc.callbacks.remove(watch.on_collection)
        ticker.cancel()


def rss_kib() -> int:
    """This process's resident set size now, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds() -> float:
    """User plus system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict[str, Any]:
    """Facts about the machine and versions, recorded with every result."""
    packages: dict[str, str | None] = {}
    for name in ("kling-async", "aiohttp", "anyio", "attrs", "cattrs", "httpx"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "packages": packages}


def save(name: str, command: str, rows: list[dict[str, Any]], **extra: Any) -> Path:
    """Write ``results/<name>.json`` and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "command": command, "when": time.strftime("%Y-%m-%d"),
               "machine": machine(), "rows": rows, **extra}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table of ``rows``."""
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)
