"""`make chat`: both servers start on 127.0.0.1, the URL is printed, Ctrl-C stops both; a busy port is a
clear error. Run through make itself, as a user would (tiny model, free ports)."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from .conftest import REPO, free_port

pytestmark = pytest.mark.slow


class MakeChat:
    """`make chat ...` in its own process group (the test sends SIGINT to it, as a terminal does on Ctrl-C);
    a thread collects its output lines."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "chat", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "MAKEFLAGS": ""},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read_until(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n{''.join(self.seen[-40:])}")

    def ctrl_c(self, timeout: float = 60) -> str:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # never leave servers behind, then fail
            raise
        rest = []
        while (line := self.lines.get(timeout=10)) is not None:
            rest.append(line)
        return "".join(rest)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_make_chat_starts_both_and_ctrl_c_stops_both(tiny_gguf) -> None:
    model_port, ui_port = free_port(), free_port()
    chat = MakeChat(f"MODEL={tiny_gguf}", f"PORT={model_port}", f"CHAT_PORT={ui_port}")
    try:
        url = chat.read_until(r"Chat UI: (http://127\.0\.0\.1:\d+/)", 300).group(1)
        assert url == f"http://127.0.0.1:{ui_port}/"
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}readyz", timeout=5).json()["model"] != "ready":
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.2)
        assert any(line.startswith("[model] {") for line in chat.seen)  # both logs come through, tagged
        assert any(line.startswith("[ui] {") for line in chat.seen)
    finally:
        rest = chat.ctrl_c()
    assert "stopping the chat UI and the model server" in rest, "".join(chat.seen) + rest
    assert all(port_free(port) for port in (model_port, ui_port)), "a server outlived Ctrl-C"


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "tools/chat_local.py", "--model-port", str(port), "--ui-port", str(free_port())],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in proc.stderr
    assert f"make chat PORT={port + 1}" in proc.stderr
