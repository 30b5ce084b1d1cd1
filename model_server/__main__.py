"""`python -m model_server <command>`.

Commands: `serve` (this package). Other modules plug in a subcommand by exposing
`add_parser(subparsers)` that adds a parser with `set_defaults(handler=callable(args) -> int)`;
they are listed in PLUGINS (`model_server.fetch` adds `fetch`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pydantic import ValidationError

PLUGINS = ("model_server.fetch",)


def _settings_help() -> str:
    from model_server.settings import Settings

    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else "<auto>"
        lines.append(f"  MODEL_SERVER_{name.upper():<22} default {default!s:<12} {field.description or ''}")
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    from model_server.server import serve
    from model_server.settings import Settings

    overrides = {
        k: v for k, v in {"host": args.host, "port": args.port, "model_path": args.model}.items() if v
    }
    try:
        settings = Settings(**overrides)
        settings.resolved_model_path()
    except (ValidationError, ValueError) as exc:
        print(f"model_server: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    return serve(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_server", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve a GGUF over HTTP (POST /predict, /v1/chat/completions, /v1/completions)",
        description="Serve a GGUF model. Configuration comes from MODEL_SERVER_* environment variables; "
        "the flags below override the matching variables.",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="listen address (MODEL_SERVER_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="listen port (MODEL_SERVER_PORT, default 5000)")
    serve.add_argument("--model", help="GGUF path (MODEL_SERVER_MODEL_PATH, default: embedded SmolLM2)")
    serve.set_defaults(handler=_serve)
    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
