"""A plain ``asyncio.run`` script: generate a few clips and save them.

    python examples/script.py

Without ``EVOLINK_API_KEY`` it runs against the built-in Emulator.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack

import kling_async as kling

PROMPTS = ["A red fox trotting through fresh snow", "A tram climbing a foggy street"]


async def main() -> None:
    async with AsyncExitStack() as stack:
        options: dict[str, object] = {}
        if not os.environ.get("EVOLINK_API_KEY"):
            from kling_async.testing import Emulator

            emulator = await stack.enter_async_context(Emulator(time_scale=100))
            options = {"api_key": emulator.api_key, "base_url": emulator.url,
                       "poll": kling.PollPolicy(min_interval=0.05, max_interval=0.6,
                                                time_scale=100)}
        client = await stack.enter_async_context(kling.Client(**options))  # type: ignore[arg-type]
        requests = [kling.TextToVideo(prompt=p, duration=5) for p in PROMPTS]
        async with client.generate_many(requests, download_to="clips") as events:
            async for event in events:
                match event:
                    case kling.Succeeded(index=i, path=path):
                        print(f"{PROMPTS[i]!r} -> {path}")
                    case kling.Failed(index=i, error=error):
                        print(f"{PROMPTS[i]!r} failed: {error}")


if __name__ == "__main__":
    asyncio.run(main())
