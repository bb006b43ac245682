"""``kling-async batch``: the main job, its journal and its closing summary."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import anyio

from ._cli import (
    CommandError,
    Session,
    format_credits,
    open_session,
    request_defaults,
    resume_command,
)
from ._cli_display import Tally, make_display
from ._events import Item
from ._journal import Journal, JournalEntry, JournalMismatchError
from ._pricing import PRICES_SOURCE
from ._prompts import load_requests

JOURNAL_NAME = ".kling-journal.sqlite3"
EMULATOR_JOURNAL_NAME = ".kling-journal-emulator.sqlite3"


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _describe(entries: list[JournalEntry]) -> str:
    shown = [f"#{e.index + 1} " + (e.task_id or f"(unsettled, key {e.idempotency_key})")
             for e in entries[:3]]
    return ", ".join(shown) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def open_journal(out: Path, session: Session, args: argparse.Namespace) -> Journal:
    """The batch journal in ``out``, checked against what the command was asked to do."""
    path = out / (EMULATOR_JOURNAL_NAME if session.emulated else JOURNAL_NAME)
    try:
        if session.emulated:
            _remove(path)  # the embedded Emulator's tasks die with it
        elif args.fresh and path.exists():
            old = Journal(path)
            unfinished = old.unfinished()
            old.close()
            if unfinished and not args.abandon_unfinished:
                raise CommandError(
                    f"--fresh would forget {len(unfinished)} paid task(s) of the last run "
                    f"that have not finished ({_describe(unfinished)}). Run without --fresh "
                    "to follow them to the end (nothing is paid again), or add "
                    "--abandon-unfinished to start over anyway (they keep running, paid).")
            _remove(path)
        journal = Journal(path)
    except (OSError, sqlite3.Error) as exc:
        raise CommandError(f"cannot keep the journal in {out}: {exc}") from exc
    recorded = journal.meta("base_url")
    if recorded is not None and recorded != session.base_url:
        journal.close()
        raise CommandError(f"{out} holds a batch run on {recorded}, not {session.base_url}: "
                           f"set EVOLINK_BASE_URL={recorded} to resume it, or use another "
                           "--out")
    journal.set_meta("base_url", session.base_url)
    if args.retry_failed:
        retried = journal.forget_failures()
        print(f"Retrying {len(retried)} failed item(s) with new submissions.", flush=True)
    return journal


def prepare_batch(args: argparse.Namespace) -> None:
    """Check the paths and every line of the prompts file before anything starts."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file; give a folder for the clips and the "
                           "journal")
    args.requests = load_requests(Path(args.prompts), request_defaults(args))


async def run_batch_command(args: argparse.Namespace) -> int:
    """``kling-async batch``: every line checked, then submitted, followed and downloaded."""
    out, requests = Path(args.out), args.requests
    async with open_session("batch", args.concurrency, args.redis) as session:
        journal = await anyio.to_thread.run_sync(open_journal, out, session, args)
        display = make_display([(i.request.prompt, i.key) for i in requests])
        try:
            started = anyio.current_time()
            with display:
                async with session.client.generate_many(
                        requests, download_to=out, journal=journal,
                        max_credits=args.max_credits) as events:
                    async for event in events:
                        display.event(event)
        except JournalMismatchError as exc:
            raise CommandError(
                f"{out} holds the journal of a different batch (item {exc.index + 1} is "
                "not the same request): run with --fresh to start over, or use another "
                "--out") from None
        finally:
            journal.close()
        elapsed = anyio.current_time() - started
    summarize(display.tally, elapsed, out, args)
    return 1 if display.tally.failed else 0


def print_estimate(items: list[Item]) -> None:
    """``--estimate``: each item's credits at the published prices, and the total."""
    total, unknown = 0.0, 0
    print(f"{'item':>5}  {'model':<30} {'quality':<7} {'seconds':>7} {'credits':>9}")
    for number, item in enumerate(items, start=1):
        request = item.request
        credits = request.estimated_credits
        seconds = getattr(request, "duration", getattr(request, "video_seconds", None))
        shown = f"{credits:9.4g}" if credits is not None else "  unknown"
        print(f"{number:>5}  {request.model:<30} {request.quality:<7} "
              f"{seconds if seconds is not None else '?':>7} {shown}")
        total += credits or 0.0
        unknown += credits is None
    print(f"total: {format_credits(total)} credits for {len(items)} item(s)"
          + (f", {unknown} without a published price" if unknown else "")
          + f" ({PRICES_SOURCE}); nothing was sent")


def summarize(tally: Tally, elapsed: float, out: Path, args: argparse.Namespace) -> None:
    """The closing lines: counts, credits, reasons, and what to do about failures."""
    failed = sum(tally.failed.values())
    print(f"\n{tally.succeeded} succeeded, {failed} failed of {tally.total} in {elapsed:.1f} "
          f"s; {format_credits(tally.reserved)} credits reserved, "
          f"{format_credits(tally.credits)} used. Clips in {out}/")
    for reason, count in tally.failed.most_common():
        advice = " (worth retrying)" if reason in tally.retryable else ""
        print(f"  {count} x {reason}{advice}")
    if tally.retryable:
        print("Submit only the failed items again with:\n  "
              f"{resume_command(args.argv)} --retry-failed")
