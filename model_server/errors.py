"""API errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and their handlers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_server.protocol import UNSUPPORTED

log = logging.getLogger("model_server.api")


class ApiError(Exception):
    """An error answered to the client: HTTP status, OpenAI error fields, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_BASIC_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _is_tag(part: int | str) -> bool:
    """A union member's tag in a pydantic error location ("list[...]", "function-after[...]", "TextPart")."""
    return isinstance(part, str) and ("[" in part or "-" in part or part[:1].isupper() or part in _BASIC_TAGS)


def _param(loc: tuple[int | str, ...]) -> str:
    """A parameter's dotted path from a pydantic error location (without "body" and union tags)."""
    return ".".join(str(p) for p in loc if p != "body" and not _is_tag(p))


def _best(errors: list[Any]) -> dict[str, Any]:
    """The most telling error: a union yields one error per member, and a type mismatch of a member the
    input was never meant for ("Input should be a valid string" for a list) says least."""
    for err in errors:
        if not str(err.get("type", "")).endswith("_type"):
            return dict(err)
    return dict(errors[0]) if errors else {}


def validation_error(exc: RequestValidationError) -> ApiError:
    """A 400 naming the parameter (OpenAI answers 400, not 422). Unknown and unimplemented parameters
    are all named in one message (code `unsupported_parameter`); otherwise the most telling error."""
    errors = list(exc.errors())
    unsupported: list[str] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            name = _param(loc)
        elif loc[:1] == ("body",) and len(loc) > 1 and loc[1] in UNSUPPORTED:
            name = str(loc[1])
        else:
            continue
        if name not in unsupported:
            unsupported.append(name)
    if unsupported:
        return ApiError(
            400,
            f"unsupported parameter(s): {', '.join(unsupported)}: not implemented by this server "
            "(omit them; GET /openapi.json lists what each endpoint accepts)",
            param=unsupported[0],
            code="unsupported_parameter",
        )
    first = _best(errors)
    param = _param(tuple(first.get("loc", ()))) or None
    if first.get("type") == "json_invalid":
        message = "request body is not valid JSON"
    elif first.get("type") == "too_long" and param == "messages":
        first["type"] = "too_many_messages"
        ctx = first.get("ctx", {})
        message = (
            f"messages: {ctx.get('actual_length')} messages; at most {ctx.get('max_length')} per request "
            "(MODEL_SERVER_MAX_MESSAGES)"
        )
    elif first.get("type") == "string_unicode":  # pydantic-core refuses lone surrogates ("\udfff")
        first["type"] = "invalid_unicode"
        message = f"{param}: contains a lone UTF-16 surrogate (like \\udfff): not valid Unicode text"
    else:
        message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
    return ApiError(400, message, param=param, code=first.get("type"))


def log_rejection(err: ApiError) -> None:
    """One log line per refused request (no user text): status, code and parameter."""
    if err.status >= 500:
        log.error("request failed", extra={"status": err.status, "code": err.code, "error": err.message})
    else:
        log.info(
            "request rejected",
            extra={"status": err.status, "code": err.code, "param": err.param, "error": err.message},
        )


def install_handlers(app: FastAPI) -> None:
    """Every error leaves as OpenAI-shaped JSON: ours, validation, routing (404/405) and unexpected (500)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        log_rejection(exc)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        log_rejection(err)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error"), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal server error", "server_error"), 500)
