"""The web app: a Gradio chat page mounted on a FastAPI app that also serves /healthz and /readyz.

The page is Gradio's `ChatInterface` (streaming, history, stop button, markdown and code rendering); every
turn goes through `chat_ui.backend.answer`. Status and error notes are titled messages (Gradio shows them
as a box in the conversation); `build_messages` leaves them out of what the model reads.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from chat_ui.backend import ModelClient, Turn, answer
from chat_ui.settings import Settings

#: Chat page elements the browser test and operators can rely on.
CHATBOT_ID = "chatbot"
TEXTBOX_ID = "chat-input"


def render(turn: Turn) -> str | list[gr.ChatMessage]:
    """What Gradio shows for the turn so far: the answer text, plus a titled note when there is one."""
    if turn.note is None:
        return turn.text
    messages = [gr.ChatMessage(role="assistant", content=turn.text)] if turn.text else []
    metadata: gr.components.chatbot.MetadataDict = {"title": turn.note}
    if turn.note_kind == "pending":
        metadata["status"] = "pending"
    messages.append(gr.ChatMessage(role="assistant", content=turn.note_detail, metadata=metadata))
    return messages


async def coalesce(turns: AsyncGenerator[Turn, None], interval_s: float) -> AsyncIterator[Turn]:
    """Pass on the first text and every note change at once, further text at most every `interval_s`
    (the tokens in between are shown together), and always the final state.

    Each page update costs the UI server a render, a diff and an event for the whole answer so far; one
    per token would make a busy UI fall behind a fast model.
    """
    last_shown = float("-inf")
    shown: tuple[bool, str | None] | None = None
    turn: Turn | None = None
    behind = False
    async with aclosing(turns):  # leaving early closes the answer, and with it the model server's stream
        async for turn in turns:
            key = (bool(turn.text), turn.note)
            now = time.monotonic()
            if key != shown or now - last_shown >= interval_s:
                shown, last_shown, behind = key, now, False
                yield turn
            else:
                behind = True
    if behind and turn is not None:
        yield turn


def build_blocks(settings: Settings, client: Callable[[], ModelClient]) -> gr.Blocks:
    """The chat page. `client()` returns the app's model client (created in the server's event loop)."""

    async def respond(
        message: str, history: list[dict[str, Any]]
    ) -> AsyncIterator[str | list[gr.ChatMessage]]:
        turns = answer(client(), message, history, request_id=uuid.uuid4().hex)
        async for turn in coalesce(turns, settings.stream_interval_s):
            yield render(turn)

    chatbot = gr.Chatbot(
        elem_id=CHATBOT_ID,
        label=settings.title,
        show_label=False,
        buttons=["copy"],
        placeholder="Ask anything. Answers stream as they are generated; ■ stops one.",
        feedback_options=None,
        scale=1,
        height="70vh",
    )
    textbox = gr.Textbox(
        elem_id=TEXTBOX_ID,
        placeholder="Type a message and press Enter",
        show_label=False,
        lines=1,
        max_lines=8,
        max_length=settings.max_message_chars,
        submit_btn=True,
        stop_btn=True,
        autofocus=True,
    )
    with gr.Blocks(title=settings.title, analytics_enabled=False, fill_height=True) as blocks:
        gr.ChatInterface(
            respond,
            chatbot=chatbot,
            textbox=textbox,
            title=settings.title,
            flagging_mode="never",
            analytics_enabled=False,
            concurrency_limit=settings.concurrency_limit,
            api_name="chat",
            fill_height=True,
        )
    queued: gr.Blocks = blocks.queue(
        max_size=settings.queue_size, default_concurrency_limit=settings.concurrency_limit
    )
    return queued


class _State:
    def __init__(self) -> None:
        self.client: ModelClient | None = None
        self.serving = False


def create_app(settings: Settings) -> FastAPI:
    """FastAPI app: GET /healthz, GET /readyz, and the chat page at /."""
    state = _State()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.client = ModelClient(settings)
        state.serving = True
        try:
            yield
        finally:
            state.serving = False
            await state.client.aclose()

    app = FastAPI(title=settings.title, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: the process serves HTTP."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness of the UI itself; the model's state is reported, not required (see docs/chat_ui.md)."""
        if not state.serving or state.client is None:
            return JSONResponse({"status": "stopping" if state.client else "starting"}, 503)
        return JSONResponse({"status": "ready", "model": await state.client.model_status()})

    def client() -> ModelClient:
        if state.client is None:  # pragma: no cover - Gradio runs events only after the lifespan started
            raise RuntimeError("the app is not started")
        return state.client

    mounted: FastAPI = gr.mount_gradio_app(
        app,
        build_blocks(settings, client),
        path="/",
        root_path=settings.root_path or None,
        footer_links=[],
        run_history=False,
        ssr_mode=False,
        mcp_server=False,
        max_file_size="1mb",
        show_error=False,
        theme=gr.themes.Default(),
    )
    return mounted
