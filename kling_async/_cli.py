"""The ``kling-async`` command: batch, generate, status, credits, emulator."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from ._client import Client
from ._config import PollPolicy
from ._errors import KlingError
from ._journal import Journal
from ._prompts import PromptFileError, load_requests
from ._request import TextToVideo

JOURNAL_NAME = ".kling-journal.sqlite3"
EMULATOR_JOURNAL_NAME = ".kling-journal-emulator.sqlite3"
EMULATOR_SCALE = 100.0  # the embedded Emulator runs a 300 s clip in 3 s


class Session:
    """Where the command sends its requests: the real API, or an embedded Emulator."""

    def __init__(self, client: Client, base_url: str, emulated: bool) -> None:
        self.client = client
        self.base_url = base_url
        self.emulated = emulated


@asynccontextmanager
async def open_session(concurrency: int | None) -> AsyncIterator[Session]:
    """A Client on ``$EVOLINK_API_KEY``, or on an in-process Emulator when it is unset."""
    if os.environ.get("EVOLINK_API_KEY"):
        base_url = os.environ.get("EVOLINK_BASE_URL") or "https://api.evolink.ai"
        scale = float(os.environ.get("KLING_ASYNC_TIME_SCALE", "1"))
        async with Client(max_in_flight=concurrency, poll=scaled_poll(scale)) as client:
            yield Session(client, base_url, emulated=False)
        return
    from .testing import Emulator

    async with Emulator(time_scale=EMULATOR_SCALE) as emulator:
        print(f"No EVOLINK_API_KEY set: using the built-in Emulator at {emulator.url} "
              "(nothing is spent; set EVOLINK_API_KEY to generate real clips).", flush=True)
        async with emulator.client(max_in_flight=concurrency) as client:
            yield Session(client, emulator.url, emulated=True)


def scaled_poll(scale: float) -> PollPolicy:
    """The poll policy for ``KLING_ASYNC_TIME_SCALE`` (an external Emulator; 1 for real)."""
    if not scale > 0:
        raise ValueError(f"KLING_ASYNC_TIME_SCALE must be > 0, got {scale!r}")
    return PollPolicy.scaled(scale)


def request_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """Fields given on the command line, applied to every request."""
    fields: dict[str, Any] = {"duration": args.duration, "quality": args.quality,
                              "sound": args.sound}
    if args.aspect_ratio:
        fields["aspect_ratio"] = args.aspect_ratio
    return fields


def open_journal(out: Path, session: Session, fresh: bool) -> Journal:
    """The batch journal in ``out``; a fresh one on the Emulator, whose tasks die with it."""
    path = out / (EMULATOR_JOURNAL_NAME if session.emulated else JOURNAL_NAME)
    if fresh or session.emulated:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    journal = Journal(path)
    recorded = journal.meta("base_url")
    if recorded is not None and recorded != session.base_url:
        journal.close()
        raise PromptFileError(f"{path} belongs to a batch on {recorded}, not "
                              f"{session.base_url}; use the same EVOLINK_BASE_URL or --fresh")
    journal.set_meta("base_url", session.base_url)
    return journal


async def run_batch_command(args: argparse.Namespace) -> int:
    """``kling-async batch``: the main job."""
    from ._cli_display import make_display

    requests: list[TextToVideo] = args.requests
    out = Path(args.out)
    async with open_session(args.concurrency) as session:
        journal = await anyio.to_thread.run_sync(open_journal, out, session, args.fresh)
        try:
            started = anyio.current_time()
            display = make_display(len(requests))
            with display:
                async with session.client.generate_many(
                        requests, download_to=out, journal=journal) as events:
                    async for event in events:
                        display.event(event)
            elapsed = anyio.current_time() - started
        finally:
            journal.close()
    tally = display.tally
    failed = sum(tally.failed.values())
    print(f"\n{tally.succeeded} succeeded, {failed} failed of {tally.total} in {elapsed:.1f} s; "
          f"{tally.credits:g} credits used. Clips in {out}/")
    for reason, count in tally.failed.most_common():
        print(f"  {count} x {reason}")
    return 1 if failed else 0


async def run_generate_command(args: argparse.Namespace) -> int:
    """``kling-async generate``: one clip, with its progress."""
    request = TextToVideo(prompt=args.prompt, **request_defaults(args))
    async with open_session(None) as session:
        client = session.client
        snapshot = await client.submit(request)
        print(f"submitted {snapshot.id}", flush=True)
        async with client.watch([snapshot.id]) as updates:
            async for update in updates:
                print(f"  {update.status.value} {update.progress}%", flush=True)
        done = await client.wait_finished(snapshot.id)
        path = await client.download(done, args.output)
        print(f"saved {path}")
    return 0


async def run_status_command(args: argparse.Namespace) -> int:
    """``kling-async status``: read tasks once."""
    async with open_session(None) as session:
        for task_id in args.task_ids:
            snap = await session.client.get(task_id)
            detail = snap.video_url or (f"{snap.error.code}: {snap.error.message}"
                                        if snap.error else "")
            print(f"{snap.id}  {snap.status.value:<10} {snap.progress:>3}%  {detail}")
    return 0


async def run_credits_command(args: argparse.Namespace) -> int:
    """``kling-async credits``: the key's balance."""
    async with open_session(None) as session:
        credits = await session.client.credits()
        print(f"remaining {credits.remaining:g} credits, used {credits.used:g}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="kling-async", description="Generate Kling videos through EvoLink. Without "
        "EVOLINK_API_KEY every command runs against the built-in Emulator.")
    commands = parser.add_subparsers(dest="command", required=True)

    def request_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--duration", type=int, default=5, help="seconds, 3-15")
        command.add_argument("--quality", default="720p", choices=["720p", "1080p", "4k"])
        command.add_argument("--aspect-ratio", choices=["16:9", "9:16", "1:1"])
        command.add_argument("--sound", action="store_true", help="generate sound effects")

    batch = commands.add_parser("batch", help="generate a file of prompts, resumably")
    batch.add_argument("prompts", help="a text file (one prompt a line) or a JSONL file")
    batch.add_argument("--out", required=True, help="folder for the clips and the journal")
    batch.add_argument("--concurrency", type=int, default=None,
                       help="tasks in flight at once (default: found from the server)")
    batch.add_argument("--fresh", action="store_true", help="ignore the folder's journal")
    request_options(batch)
    generate = commands.add_parser("generate", help="generate one clip")
    generate.add_argument("prompt")
    generate.add_argument("-o", "--output", required=True, help="where to save the clip")
    request_options(generate)
    status = commands.add_parser("status", help="show tasks")
    status.add_argument("task_ids", nargs="+")
    commands.add_parser("credits", help="show the key's credits")
    emulator = commands.add_parser("emulator", help="run the Emulator until Ctrl-C")
    emulator.add_argument("--port", type=int, default=0)
    emulator.add_argument("--time-scale", type=float, default=100.0)
    return parser


COMMANDS = {"batch": run_batch_command, "generate": run_generate_command,
            "status": run_status_command, "credits": run_credits_command}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 failures, 2 bad input, 130 ^C)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    if args.command == "emulator":
        from .testing.__main__ import main as emulator_main

        emulator_main(["--port", str(args.port), "--time-scale", str(args.time_scale)])
        return 0
    try:
        if args.command == "batch":  # every line is checked before anything starts
            args.requests = load_requests(Path(args.prompts), request_defaults(args))
        return anyio.run(COMMANDS[args.command], args)
    except KeyboardInterrupt:
        if args.command == "batch":
            print("\nInterrupted; the journal is consistent. Resume with:\n  kling-async "
                  + shlex.join(arguments), file=sys.stderr)
        return 130
    except (PromptFileError, ValueError, TypeError) as exc:
        print(f"kling-async: {exc}", file=sys.stderr)
        return 2
    except KlingError as exc:
        print(f"kling-async: {exc}", file=sys.stderr)
        return 1


def main_exit() -> None:
    """Entry point of the installed ``kling-async`` script."""
    sys.exit(main())
