"""The HTTP edge: request ids, request-body size limit (413) and read timeouts (408), access log, route
counter (ASGI middleware), and uvicorn's HTTP protocol with a header read timeout.

uvicorn bounds idle keep-alive connections but not a client that sends its request slowly: without these
timeouts, a client that trickles headers or a body holds a connection (and memory) forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from model_server import metrics
from model_server.errors import error_body
from model_server.logs import request_id_var

access_log = logging.getLogger("model_server.access")

#: Routes counted by name in model_server_requests_total; anything else is "other" (bounded cardinality).
ROUTES = frozenset(
    {"/predict", "/v1/chat/completions", "/v1/completions", "/v1/models", "/healthz", "/readyz", "/metrics"}
)
#: Probes and scrapes are not access-logged (they would drown the log).
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
#: A client's X-Request-ID is kept if it is a plain token (it goes into logs and a response header).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class _BodyTooLarge(BaseException):
    """Not an Exception: FastAPI's body parser must not turn it into a generic 400."""


class _BodyTimeout(BaseException):
    """The request body did not arrive in time (BaseException for the same reason)."""


def _json_response(status: int, message: str, code: str) -> tuple[Message, Message]:
    body = json.dumps(error_body(message, "invalid_request_error", None, code)).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


def request_id(raw: bytes | None) -> str:
    """The client's X-Request-ID when it is a plain token of at most 128 characters, else a new one."""
    rid = (raw or b"").decode("latin-1")
    return rid if _REQUEST_ID.fullmatch(rid) else uuid.uuid4().hex


def _declares_more_than(content_length: bytes | None, limit: int) -> bool:
    """Whether a Content-Length header announces a body over ``limit`` (an unparsable one counts as over)."""
    if content_length is None:
        return False
    try:
        return int(content_length) > limit
    except ValueError:
        return True


class EdgeMiddleware:
    """Request ids, request-body size limit (413), access log and per-route request counter."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = request_id(headers.get(b"x-request-id"))
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        status = 500
        started = False

        too_large = _declares_more_than(headers.get(b"content-length"), self.max_body)

        received = 0
        body_done = False
        body_deadline = time.monotonic() + self.body_timeout

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body only http.disconnect can come: no deadline
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, body_deadline - time.monotonic()))
            except TimeoutError:
                raise _BodyTimeout from None
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge
                body_done = not msg.get("more_body", False)
            else:
                body_done = True
            return msg

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            if too_large:
                await self._reject_large(send_wrapper)
            else:
                try:
                    await self.app(scope, limited_receive, send_wrapper)
                except _BodyTooLarge:
                    if started:
                        raise
                    await self._reject_large(send_wrapper)
                except _BodyTimeout:
                    if started:
                        raise
                    for message in _json_response(
                        408,
                        f"request body not received within {self.body_timeout:g} s "
                        "(MODEL_SERVER_BODY_TIMEOUT_S)",
                        "body_timeout",
                    ):
                        await send_wrapper(message)
        finally:
            path = scope.get("path", "")
            metrics.REQUESTS.labels(route=path if path in ROUTES else "other", status=str(status)).inc()
            if path not in QUIET:
                access_log.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - t0) * 1000, 1),
                    },
                )
            request_id_var.reset(token)

    async def _reject_large(self, send: Send) -> None:
        for message in _json_response(413, f"request body exceeds {self.max_body} bytes", "too_large"):
            await send(message)


def header_timeout_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for a request's headers, counted from the connection (or,
    on a kept-alive connection, from the next request's first byte). Past it: 408 and the connection
    closes. uvicorn's own keep-alive timeout still closes idle connections between requests."""

    class HeaderTimeoutProtocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return
            body = json.dumps(
                error_body(
                    f"request headers not received within {header_timeout_s:g} s "
                    "(MODEL_SERVER_HEADER_TIMEOUT_S)",
                    "invalid_request_error",
                    None,
                    "header_timeout",
                )
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            self.transport.close()

    return HeaderTimeoutProtocol
