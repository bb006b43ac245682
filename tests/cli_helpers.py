"""Running the kling-async command in a subprocess against an in-test Emulator."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

from kling_async.testing import Emulator

SCALE = 300.0  # a clip takes about one second


def env_for(emu: Emulator | None) -> dict[str, str]:
    """The command's environment: the Emulator's URL, key and time scale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOLINK_")}
    if emu is not None:
        env.update(EVOLINK_API_KEY=emu.api_key, EVOLINK_BASE_URL=emu.url,
                   KLING_ASYNC_TIME_SCALE=str(emu.clock.time_scale or SCALE))
    return env


async def cli(*args: str, emu: Emulator | None) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-m", "kling_async", *args],
                                       env=env_for(emu), check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def write_prompts(path: Path, n: int) -> Path:
    path.write_text("# test prompts\n\n" + "".join(f"clip number {i}\n" for i in range(n)))
    return path


async def cli_advancing(*args: str, emu: Emulator, step: float = 60.0
                        ) -> tuple[int, str, str]:
    """``cli`` while the Emulator's clock is pushed ``step`` API-seconds every 50 ms, so a
    slow Emulator finishes what the command waits for at once."""
    result: list[tuple[int, str, str]] = []
    async with anyio.create_task_group() as tg:
        async def run() -> None:
            result.append(await cli(*args, emu=emu))
            tg.cancel_scope.cancel()

        tg.start_soon(run)
        while True:
            await anyio.sleep(0.05)
            emu.advance(step)
    return result[0]
