"""`make chat`: the model server (embedded model unless --model) and the chat UI on this machine.

Starts `python -m model_server serve` and `python -m chat_ui` as child processes on 127.0.0.1, prints the
UI's URL as soon as the page is up and says when the model is ready; their JSON logs are passed through,
each line tagged `[model]` or `[ui]`. Ctrl-C (or either process exiting) stops both: SIGTERM, then SIGKILL
after 30 s. Exit code: 0 after Ctrl-C or SIGTERM; when a child ends by itself, its exit code (1 if that
was 0); 2 for a busy port.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 30.0


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def status(url: str) -> int | None:
    """HTTP status of GET url (None: nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def pipe(proc: subprocess.Popen[bytes], tag: str) -> threading.Thread:
    def run() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            sys.stdout.write(f"[{tag}] {raw.decode('utf-8', errors='replace')}")
            sys.stdout.flush()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def start(cmd: list[str], env: dict[str, str], tag: str) -> subprocess.Popen[bytes]:
    # Own session: Ctrl-C reaches only this launcher, which stops the children in order.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pipe(proc, tag)
    return proc


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make chat", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address both listen on (HOST)")
    parser.add_argument("--model-port", type=int, default=5000, help="model server port (PORT)")
    parser.add_argument("--ui-port", type=int, default=7860, help="chat UI port (CHAT_PORT)")
    parser.add_argument("--model", type=Path, help="GGUF to serve (MODEL; default: the embedded SmolLM2)")
    args = parser.parse_args(argv)

    for port, variable in ((args.model_port, "PORT"), (args.ui_port, "CHAT_PORT")):
        if port_in_use(args.host, port):
            print(
                f"make chat: {args.host}:{port} is already in use; pick another port, e.g. "
                f"`make chat {variable}={port + 1}`",
                file=sys.stderr,
            )
            return 2
    model_url = f"http://{args.host}:{args.model_port}"
    ui_url = f"http://{args.host}:{args.ui_port}/"
    model_env = {"MODEL_SERVER_HOST": args.host, "MODEL_SERVER_PORT": str(args.model_port)}
    if args.model:
        model_env["MODEL_SERVER_MODEL_PATH"] = str(args.model.resolve())
    ui_env = {
        "CHAT_UI_HOST": args.host,
        "CHAT_UI_PORT": str(args.ui_port),
        "CHAT_UI_MODEL_URL": model_url,
    }
    # SIGTERM (kill, a CI runner) stops both children like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    procs = [
        start([sys.executable, "-m", "model_server", "serve"], model_env, "model"),
        start([sys.executable, "-m", "chat_ui"], ui_env, "ui"),
    ]
    announced = {"ui": False, "model": False}
    try:
        while True:
            for proc, name in zip(procs, ("model server", "chat UI"), strict=True):
                code = proc.poll()
                if code is not None:
                    print(f"make chat: the {name} exited with code {code}; stopping", file=sys.stderr)
                    return code or 1
            if not announced["ui"] and status(ui_url + "healthz") == 200:
                announced["ui"] = True
                print(f"\n  Chat UI: {ui_url}   (model server: {model_url}; Ctrl-C stops both)\n", flush=True)
            if not announced["model"] and status(model_url + "/readyz") == 200:
                announced["model"] = True
                print(f"\n  Model ready at {model_url}: ask away on {ui_url}\n", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nmake chat: stopping the chat UI and the model server", file=sys.stderr)
        return 0
    finally:
        stop(list(reversed(procs)))


if __name__ == "__main__":
    sys.exit(main())
