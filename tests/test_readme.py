"""Every ```python block of README.md runs as written (``python fragment`` blocks are
excerpts of tested files and are skipped): scripts against an Emulator process whose
printed lines are exported as a user would, test files under pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .redis_server import REDIS_SERVER, redis_server

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text[:m.start()].count("\n") + 1, m["code"]) for m in BLOCK.finditer(text)
            if m["info"].strip() == "python"]


@contextmanager
def emulator_environment(*, redis: bool = False) -> Iterator[dict[str, str]]:
    """``kling-async emulator`` in its own process; its three printed lines, exported
    (and ``KLING_ASYNC_REDIS_URL`` of a redis-server started for the block if ``redis``)."""
    command = [sys.executable, "-m", "kling_async", "emulator", "--time-scale", "1000"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline().strip() for _ in range(3)]
            env = {**os.environ, **dict(line.split("=", 1) for line in lines)}
            if not redis:
                yield env
                return
            with redis_server() as server:
                yield {**env, "KLING_ASYNC_REDIS_URL": server.url}
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_the_readme_has_runnable_blocks() -> None:
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize(("line", "code"), python_blocks(), ids=lambda v: str(v)[:12])
def test_readme_block_runs(line: int, code: str, tmp_path: Path) -> None:
    if re.search(r"^(async )?def test_", code, re.MULTILINE):
        path = tmp_path / "test_readme_example.py"
        path.write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-W", "error", str(path)]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, check=False)
    else:
        path = tmp_path / "example.py"
        path.write_text(code)
        (tmp_path / "examples").mkdir()  # blocks read the example files as from the repo
        for picture in README.parent.glob("examples/*.png"):
            (tmp_path / "examples" / picture.name).write_bytes(picture.read_bytes())
        if "RedisBudget" in code and REDIS_SERVER is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        with emulator_environment(redis="RedisBudget" in code) as env:
            done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"README.md line {line}:\n{done.stdout}\n{done.stderr}"


def test_the_notebook_example_runs(tmp_path: Path) -> None:
    example = README.parent / "examples" / "notebook.py"
    with emulator_environment() as env:
        done = subprocess.run([sys.executable, str(example)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "boat-1 saved to" in done.stdout
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 2
