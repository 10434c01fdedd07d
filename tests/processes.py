"""The bot as an operator runs it: ``python -m bot`` in a child process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

__all__ = ["BotProcess"]


class BotProcess:
    """``python -m bot`` in a child process; its stderr collected for inspection.
    ``module`` runs another entry point instead (tests/short_intervals.py)."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str, module: str = "bot") -> None:
        # Its temp files (videos on their way) in the test's folder: a SIGKILLed bot
        # cannot clean up after itself, and pytest prunes old test folders.
        own_temp = cwd / "tmp"
        own_temp.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(own_temp), **env}
        self.cwd = cwd
        self.args = args
        self.module = module
        self.process: asyncio.subprocess.Process | None = None
        self.stderr = b""
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> BotProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(65536):
            self.stderr += chunk

    async def wait(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def output(self) -> tuple[str, str]:
        assert self.process is not None
        assert self.process.stdout is not None
        stdout = (await self.process.stdout.read()).decode()
        return stdout, self.stderr.decode()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.wait()
