"""Downloads: throughput and memory of ``client.download`` against raw aiohttp streaming.

    python -m benchmarks.downloads --files 50 --size 20000000

Both download the same finished clips, 4 at a time, into a temporary folder. The raw
baseline streams 256 KiB chunks straight to disk with no checks, resume or rename. The two
alternate for ``--rounds`` rounds (raw then SDK, then SDK then raw, ...); each round's
ratio is SDK over raw, and the table reports medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import yarl

import kling_async as kling

from ._harness import Server, cpu_seconds, emulator_process, loop_watch, save, table
from .scale import create_tasks


async def result_urls(server: Server, count: int) -> list[str]:
    ids = await create_tasks(server, count)
    urls = []
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {server.api_key}"}) as session:
        for task_id in ids:
            while True:
                async with session.get(f"{server.url}/v1/tasks/{task_id}") as response:
                    data = await response.json()
                if data["status"] == "completed":
                    urls.append(data["results"][0])
                    break
                await asyncio.sleep(0.05)
    return urls


async def raw(urls: list[str], folder: Path) -> None:
    limiter = asyncio.Semaphore(4)
    async with aiohttp.ClientSession() as session:
        async def one(n: int, url: str) -> None:
            # encoded=True: presigned links must reach the CDN byte for byte.
            async with limiter, session.get(yarl.URL(url, encoded=True)) as response:
                with open(folder / f"{n}.mp4", "wb") as out:  # noqa: ASYNC230 - how people write it
                    async for chunk in response.content.iter_chunked(256 * 1024):
                        out.write(chunk)
        await asyncio.gather(*(one(n, u) for n, u in enumerate(urls)))


async def sdk(server: Server, urls: list[str], folder: Path) -> None:
    async with kling.Client(server.api_key, base_url=server.url,
                            max_downloads=4) as client, anyio.create_task_group() as tg:
        for n, url in enumerate(urls):
            tg.start_soon(client.download, url, folder / f"{n}.mp4")


async def one_run(name: str, server: Server, urls: list[str], files: int,
                  size: int, under: str | None) -> dict[str, float]:
    """Download every URL once with ``name`` into a new folder ``under`` (None: the
    system's temporary folder); throughput and peak RSS growth."""
    with tempfile.TemporaryDirectory(dir=under) as tmp:
        async with loop_watch() as watch:
            started, cpu = time.monotonic(), cpu_seconds()
            if name.startswith("raw"):
                await raw(urls, Path(tmp))
            else:
                await sdk(server, urls, Path(tmp))
            elapsed, cpu = time.monotonic() - started, cpu_seconds() - cpu
        written = sum(p.stat().st_size for p in Path(tmp).glob("*.mp4"))  # noqa: ASYNC240
    assert written == files * size, (written, files * size)
    return {"mb_per_s": written / elapsed / 1e6, "cpu_s_per_gb": cpu / written * 1e9,
            "peak_rss_growth_mib": watch.growth_kib / 1024}


async def measure(files: int, size: int, rounds: int,
                  under: str | None = None) -> list[dict[str, Any]]:
    names = ("raw aiohttp streaming", "kling_async download")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with emulator_process("--time-scale", "1000", "--result-size", str(size)) as server:
        urls = await result_urls(server, files)
        for number in range(rounds):  # the order alternates: raw first, then SDK first
            for name in (names if number % 2 == 0 else names[::-1]):
                runs[name].append(await one_run(name, server, urls, files, size, under))
    ratios = [s["mb_per_s"] / r["mb_per_s"] for r, s in zip(*runs.values(), strict=True)]
    rows = []
    for name in names:
        speeds = [run["mb_per_s"] for run in runs[name]]
        rows.append({"variant": name, "files": files, "rounds": rounds,
                     "mb_per_s": statistics.median(speeds), "runs_mb_per_s": speeds,
                     "cpu_s_per_gb": statistics.median(r["cpu_s_per_gb"] for r in runs[name]),
                     "peak_rss_growth_mib": max(r["peak_rss_growth_mib"] for r in runs[name]),
                     "vs_raw": 1.0 if name.startswith("raw") else statistics.median(ratios)})
    rows[1]["round_ratios"] = ratios
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--size", type=int, default=20_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", help="download into this folder (e.g. /dev/shm, so the "
                        "disk's writeback does not decide the ratio)")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.files, args.size, args.rounds, args.dir))
    print(table(rows, ["variant", "files", "rounds", "mb_per_s", "vs_raw", "cpu_s_per_gb",
                       "peak_rss_growth_mib"]))
    print("SDK / raw per round:", ", ".join(f"{r:.2f}" for r in rows[1]["round_ratios"]))
    command = (f"python -m benchmarks.downloads --files {args.files} --size {args.size} "
               f"--rounds {args.rounds}" + (f" --dir {args.dir}" if args.dir else ""))
    print("saved", save("downloads", command, rows, size=args.size))


if __name__ == "__main__":
    main()
