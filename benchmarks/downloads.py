"""Downloads: throughput and memory of ``client.download`` against raw aiohttp streaming.

    python -m benchmarks.downloads --files 50 --size 20000000

Both download the same finished clips, 4 at a time, into a temporary folder. The raw
baseline streams 256 KiB chunks straight to disk with no checks, resume or rename.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import yarl

import kling_async as kling

from ._harness import Server, emulator_process, rss_kib, save, table
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


async def measure(files: int, size: int) -> list[dict[str, Any]]:
    rows = []
    with emulator_process("--time-scale", "1000", "--result-size", str(size)) as server:
        urls = await result_urls(server, files)
        for name in ("raw aiohttp streaming", "kling_async download"):
            with tempfile.TemporaryDirectory() as tmp:
                peak, baseline = 0, rss_kib()

                async def monitor() -> None:
                    nonlocal peak
                    while True:
                        peak = max(peak, rss_kib())
                        await asyncio.sleep(0.01)

                watcher = asyncio.ensure_future(monitor())
                started = time.monotonic()
                if name.startswith("raw"):
                    await raw(urls, Path(tmp))
                else:
                    await sdk(server, urls, Path(tmp))
                elapsed = time.monotonic() - started
                watcher.cancel()
                written = sum(p.stat().st_size for p in Path(tmp).glob("*.mp4"))  # noqa: ASYNC240
            assert written == files * size, (written, files * size)
            rows.append({"variant": name, "files": files, "mb_per_s": written / elapsed / 1e6,
                         "peak_rss_growth_mib": (peak - baseline) / 1024, "seconds": elapsed})
    for row in rows:
        row["vs_raw"] = row["mb_per_s"] / rows[0]["mb_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--size", type=int, default=20_000_000)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.files, args.size))
    print(table(rows, ["variant", "files", "mb_per_s", "vs_raw", "peak_rss_growth_mib"]))
    command = f"python -m benchmarks.downloads --files {args.files} --size {args.size}"
    print("saved", save("downloads", command, rows, size=args.size))


if __name__ == "__main__":
    main()
