"""ASGI middleware at the edge: request ids, the request-body size limit (413), access log, route counter."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class _BodyTooLarge(BaseException):
    """Not an Exception: FastAPI's body parser must not turn it into a generic 400."""


class EdgeMiddleware:
    """Request ids, request-body size limit (413), access log and per-route request counter."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        status = 500
        started = False

        declared = headers.get(b"content-length")
        too_large = False
        if declared is not None:
            try:
                too_large = int(declared) > self.max_body
            except ValueError:
                too_large = True

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge
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
        body = json.dumps(
            error_body(
                f"request body exceeds {self.max_body} bytes", "invalid_request_error", None, "too_large"
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
