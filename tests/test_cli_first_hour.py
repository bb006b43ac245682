"""The command as a new user meets it: safe reruns, clear errors, follow-up commands."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

import kling_async as kling
from kling_async.testing import Emulator

from .cli_helpers import SCALE, cli, cli_advancing, env_for, write_prompts


async def start_batch_and_kill(args: list[str], emu: Emulator, *, how: int,
                               after: bytes = b"submitted as") -> tuple[int, str]:
    """Run the command until it prints ``after``, send ``how``; return (code, stderr)."""
    command = [sys.executable, "-m", "kling_async", *args]
    process = await anyio.open_process(command, env=env_for(emu))
    assert process.stdout is not None
    assert process.stderr is not None
    with anyio.fail_after(30):
        async for chunk in process.stdout:
            if after in chunk:
                break
        process.send_signal(how)
        code = await process.wait()
        err = b"".join([chunk async for chunk in process.stderr]).decode()
    await process.aclose()
    return code, err


def no_traceback(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


# -- money: --fresh and the resume hint ----------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_the_resume_hint_never_carries_fresh(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", 6)
    args = ["batch", str(prompts), "--out", str(tmp_path / "c"), "--fresh", "--concurrency",
            "2"]
    async with Emulator(time_scale=SCALE / 10) as emu:
        code, err = await start_batch_and_kill(args, emu, how=signal.SIGINT)
    assert code == 130
    hint = err.split("Resume with:")[1].strip()
    assert hint.startswith("kling-async batch")
    assert "--fresh" not in hint


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_fresh_refuses_to_forget_unfinished_paid_tasks(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", 4)
    out = tmp_path / "c"
    batch = ["batch", str(prompts), "--out", str(out)]
    async with Emulator(time_scale=SCALE / 10) as emu:
        await start_batch_and_kill(batch, emu, how=signal.SIGKILL)
        created = emu.statistics().tasks_created
        assert created >= 1
        code, _, err = await cli(*batch, "--fresh", emu=emu)
        assert code == 2
        no_traceback(err)
        assert "--abandon-unfinished" in err
        assert "paid task" in err
        assert emu.statistics().tasks_created == created  # nothing paid again
        code, out_text, err = await cli_advancing(*batch, emu=emu)  # the safe way: resume
        assert code == 0, err
        assert emu.statistics().tasks_created == 4
        assert "re-attached" in out_text or "done:" in out_text
        code, _, err = await cli_advancing(*batch, "--fresh", emu=emu)  # all finished: fine
        assert code == 0, err
        assert emu.statistics().tasks_created == 8


async def test_retry_failed_submits_only_the_failures(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", 4)
    batch = ["batch", str(prompts), "--out", str(tmp_path / "c")]
    async with Emulator(time_scale=SCALE) as emu:
        emu.fail_next_tasks("service_error", 2)
        code, out, _ = await cli(*batch, emu=emu)
        assert code == 1
        assert "2 x service_error (worth retrying)" in out
        assert "--retry-failed" in out
        code, out, _ = await cli(*batch, emu=emu)  # a plain rerun pays nothing
        assert code == 1
        assert emu.statistics().tasks_created == 4
        code, out, err = await cli(*batch, "--retry-failed", emu=emu)
        assert code == 0, err
        assert "Retrying 2 failed item(s)" in out
        assert "4 succeeded, 0 failed of 4" in out
        assert emu.statistics().tasks_created == 6
        assert emu.statistics().duplicate_bodies == 2  # the two retried prompts, on purpose


# -- errors on bad input: one line, exit 2 -------------------------------------------------

async def test_bad_paths_get_one_line_and_exit_2(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", 1)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    cases = {
        "no such file": ["batch", str(tmp_path / "missing.txt"), "--out", str(tmp_path)],
        "is a folder": ["batch", str(tmp_path), "--out", str(tmp_path / "c")],
        "not UTF-8": ["batch", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "c")],
        "is a file; give a folder": ["batch", str(prompts), "--out", str(a_file)],
    }
    async with Emulator(time_scale=SCALE) as emu:
        for expected, args in cases.items():
            code, _, err = await cli(*args, emu=emu)
            assert code == 2, (expected, err)
            assert expected in err
            no_traceback(err)
        assert sum(emu.statistics().requests.values()) == 0


async def test_a_base_url_ending_in_v1_gets_a_hint(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", 1)
    env = {**env_for(None), "EVOLINK_API_KEY": "sk-any-0000000000000000",
           "EVOLINK_BASE_URL": "http://127.0.0.1:9/v1"}
    done = await anyio.run_process(
        [sys.executable, "-m", "kling_async", "batch", str(prompts), "--out",
         str(tmp_path / "c")], env=env, check=False)
    err = done.stderr.decode()
    assert done.returncode == 2
    assert "must not end in /v1" in err
    assert "'http://127.0.0.1:9'" in err
    no_traceback(err)


@pytest.mark.parametrize("args", [["status", "task-unified-1-abc"], ["credits"],
                                  ["download", "task-unified-1-abc"]])
async def test_commands_without_a_key_say_what_to_set(args: list[str]) -> None:
    code, _, err = await cli(*args, emu=None)
    assert code == 2
    assert "needs EVOLINK_API_KEY" in err
    no_traceback(err)
    env = {**env_for(None), "EVOLINK_BASE_URL": "http://127.0.0.1:9"}
    done = await anyio.run_process([sys.executable, "-m", "kling_async", *args], env=env,
                                   check=False)
    assert done.returncode == 2
    assert "EVOLINK_API_KEY is not" in done.stderr.decode()


# -- follow-up commands --------------------------------------------------------------------

async def test_download_fetches_finished_tasks(tmp_path: Path) -> None:
    async with Emulator(time_scale=0) as emu:
        async with emu.client() as client:
            done = [await client.submit(kling.TextToVideo(prompt=f"p{i}")) for i in range(3)]
            running = await client.submit(kling.TextToVideo(prompt="still running"))
            for snap in done:
                emu.finish_task(snap.id)
        code, _, err = await cli("download", done[0].id, "-o", str(tmp_path / "one.mp4"),
                                   emu=emu)
        assert code == 0, err
        assert (tmp_path / "one.mp4").read_bytes() == emu.result_file(done[0].id)
        folder = tmp_path / "many"
        folder.mkdir()
        code, _, err = await cli("download", *(s.id for s in done), running.id, "-o",
                                   str(folder), emu=emu)
        assert code == 1  # one was not finished
        assert f"{running.id}: pending" in err
        for snap in done:
            assert (folder / f"{snap.id}.mp4").read_bytes() == emu.result_file(snap.id)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_ctrl_c_during_generate_prints_the_follow_up(tmp_path: Path) -> None:
    async with Emulator(time_scale=SCALE / 10) as emu:
        code, err = await start_batch_and_kill(
            ["generate", "a cat", "-o", str(tmp_path / "cat.mp4")], emu, how=signal.SIGINT,
            after=b"submitted")
        task_id = next(iter(emu.world.tasks))
    assert code == 130
    assert f"kling-async download {task_id}" in err
    assert f"kling-async status {task_id}" in err


async def test_version_and_help_show_what_they_should() -> None:
    code, out, _ = await cli("--version", emu=None)
    assert code == 0
    assert out.strip() == f"kling-async {kling.__version__}"
    for command in ("batch", "generate", "download", "status", "credits", "emulator"):
        code, out, _ = await cli(command, "--help", emu=None)
        assert code == 0
        if command in ("batch", "generate", "emulator"):
            assert "(default:" in out, command


# -- input files ---------------------------------------------------------------------------

async def test_csv_rows_are_requests(tmp_path: Path) -> None:
    table = tmp_path / "shots.csv"
    table.write_text("prompt,duration,sound,aspect_ratio\n"
                     "a fox in snow,8,yes,9:16\n"
                     '"a tram, in fog",,no,\n'
                     ",,,\n")
    async with Emulator(time_scale=SCALE) as emu:
        code, out, err = await cli("batch", str(table), "--out", str(tmp_path / "c"), emu=emu)
        received = list(emu.received)
    assert code == 0, err
    assert "2 succeeded, 0 failed of 2" in out
    assert [b["prompt"] for b in received] == ["a fox in snow", "a tram, in fog"]
    assert [b["duration"] for b in received] == [8, 5]
    assert [b["sound"] for b in received] == ["on", "off"]
    assert received[0]["aspect_ratio"] == "9:16"
    assert "aspect_ratio" not in received[1]


async def test_bad_csv_files_are_refused_before_sending(tmp_path: Path) -> None:
    cases = {"unknown: 'colour'": "prompt,colour\na cat,red\n",
             "'prompt' column": "text,duration\na cat,5\n",
             "duration must be an integer": "prompt,duration\na cat,five\n"}
    async with Emulator(time_scale=SCALE) as emu:
        for expected, text in cases.items():
            table = tmp_path / "bad.csv"
            table.write_text(text)
            code, _, err = await cli("batch", str(table), "--out", str(tmp_path / "c"),
                                     emu=emu)
            assert code == 2, err
            assert expected in err
        assert sum(emu.statistics().requests.values()) == 0


# -- what the command shows ----------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_a_resumed_batch_shows_re_attached_tasks_with_their_progress(
        tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.txt", 3)
    batch = ["batch", str(prompts), "--out", str(tmp_path / "c"), "--concurrency", "3"]
    async with Emulator(time_scale=SCALE / 10) as emu:
        await start_batch_and_kill(batch, emu, how=signal.SIGKILL)
        emu.advance(150)  # the tasks move on while no client watches
        code, out, err = await cli_advancing(*batch, emu=emu, step=10)
    assert code == 0, err
    attached = [line for line in out.splitlines() if "re-attached" in line]
    assert attached
    assert all("paid in an earlier run" in line for line in attached)
    assert any(" 0%" not in line for line in attached)  # real progress, not a fresh 0 %
    assert "'clip number" in out  # a prompt excerpt per row


async def test_credits_print_plain_decimals() -> None:
    async with Emulator(time_scale=SCALE, balance=1_000_000) as emu:
        code, out, _ = await cli("credits", emu=emu)
    assert code == 0
    assert "remaining 1,000,000 credits" in out
    assert "e+" not in out


async def test_the_emulator_command_prints_what_makes_clients_fast(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kling_async", "emulator", "--time-scale", "300"]
    process = await anyio.open_process(command)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        with anyio.fail_after(20):
            buffer = b""
            async for chunk in process.stdout:
                buffer += chunk
                if buffer.count(b"\n") >= 3:
                    break
        lines = buffer.decode().splitlines()[:3]
        env = dict(line.split("=", 1) for line in lines)
        assert set(env) == {"EVOLINK_BASE_URL", "EVOLINK_API_KEY", "KLING_ASYNC_TIME_SCALE"}
        prompts = write_prompts(tmp_path / "p.txt", 4)
        started = anyio.current_time()
        done = await anyio.run_process(
            [sys.executable, "-m", "kling_async", "batch", str(prompts), "--out",
             str(tmp_path / "c")], env={**os.environ, **env}, check=False)
        assert done.returncode == 0, done.stderr.decode()
        assert anyio.current_time() - started < 20  # 300 s clips at 300x, polled to match
    finally:
        process.terminate()
        await process.wait()
        await process.aclose()


async def test_row_ids_reach_the_result_lines(tmp_path: Path) -> None:
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text('{"id": "sku-1", "prompt": "a red kite"}\n'
                     '{"id": "sku-2", "prompt": "a blue kite", "duration": 6}\n')
    table = tmp_path / "r.csv"
    table.write_text("id,prompt\nrow-7,a green kite\n")
    async with Emulator(time_scale=SCALE) as emu:
        code, out, err = await cli("batch", str(jsonl), "--out", str(tmp_path / "a"), emu=emu)
        assert code == 0, err
        code, csv_out, err = await cli("batch", str(table), "--out", str(tmp_path / "b"),
                                       emu=emu)
        assert code == 0, err
    done = [line for line in out.splitlines() if "done:" in line]
    assert sorted(line.split()[2] for line in done) == ["[sku-1]", "[sku-2]"]
    assert "[row-7] done:" in csv_out
    assert all("id" not in body for body in emu.received)  # never sent to the API
