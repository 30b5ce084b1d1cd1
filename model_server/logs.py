"""JSON logs, one object per line, with the request id of the current request (contextvar)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Our middleware writes the access log (with request ids); uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True


_llama_logger = logging.getLogger("llama_cpp")
_llama_buf: list[str] = []
_llama_last_level = logging.DEBUG
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous message
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_llama_callback = None  # keep a reference: ctypes must not collect the callback


def route_llama_logs() -> None:
    """Send llama.cpp's own log lines through our JSON logging (info chatter at debug level)."""
    global _llama_callback
    import llama_cpp

    def callback(level: int, text: bytes, _user: object) -> None:
        global _llama_last_level
        if level != 5:
            _llama_last_level = _GGML_LEVELS.get(level, logging.DEBUG)
        _llama_buf.append(text.decode("utf-8", errors="replace") if text else "")
        if _llama_buf[-1].endswith("\n"):
            line = "".join(_llama_buf).rstrip()
            _llama_buf.clear()
            if line and _llama_logger.isEnabledFor(_llama_last_level):
                _llama_logger.log(_llama_last_level, line)

    _llama_callback = llama_cpp.llama_log_callback(callback)
    llama_cpp.llama_log_set(_llama_callback, None)
