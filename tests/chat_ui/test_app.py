"""Settings validation, `python -m chat_ui` start-up errors, the app's probes and how a turn is rendered."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing

import gradio as gr
import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from chat_ui.backend import ChatError, Turn
from chat_ui.settings import SEED_SYSTEM_PROMPT, Settings, settings_help
from chat_ui.web import coalesce, create_app, render

from .conftest import REPO, free_port


def test_defaults() -> None:
    s = Settings(_env_file=None)
    assert s.base_url() == "http://127.0.0.1:5000"
    assert (s.host, s.port, s.log_prompts, s.retry_attempts) == ("0.0.0.0", 7860, False, 5)
    assert s.resolved_system_prompt() == SEED_SYSTEM_PROMPT
    assert s.resolved_api_key() is None


def test_environment_and_files(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / "prompt.txt").write_text("  You answer in French.\n")
    (tmp_path / "key").write_text("abc\n")
    monkeypatch.setenv("CHAT_UI_MODEL_URL", "http://model-server.llama:5000/")
    monkeypatch.setenv("CHAT_UI_SYSTEM_PROMPT_FILE", str(tmp_path / "prompt.txt"))
    monkeypatch.setenv("CHAT_UI_API_KEY_FILE", str(tmp_path / "key"))
    s = Settings()
    assert s.base_url() == "http://model-server.llama:5000"
    assert s.resolved_system_prompt() == "You answer in French."
    assert s.resolved_api_key() == "abc"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CHAT_UI_PORT": "0"}, "port"),
        ({"CHAT_UI_MODEL_URL": "model-server:5000"}, "model_url"),
        ({"CHAT_UI_TEMPERATURE": "3"}, "temperature"),
        ({"CHAT_UI_LOG_LEVEL": "verbose"}, "log_level"),
        ({"CHAT_UI_ROOT_PATH": "chat"}, "must start with '/'"),
        (
            {"CHAT_UI_API_KEY": "a", "CHAT_UI_API_KEY_FILE": "/etc/hostname"},
            "set only one of CHAT_UI_API_KEY",
        ),
        ({"CHAT_UI_SYSTEM_PROMPT_FILE": "/nonexistent"}, "CHAT_UI_SYSTEM_PROMPT_FILE: no such file"),
        (
            {"CHAT_UI_RETRY_BACKOFF_S": "10"},
            "CHAT_UI_RETRY_BACKOFF_S (10.0) exceeds CHAT_UI_RETRY_BACKOFF_MAX_S",
        ),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict, expected: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert expected in str(info.value)


def test_cli_refuses_bad_configuration_with_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chat_ui"],
        cwd=REPO,
        env={"CHAT_UI_TEMPERATURE": "hot", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "chat_ui: invalid configuration" in proc.stderr and "temperature" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_every_setting() -> None:
    text = settings_help()
    for name in Settings.model_fields:
        assert f"CHAT_UI_{name.upper()}" in text


def test_probes(tiny_server) -> None:
    with TestClient(create_app(Settings(model_url=tiny_server.url))) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "model": "ready"}
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text


def test_ui_stays_ready_while_the_model_is_down() -> None:
    """The UI's readiness does not follow the model's: a ready UI is what tells users the model is down."""
    with TestClient(create_app(Settings(model_url=f"http://127.0.0.1:{free_port()}"))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "model": "down"}


def test_page_is_served_under_a_root_path(tiny_server) -> None:
    app = create_app(Settings(model_url=tiny_server.url, root_path="/chat/"))
    with TestClient(app, root_path="/chat") as client:
        assert client.get("/healthz").status_code == 200
        config = client.get("/config").json()
        assert config["root"].endswith("/chat")


def test_render_turns() -> None:
    assert render(Turn(text="Hello")) == "Hello"
    pending = render(
        Turn(note="⏳ The model is busy, retrying in 1.0 s (attempt 2 of 5)…", note_kind="pending")
    )
    assert isinstance(pending, list) and len(pending) == 1
    assert pending[0].metadata == {"title": pending[0].metadata["title"], "status": "pending"}
    error = ChatError("model_down")
    failed = render(
        Turn(text="partial", note=f"⚠️ {error.headline}", note_detail=error.hint, note_kind="error")
    )
    assert isinstance(failed, list)
    assert [m.content for m in failed] == ["partial", error.hint]
    assert failed[1].metadata == {"title": "⚠️ The model server is not reachable."}
    assert all(isinstance(m, gr.ChatMessage) and m.role == "assistant" for m in failed)


def test_chat_through_gradio_http_api(tiny_server, start_ui) -> None:
    """The page's own endpoint (what the browser calls), driven by Gradio's Python client."""
    from gradio_client import Client

    ui = start_ui(tiny_server.url, max_tokens=6, temperature=0)
    client = Client(ui.url + "/", verbose=False)
    reply = client.predict(message="hello", api_name="/chat")
    text = reply if isinstance(reply, str) else str(reply)
    assert text.strip()
    assert httpx.get(f"{ui.url}/readyz").json()["model"] == "ready"
    assert '"chat turn"' in ui.logs() and '"outcome": "ok"' in ui.logs()
    assert "hello" not in ui.logs()  # no prompt text in the logs by default


def test_coalesce_shows_first_text_notes_and_the_end_at_once_and_batches_the_rest() -> None:
    closed = []

    async def tokens(gaps: list[float]) -> AsyncGenerator[Turn, None]:
        turn = Turn()
        try:
            turn.note, turn.note_kind = "⏳ busy", "pending"
            yield turn
            turn.note = turn.note_kind = None
            for gap in gaps:
                await asyncio.sleep(gap)
                turn.text += "x"
                yield turn
        finally:
            closed.append(True)

    async def shown(gaps: list[float], interval: float) -> list[tuple[str, str | None]]:
        return [(t.text, t.note) async for t in coalesce(tokens(gaps), interval)]

    # Fast tokens: the note, the first token, then one update per interval, and the final text.
    fast = asyncio.run(shown([0.001] * 200, 0.05))
    assert fast[0] == ("", "⏳ busy") and fast[1] == ("x", None) and fast[-1] == ("x" * 200, None)
    assert 3 <= len(fast) < 40, len(fast)
    # Slow tokens (slower than the interval) or interval 0: every token is shown.
    assert len(asyncio.run(shown([0.02] * 5, 0.01))) == 6
    assert len(asyncio.run(shown([0.0] * 50, 0))) == 51

    async def stop_early() -> list[bool]:
        closed.clear()
        async with aclosing(coalesce(tokens([0.0] * 10), 0)) as shown_turns:  # as Gradio closes it
            async for turn in shown_turns:
                if turn.text:
                    break
        return list(closed)  # before the event loop's own clean-up of unfinished generators

    # Leaving early closes the answer at once (and so the model server's stream).
    assert asyncio.run(stop_early()) == [True]
