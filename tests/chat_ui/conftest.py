"""Chat UI fixtures. The model server fixtures are those of tests/model_server/conftest.py (real
`python -m model_server serve` processes on 127.0.0.1), loaded under their own module name and re-exported,
so both suites start servers the same way. `UiServer` runs `python -m chat_ui` the same way."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
_MS_TESTS = REPO / "tests" / "model_server"
sys.path.insert(0, str(_MS_TESTS))  # its conftest imports tiny_model from there
_spec = importlib.util.spec_from_file_location("model_server_fixtures", _MS_TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
ms = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ms)

Server = ms.Server
free_port = ms.free_port
# Fixtures reused as they are (pytest collects them from this module's namespace).
tiny_gguf = ms.tiny_gguf
smol_gguf = ms.smol_gguf
start_server = ms.start_server
tiny_server = ms.tiny_server

#: Screenshots and page dumps of the browser test (git-ignored).
ARTIFACTS = Path(os.environ.get("CHAT_UI_TEST_ARTIFACTS", REPO / "test-artifacts" / "chat_ui"))


class UiServer:
    """`python -m chat_ui` on 127.0.0.1 and a free port; `stop()` sends SIGTERM and returns the exit code."""

    def __init__(self, log_dir: Path, model_url: str, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"chat-ui-{self.port}.log"
        env = {
            **os.environ,
            "CHAT_UI_HOST": "127.0.0.1",
            "CHAT_UI_PORT": str(self.port),
            "CHAT_UI_MODEL_URL": model_url,
        }
        env.update({f"CHAT_UI_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat_ui"], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chat UI exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"chat UI not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._log.close()
        return code


@pytest.fixture
def start_ui(tmp_path: Path) -> Iterator:
    """Factory: start_ui(model_url, **CHAT_UI_* settings) -> ready UiServer; stopped afterwards."""
    started: list[UiServer] = []

    def start(model_url: str, **settings: object) -> UiServer:
        ui = UiServer(tmp_path, model_url, **settings)
        started.append(ui)
        ui.wait_ready()
        return ui

    yield start
    for ui in started:
        ui.stop()
