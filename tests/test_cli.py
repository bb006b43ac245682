"""The kling-async command, run as a subprocess against an Emulator on loopback."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from kling_async.testing import Emulator
from kling_async.testing._files import result_bytes

SCALE = 300.0  # a clip takes about one second


def env_for(emu: Emulator | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOLINK_")}
    if emu is not None:
        env.update(EVOLINK_API_KEY=emu.api_key, EVOLINK_BASE_URL=emu.url,
                   KLING_ASYNC_TIME_SCALE=str(SCALE))
    return env


async def cli(*args: str, emu: Emulator | None) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-m", "kling_async", *args],
                                       env=env_for(emu), check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def write_prompts(path: Path, n: int) -> Path:
    path.write_text("# test prompts\n\n" + "".join(f"clip number {i}\n" for i in range(n)))
    return path


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
    assert all(f.read_bytes() == result_bytes(None) for f in files)
    assert not list(out.glob(".*.part"))


async def test_failures_give_a_non_zero_exit_with_reasons(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.txt", 3)
    async with Emulator(time_scale=SCALE) as emu:
        emu.fail_next_tasks("content_policy_violation")
        code, out, _ = await cli("batch", str(prompts), "--out", str(tmp_path / "c"), emu=emu)
    assert code == 1
    assert "2 succeeded, 1 failed of 3" in out
    assert "1 x content_policy_violation" in out


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
        assert (tmp_path / "cat.mp4").read_bytes() == result_bytes(None)
        task_id = out.split()[1]
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
    assert code == 130
    assert "Resume with:" in err
    assert "kling-async batch" in err
