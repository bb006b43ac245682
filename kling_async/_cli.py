"""The ``kling-async`` command: batch, generate, download, status, credits, emulator."""

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

from ._client import DEFAULT_BASE_URL, Client
from ._download import safe_name
from ._errors import KlingError
from ._http import check_base_url
from ._ids import check_task_id
from ._models import TaskStatus
from ._pricing import PER_SECOND
from ._prompts import PromptFileError, build_request
from ._redis_budget import RedisBudget
from ._version import package_version

EMULATOR_SCALE = 100.0  # the embedded Emulator runs a 300 s clip in 3 s
KEYLESS_COMMANDS = ("batch", "generate")  # the only ones that may use a throwaway Emulator


class CommandError(ValueError):
    """Input the command cannot use: one line on standard error, exit status 2."""


class Session:
    """Where the command sends its requests: the real API, or an embedded Emulator."""

    def __init__(self, client: Client, base_url: str, emulated: bool) -> None:
        self.client = client
        self.base_url = base_url
        self.emulated = emulated


@asynccontextmanager
async def open_session(command: str, concurrency: int | None = None,
                       redis: str | None = None) -> AsyncIterator[Session]:
    """A Client on ``$EVOLINK_API_KEY``; for ``batch``/``generate`` without a key, one on
    an in-process Emulator (said on the first line). ``KLING_ASYNC_TIME_SCALE`` makes the
    Client poll at an external Emulator's speed; ``redis`` shares the account's budget."""
    key, base = os.environ.get("EVOLINK_API_KEY"), os.environ.get("EVOLINK_BASE_URL")
    budget = shared_budget(redis)
    if key:
        base_url = check_base_url(base or DEFAULT_BASE_URL)
        async with Client(max_in_flight=concurrency, budget=budget) as client:
            yield Session(client, base_url, emulated=False)
        return
    if base:
        raise CommandError("EVOLINK_BASE_URL is set but EVOLINK_API_KEY is not: set both "
                           "(`kling-async emulator` prints the lines to use)")
    if command not in KEYLESS_COMMANDS:
        raise CommandError(f"`kling-async {command}` needs EVOLINK_API_KEY (and "
                           "EVOLINK_BASE_URL for an Emulator you started): without them "
                           "there is only a fresh, empty Emulator to ask")
    from .testing import Emulator

    async with Emulator(time_scale=EMULATOR_SCALE) as emulator:
        print(f"No EVOLINK_API_KEY set: using the built-in Emulator at {emulator.url} "
              "(nothing is spent; set EVOLINK_API_KEY to generate real clips).", flush=True)
        async with emulator.client(max_in_flight=concurrency, budget=budget) as client:
            yield Session(client, emulator.url, emulated=True)


def shared_budget(url: str | None) -> RedisBudget | None:
    """The budget of ``--redis`` (or ``$KLING_ASYNC_REDIS_URL``), checked."""
    if not url:
        return None
    try:
        return RedisBudget(url)
    except (ValueError, ImportError) as exc:
        raise CommandError(f"--redis: {exc}") from exc


def request_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """Fields given on the command line, applied to every request."""
    fields: dict[str, Any] = {"duration": args.duration, "quality": args.quality,
                              "sound": args.sound}
    for name in ("aspect_ratio", "model", "image"):
        if getattr(args, name):
            fields[name] = getattr(args, name)
    return fields


def format_credits(value: float) -> str:
    """Credits as a plain decimal (``1000000``, ``27.5``), never ``1e+06``."""
    return f"{value:,.4f}".rstrip("0").rstrip(".")


def follow_up(task_id: str) -> str:
    """The commands that follow and fetch a task from another shell."""
    return (f"  kling-async status {task_id}\n"
            f"  kling-async download {task_id} -o {safe_name(task_id)}.mp4")


async def run_generate_command(args: argparse.Namespace) -> int:
    """``kling-async generate``: one clip, with its progress."""
    from ._cli_display import GenerateProgress

    request = build_request({"prompt": args.prompt}, request_defaults(args))
    async with open_session("generate", redis=args.redis) as session:
        client = session.client
        snapshot = await client.submit(request)
        args.task_id = snapshot.id  # for the Ctrl-C message
        print(f"submitted {snapshot.id}", flush=True)
        with GenerateProgress() as progress:
            async with client.watch([snapshot.id]) as updates:
                async for update in updates:
                    progress.show(update.status.value, update.progress)
        done = await client.wait_finished(snapshot.id)
        path = await client.download(done, args.output)
        print(f"saved {path}")
    return 0


async def run_download_command(args: argparse.Namespace) -> int:
    """``kling-async download``: the result of finished tasks."""
    ids = [check_task_id(t) for t in args.task_ids]
    single = len(ids) == 1 and args.output is not None and not args.output_is_folder
    folder = Path(args.output or ".")
    unfinished = 0
    async with open_session("download") as session:
        for task_id in ids:
            snap = await session.client.get(task_id)
            if snap.status is not TaskStatus.COMPLETED:
                reason = f"{snap.error.code}: {snap.error.message}" if snap.error else (
                    f"{snap.status.value} {snap.progress}%, nothing to download yet")
                print(f"{task_id}: {reason}", file=sys.stderr)
                unfinished += 1
                continue
            target = Path(args.output) if single else folder / f"{safe_name(task_id)}.mp4"
            print(f"saved {await session.client.download(snap, target)}", flush=True)
    return 1 if unfinished else 0


