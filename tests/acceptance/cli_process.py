"""Run the real ``audience-gateway`` command in a subprocess and wait for its listening line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

LISTENING = re.compile(r"audience-gateway listening on (http://\S+)")


class GatewayProcess:
    def __init__(self, *args: str, env: dict[str, str], executable: list[str] | None = None) -> None:
        command = executable or [sys.executable, "-m", "gateway"]
        self.process = subprocess.Popen([*command, *args], env={**os.environ, **env}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.url: str | None = None

    def wait_listening(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"gateway exited early ({self.process.wait()}): {self.process.stderr.read()}")
            self.lines.append(line)
            match = LISTENING.search(line)
            if match:
                self.url = match.group(1)
                return self.url
        raise AssertionError("gateway did not start listening in time")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # its embedded PostgreSQL, in its own session, is adopted by a later start
            self.process.wait()
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"the gateway did not exit within {timeout} s of signal {sig}; its stderr ends: "
                                 f"{stderr[-4000:]}") from None
        finally:
            for stream in (self.process.stdout, self.process.stderr):
                if stream:
                    stream.close()
        return code


def free_data_dir(tmp_path: Path) -> dict[str, str]:
    return {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_DATABASE_URL": "", "GATEWAY_LOG_LEVEL": "WARNING"}
