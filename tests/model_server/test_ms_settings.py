"""Settings and CLI: typed, env-driven, clear errors naming the variable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO
from pydantic import ValidationError

from model_server import settings as settings_module
from model_server.settings import Settings, embedded_model_path


def test_defaults(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("MODEL_SERVER_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert (s.host, s.port, s.max_concurrency, s.max_queue, s.drain_timeout_s) == (
        "0.0.0.0",
        5000,
        4,
        16,
        30.0,
    )
    assert s.resolved_model_path() == embedded_model_path()
    assert s.model_id() == "SmolLM2-135M-Instruct.Q4_1"
    assert s.resolved_api_key() is None


def test_env_prefix_and_types(monkeypatch, tmp_path):
    key = tmp_path / "key"
    key.write_text("abc\n")
    monkeypatch.setenv("MODEL_SERVER_PORT", "8081")
    monkeypatch.setenv("MODEL_SERVER_API_KEY_FILE", str(key))
    s = Settings()
    assert s.port == 8081
    assert s.resolved_api_key() == "abc"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MODEL_SERVER_PORT": "0"}, "port"),
        ({"MODEL_SERVER_MAX_CONCURRENCY": "many"}, "max_concurrency"),
        ({"MODEL_SERVER_MODEL_PATH": "/nonexistent.gguf"}, "MODEL_SERVER_MODEL_PATH: no such file"),
        ({"MODEL_SERVER_API_KEY": "a", "MODEL_SERVER_API_KEY_FILE": "/etc/hostname"}, "only one of"),
        ({"MODEL_SERVER_DEFAULT_MAX_TOKENS": "0"}, "default_max_tokens"),
        ({"MODEL_SERVER_FLASH_ATTN": "maybe"}, "flash_attn"),
        ({"MODEL_SERVER_PREFILL_CHUNK": "32"}, "prefill_chunk"),
        ({"MODEL_SERVER_PREFIX_CACHE": "sometimes"}, "prefix_cache"),
        ({"MODEL_SERVER_PREFILL_SERIAL": "maybe"}, "prefill_serial"),
        (
            {"MODEL_SERVER_MAX_CONCURRENCY": "200", "MODEL_SERVER_PREFIX_CACHE_SEQS": "100"},
            "MODEL_SERVER_MAX_CONCURRENCY + MODEL_SERVER_PREFIX_CACHE_SEQS = 300; llama.cpp holds at most",
        ),
    ],
)
def test_invalid_values_fail_with_the_key(monkeypatch, env, fragment):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert fragment in str(exc.value)


def test_cli_help_and_bad_config_exit_2():
    out = subprocess.run(
        [sys.executable, "-m", "model_server", "serve", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert "MODEL_SERVER_MAX_CONCURRENCY" in out.stdout and "MODEL_SERVER_DRAIN_TIMEOUT_S" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "model_server", "serve"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"MODEL_SERVER_MAX_QUEUE": "-1", "PATH": "/usr/bin"},
    )
    assert bad.returncode == 2
    assert "max_queue" in bad.stderr


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (8, 7)])
def test_default_threads_leave_a_core_free(monkeypatch, cpus, threads):
    """Issue 17: llama.cpp's spinning threads on every core starve everything else on a busy machine."""
    monkeypatch.delenv("MODEL_SERVER_N_THREADS", raising=False)
    monkeypatch.setattr(settings_module, "usable_cpus", lambda: cpus)
    assert Settings().n_threads == threads


def test_port_in_use_is_one_clear_line_and_exit_2(tiny_gguf):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "MODEL_SERVER_HOST": "127.0.0.1",
            "MODEL_SERVER_PORT": str(port),
            "MODEL_SERVER_MODEL_PATH": str(tiny_gguf),
        }
        out = subprocess.run(
            [sys.executable, "-m", "model_server", "serve"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"port {port} on 127.0.0.1 is already in use" in lines[0]
    assert f"PORT={port + 1} make serve" in lines[0] and "MODEL_SERVER_PORT" in lines[0]


@pytest.mark.parametrize(
    ("env", "chunk"),
    [({}, 256), ({"MODEL_SERVER_N_GPU_LAYERS": "-1"}, 512), ({"MODEL_SERVER_PREFILL_CHUNK": "128"}, 128)],
)
def test_prefill_chunk_default_depends_on_the_accelerator(monkeypatch, env, chunk):
    """Chunked prefill: small steps on a CPU; a GPU reads a whole batch of prompt in about a decode step."""
    for key in ("MODEL_SERVER_N_GPU_LAYERS", "MODEL_SERVER_PREFILL_CHUNK", "MODEL_SERVER_N_BATCH"):
        monkeypatch.delenv(key, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings().resolved_prefill_chunk() == chunk


@pytest.mark.parametrize(
    ("env", "serial"),
    [
        ({}, True),
        ({"MODEL_SERVER_N_GPU_LAYERS": "-1"}, False),
        ({"MODEL_SERVER_N_GPU_LAYERS": "-1", "MODEL_SERVER_PREFILL_SERIAL": "true"}, True),
        ({"MODEL_SERVER_PREFILL_SERIAL": "false"}, False),
    ],
)
def test_serial_prefill_default_depends_on_the_accelerator(monkeypatch, env, serial):
    """A CPU decode costs about its tokens: new prompts' tails one by one; a GPU decodes them together."""
    for key in ("MODEL_SERVER_N_GPU_LAYERS", "MODEL_SERVER_PREFILL_SERIAL"):
        monkeypatch.delenv(key, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings().resolved_prefill_serial() is serial
