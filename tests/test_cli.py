"""The kling-async command, run as a subprocess against an Emulator on loopback."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from kling_async.testing import Emulator
from kling_async.testing._files import result_bytes

from .cli_helpers import SCALE, cli, env_for, write_prompts
from .crash import kill_and_resume


def task_of(clip: Path) -> bytes:
    """The task id in a batch file name ``NNNNN-<task id>.mp4``, as the Emulator's tag."""
    return clip.stem.split("-", 1)[1].encode()

async def test_batch_end_to_end(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 5)
    async with Emulator(time_scale=SCALE, seed=1) as emu:
        code, out, err = await cli("batch", str(prompts), "--out", str(tmp_path / "clips"),
                                   "--duration", "8", "--quality", "1080p", emu=emu)
        stats = emu.statistics()
    assert code == 0, err
    assert "5 succeeded, 0 failed of 5" in out
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 5
    assert stats.tasks_created == 5
    assert {b["duration"] for b in emu.received} == {8}
    assert {b["quality"] for b in emu.received} == {"1080p"}


async def test_batch_without_a_key_uses_the_embedded_emulator(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 2)
    code, out, _ = await cli("batch", str(prompts), "--out", str(tmp_path / "clips"), emu=None)
    assert code == 0
    assert out.splitlines()[0].startswith("No EVOLINK_API_KEY set: using the built-in Emulator")
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 2


async def test_a_killed_batch_resumes_paying_once(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 12)
    out = tmp_path / "clips"
    args = [sys.executable, "-m", "kling_async", "batch", str(prompts), "--out", str(out),
            "--concurrency", "4"]
    async with Emulator(time_scale=SCALE, seed=2) as emu:
        process: Process = await anyio.open_process(args, env=env_for(emu))
        assert process.stdout is not None
        seen = b""
        with anyio.fail_after(30):
            async for chunk in process.stdout:
                seen += chunk
                if seen.count(b"submitted as") >= 6:
                    break
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await process.aclose()
        assert b"succeeded," not in seen  # it really died mid-run
        code, _text, err = await cli("batch", str(prompts), "--out", str(out), emu=emu)
        stats = emu.statistics()
    assert code == 0, err
    assert stats.tasks_created == 12
    assert stats.duplicate_bodies == 0
    files = list(out.glob("*.mp4"))
    assert len(files) == 12
    assert all(f.read_bytes() == result_bytes(None, task_of(f)) for f in files)
    assert not list(out.glob(".*.part"))


async def test_failures_give_a_non_zero_exit_with_reasons(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 3)
    async with Emulator(time_scale=SCALE) as emu:
        emu.fail_next_tasks("content_policy_violation")
        code, out, _ = await cli("batch", str(prompts), "--out", str(tmp_path / "c"), emu=emu)
    assert code == 1
    assert "2 succeeded, 1 failed of 3" in out
    assert "1 x content_policy_violation\n" in out  # not "(worth retrying)"
    assert "--retry-failed" not in out


async def test_bad_prompt_files_are_refused_before_sending(tmp_path: Path) -> None:
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "too long", "duration": 40}\n')
    async with Emulator(time_scale=SCALE) as emu:
        code, _, err = await cli("batch", str(bad), "--out", str(tmp_path / "c"), emu=emu)
        assert sum(emu.statistics().requests.values()) == 0
    assert code == 2
    assert "prompts.jsonl:2" in err
    assert "duration" in err


async def test_jsonl_requests_with_shots(tmp_path: Path) -> None:
    jsonl = tmp_path / "requests.jsonl"
    jsonl.write_text('{"prompt": "", "duration": 6, "shots": [{"prompt": "a", "duration": 2},'
                     ' {"prompt": "b", "duration": 4}]}\n')
    async with Emulator(time_scale=SCALE) as emu:
        code, _, err = await cli("batch", str(jsonl), "--out", str(tmp_path / "c"), emu=emu)
        body = emu.received[0]
    assert code == 0, err
    assert body["model_params"]["shot_type"] == "customize"


async def test_generate_status_and_credits(tmp_path: Path) -> None:
    async with Emulator(time_scale=SCALE) as emu:
        code, out, err = await cli("generate", "a cat", "-o", str(tmp_path / "cat.mp4"), emu=emu)
        assert code == 0, err
        task_id = out.split()[1]
        assert (tmp_path / "cat.mp4").read_bytes() == emu.result_file(task_id)
        code, out, _ = await cli("status", task_id, emu=emu)
        assert code == 0
        assert "completed" in out
        assert task_id in out
        code, out, _ = await cli("credits", emu=emu)
        assert code == 0
        assert "remaining" in out
        code, _, err = await cli("status", "not-a-task", emu=emu)
        assert code == 2
        assert "task id" in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_ctrl_c_prints_the_resume_command(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 8)
    args = [sys.executable, "-m", "kling_async", "batch", str(prompts), "--out",
            str(tmp_path / "c"), "--concurrency", "2"]
    async with Emulator(time_scale=SCALE / 10) as emu:
        process = await anyio.open_process(args, env=env_for(emu))
        assert process.stdout is not None
        assert process.stderr is not None
        with anyio.fail_after(30):
            async for chunk in process.stdout:
                if b"submitted as" in chunk:
                    break
            process.send_signal(signal.SIGINT)
            code = await process.wait()
            err = b"".join([chunk async for chunk in process.stderr]).decode()
        await process.aclose()
    assert code == 130, err
    assert "Resume with:" in err
    assert "kling-async batch" in err


async def test_many_kills_then_resume_pay_and_download_once(tmp_path: Path) -> None:
    stats, files, partials = await kill_and_resume(tmp_path, 30, kills=5, seed=4)
    assert stats.tasks_created == 30
    assert stats.duplicate_bodies == 0
    assert len(files) == 30
    assert partials == 0
    assert all(f.read_bytes() == result_bytes(200_000, task_of(f)) for f in files)
    assert stats.file_bytes_sent <= 30 * 200_000 * 1.2  # resumed, never fetched twice


async def test_the_key_never_appears_in_the_command_output(tmp_path: Path) -> None:
    secret = "sk-cli-secret-0123456789abcdef"
    prompts = write_prompts(tmp_path / "prompts.txt", 2)
    async with Emulator(time_scale=SCALE, api_key=secret) as emu:
        outputs = [await cli("batch", str(prompts), "--out", str(tmp_path / "c"), emu=emu),
                   await cli("status", "task-unified-1-missing0", emu=emu),
                   await cli("credits", emu=emu)]
    for _, out, err in outputs:
        assert secret not in out
        assert secret not in err
    assert outputs[1][0] == 1
    assert "404" in outputs[1][2]
