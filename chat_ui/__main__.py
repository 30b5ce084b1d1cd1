"""`python -m chat_ui`: serve the chat page (configuration: CHAT_UI_* variables, flags override some)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from pydantic import ValidationError

from chat_ui.settings import Settings, settings_help

log = logging.getLogger("chat_ui")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat_ui",
        description="Serve the chat UI in front of the model server's OpenAI API.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="listen address (CHAT_UI_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (CHAT_UI_PORT, default 7860)")
    parser.add_argument("--model-url", help="model server base URL (CHAT_UI_MODEL_URL)")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key, value in {"host": args.host, "port": args.port, "model_url": args.model_url}.items()
        if value is not None
    }
    settings = Settings(**overrides)
    settings.resolved_api_key()  # unreadable files fail here, at start, not on the first question
    settings.resolved_system_prompt()
    return settings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"chat_ui: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    # Gradio's usage telemetry would call out of the cluster; it reads this variable (set before import).
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn, but a SIGTERM that ended in a clean shutdown exits 0 (uvicorn would re-raise it: 143)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    from chat_ui import logs
    from chat_ui.web import create_app

    logs.configure(settings.log_level)
    app = create_app(settings)
    log.info(
        "serving",
        extra={
            "url": f"http://{settings.host}:{settings.port}{settings.root_path}/",
            "model_url": settings.base_url(),
            "api_key": settings.resolved_api_key() is not None,
        },
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=10,
        proxy_headers=True,
    )
    GracefulServer(config).run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
