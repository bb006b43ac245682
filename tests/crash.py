"""Crash and resume: a CLI batch SIGKILLed at random moments, then finished.

Used by the test suite (30 prompts, 5 kills) and on demand:
``python -m tests.crash --prompts 100 --kills 5``.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from kling_async.testing import Emulator

from .cli_helpers import SCALE, cli, env_for, write_prompts


async def kill_and_resume(tmp_path: Path, prompts_count: int, kills: int,
                          seed: int) -> tuple[Any, list[Path], int]:
    """Run a CLI batch, SIGKILL it ``kills`` times at random moments, then finish it.

    Each run is killed once it has shown some work (a submission or a finished clip) and
    a random extra moment has passed, so every kill lands mid-batch.
    """
    rng = random.Random(seed)
    prompts = write_prompts(tmp_path / "prompts.txt", prompts_count)
    out = tmp_path / "clips"
    args = [sys.executable, "-m", "kling_async", "batch", str(prompts), "--out", str(out)]
    # Slower than the other CLI tests (a clip takes 5 s), so every kill lands mid-batch.
    async with Emulator(time_scale=SCALE / 5, seed=seed, result_size=200_000) as emu:
        for _ in range(kills):
            process = await anyio.open_process(args, env=env_for(emu))
            assert process.stdout is not None
            with anyio.fail_after(30):
                async for chunk in process.stdout:
                    if any(m in chunk for m in (b"submitted as", b"re-attached", b"done:")):
                        break
            await anyio.sleep(rng.uniform(0.0, 0.6))
            assert process.returncode is None, "the batch ended before it could be killed"
            process.send_signal(signal.SIGKILL)
            await process.wait()
            await process.aclose()
        code, _, err = await cli("batch", str(prompts), "--out", str(out), emu=emu)
        assert code == 0, err
        return emu.statistics(), list(out.glob("*.mp4")), len(list(out.glob(".*.part")))


def main() -> None:
    parser = argparse.ArgumentParser(description="Kill a CLI batch repeatedly, then finish it.")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    async def run() -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            stats, files, partials = await kill_and_resume(Path(tmp), args.prompts,
                                                           args.kills, args.seed)
            complete = sum(f.stat().st_size == 200_000 for f in files)
            print(f"prompts {args.prompts}, kills {args.kills}: tasks created "
                  f"{stats.tasks_created}, duplicate paid submissions {stats.duplicate_bodies},"
                  f" files {len(files)} ({complete} complete), partial files left {partials}, "
                  f"file bytes sent {stats.file_bytes_sent} for "
                  f"{args.prompts * 200_000} needed")

    anyio.run(run)


if __name__ == "__main__":
    main()