async def run_status_command(args: argparse.Namespace) -> int:
    """``kling-async status``: read tasks once."""
    ids = [check_task_id(t) for t in args.task_ids]
    async with open_session("status") as session:
        for task_id in ids:
            snap = await session.client.get(task_id)
            detail = snap.video_url or (f"{snap.error.code}: {snap.error.message}"
                                        if snap.error else "")
            print(f"{snap.id}  {snap.status.value:<10} {snap.progress:>3}%  {detail}")
    return 0


async def run_credits_command(args: argparse.Namespace) -> int:
    """``kling-async credits``: the key's balance."""
    async with open_session("credits") as session:
        credits = await session.client.credits()
        print(f"remaining {format_credits(credits.remaining)} credits, "
              f"used {format_credits(credits.used)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="kling-async", description="Generate Kling videos through EvoLink. Without "
        "EVOLINK_API_KEY, batch and generate run against a built-in Emulator.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"kling-async {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    def request_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--duration", type=int, default=5, help="seconds, 3-15")
        sub.add_argument("--quality", default="720p", choices=["720p", "1080p", "4k"])
        sub.add_argument("--aspect-ratio", choices=["16:9", "9:16", "1:1"], default=None,
                         help="the server's default when not given")
        sub.add_argument("--sound", action="store_true", help="generate sound effects")
        sub.add_argument("--model", choices=sorted(PER_SECOND), default=None,
                         help="the Kling model (default: kling-v3-text-to-video, or "
                         "kling-v3-image-to-video with --image)")
        sub.add_argument("--image", metavar="PATH|URL", default=None,
                         help="a first frame (a local file is uploaded) for image-to-video, "
                         "or the character of a motion control")
        sub.add_argument("--redis", metavar="URL", default=os.environ.get("KLING_ASYNC_REDIS_URL"),
                         help="share the account's slots and request budget with every "
                         "process using this Redis (default: $KLING_ASYNC_REDIS_URL)")

    batch = command("batch", "generate a file of prompts, resumably")
    batch.add_argument("prompts", help="a text file (one prompt a line), a JSONL file (one "
                       "request object a line) or a CSV file with a header row")
    batch.add_argument("--out", required=True, help="folder for the clips and the journal")
    batch.add_argument("--concurrency", type=int, default=None,
                       help="tasks in flight at once (default: found from the server)")
    batch.add_argument("--fresh", action="store_true",
                       help="start over, ignoring the folder's journal")
    batch.add_argument("--abandon-unfinished", action="store_true",
                       help="with --fresh: forget paid tasks that have not finished")
    batch.add_argument("--max-credits", type=float, default=None, metavar="N",
                       help="refuse the batch if its estimate at published prices passes N "
                       "credits, and stop submitting before the credits reserved would")
    batch.add_argument("--estimate", action="store_true",
                       help="print each item's estimated credits and the total; send nothing")
    batch.add_argument("--retry-failed", action="store_true",
                       help="submit the items that failed in an earlier run again")
    request_options(batch)
    generate = command("generate", "generate one clip")
    generate.add_argument("prompt")
    generate.add_argument("-o", "--output", required=True, help="where to save the clip")
    request_options(generate)
    download = command("download", "download the result of finished tasks")
    download.add_argument("task_ids", nargs="+")
    download.add_argument("-o", "--output", default=None, help="a file for one task, else "
                          "a folder (files named <task id>.mp4; default: this folder)")
    status = command("status", "show tasks")
    status.add_argument("task_ids", nargs="+")
    command("credits", "show the key's credits")
    emulator = command("emulator", "run the Emulator until Ctrl-C")
    emulator.add_argument("--port", type=int, default=0, help="0: any free port")
    emulator.add_argument("--time-scale", type=float, default=EMULATOR_SCALE,
                          help="API seconds per real second")
    return parser


def resume_command(arguments: Sequence[str]) -> str:
    """The command line that resumes a batch: never with --fresh, which pays again."""
    once = ("--fresh", "--abandon-unfinished", "--retry-failed")
    return "kling-async " + shlex.join(a for a in arguments if a not in once)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 failures, 2 bad input, 130 ^C)."""
    from ._cli_batch import prepare_batch, print_estimate, run_batch_command

    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    args.argv = arguments
    if args.command == "emulator":
        from .testing.__main__ import main as emulator_main

        emulator_main(["--port", str(args.port), "--time-scale", str(args.time_scale)])
        return 0
    commands = {"batch": run_batch_command, "generate": run_generate_command,
                "download": run_download_command, "status": run_status_command,
                "credits": run_credits_command}
    try:
        if args.command == "batch":
            prepare_batch(args)  # every line is checked before anything starts
            if args.estimate:
                print_estimate(args.requests)
                return 0
        if args.command == "download":
            args.output_is_folder = args.output is not None and Path(args.output).is_dir()
        return anyio.run(commands[args.command], args)
    except KeyboardInterrupt:
        if args.command == "batch":
            print("\nInterrupted; the journal is consistent. Resume with:\n  "
                  + resume_command(arguments), file=sys.stderr)
        elif getattr(args, "task_id", None):
            print(f"\nInterrupted; task {args.task_id} keeps running on the server (it is "
                  f"paid for). Follow it and fetch the clip with:\n{follow_up(args.task_id)}",
                  file=sys.stderr)
        return 130
    except (CommandError, PromptFileError, ValueError, TypeError) as exc:
        print(f"kling-async: {exc}", file=sys.stderr)
        return 2
    except KlingError as exc:
        print(f"kling-async: {exc}", file=sys.stderr)
        return 1


def main_exit() -> None:
    """Entry point of the installed ``kling-async`` script."""
    sys.exit(main())
