"""Process lifecycle: load, warm up, serve with uvicorn, drain on SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

import uvicorn

from model_server import logs
from model_server.api import create_app, wrap
from model_server.embeddings import Embedder
from model_server.engine import Engine
from model_server.middleware import header_timeout_protocol
from model_server.settings import Settings, usable_cpus

log = logging.getLogger("model_server")


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT first drains: readiness fails, new requests get 503, in-flight ones
    finish (up to drain_timeout_s), then uvicorn stops. A second SIGINT forces exit. The signal is not
    re-raised after shutdown, so a clean drain exits 0."""

    def __init__(self, config: uvicorn.Config, engine: Engine, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.engine = engine
        self.drain_timeout_s = drain_timeout_s
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None:
            if sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        log.info("signal received; draining", extra={"signal": signal.Signals(sig).name})
        self.engine.start_draining()
        self._drain_task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while self.engine.inflight() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = self.engine.inflight()
        if left:
            log.warning("drain timeout; cancelling unfinished requests", extra={"unfinished": left})
            self.engine.cancel_all()
            deadline = time.monotonic() + 5
            while self.engine.inflight() > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        else:
            log.info("drained; all in-flight requests finished")
        # Let the last response bytes reach the clients before connections are closed.
        await asyncio.sleep(0.2)
        self.should_exit = True


class BindError(Exception):
    """The listen address cannot be bound (port in use, unknown address): one line for the user."""


def bind(host: str, port: int) -> socket.socket:
    """Bind the listen socket before anything slow happens, so a taken port fails at once and clearly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT does not block
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BindError(
                f"port {port} on {host} is already in use (another server?); choose another one: "
                f"PORT={port + 1} make serve, or MODEL_SERVER_PORT={port + 1}"
            ) from None
        raise BindError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); check MODEL_SERVER_HOST"
        ) from None
    sock.set_inheritable(True)
    return sock


def log_threads(settings: Settings) -> None:
    """Say how many CPU threads llama.cpp uses and how to change it; warn when the machine is busy."""
    usable = usable_cpus()
    how = "MODEL_SERVER_N_THREADS, or THREADS=N make serve"
    if "n_threads" in settings.model_fields_set:
        msg = f"llama.cpp uses {settings.n_threads} CPU thread(s), as set ({how})"
    else:
        msg = (
            f"llama.cpp uses {settings.n_threads} CPU thread(s): {usable} usable CPU(s), one left for HTTP "
            f"and other work; change it with {how}"
        )
    log.info(msg, extra={"n_threads": settings.n_threads, "usable_cpus": usable})
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        return
    if settings.n_gpu_layers == 0 and load > max(usable - settings.n_threads, 0) + 0.5:
        advice = (
            "if answers are slow, try fewer: MODEL_SERVER_N_THREADS=1"
            if settings.n_threads > 1
            else "expect slower answers than on an idle machine"
        )
        log.warning(
            f"the machine is busy (load average {load:.1f} on {usable} CPUs): llama.cpp's threads spin and "
            f"slow down badly on oversubscribed cores; {advice}",
            extra={"load_average": round(load, 2), "usable_cpus": usable},
        )


def serve(settings: Settings) -> int:
    logs.configure(settings.log_level)
    try:
        sock = bind(settings.host, settings.port)
    except BindError as exc:
        print(f"model_server: {exc}", file=sys.stderr)
        return 2
    model_path = settings.resolved_model_path()
    log_threads(settings)
    engine = Engine(
        model_path,
        n_ctx=settings.n_ctx,
        n_batch=settings.n_batch,
        n_threads=settings.n_threads,
        n_gpu_layers=settings.n_gpu_layers,
        max_concurrency=settings.max_concurrency,
        max_queue=settings.max_queue,
        flash_attn=settings.flash_attn,
        prefix_cache=settings.prefix_cache,
        cache_seqs=settings.prefix_cache_seqs,
        prefill_chunk=settings.resolved_prefill_chunk(),
        serial_prefill=settings.resolved_prefill_serial(),
    )
    embedder = None
    if settings.embeddings:
        embedder = Embedder(
            engine.model,
            engine.meta,
            n_ctx=engine.n_ctx_seq,
            n_threads=settings.resolved_embeddings_threads(),
            max_inflight=settings.embeddings_max_inflight,
        )
    app = create_app(settings, engine, embedder)
    engine.start()
    config = uvicorn.Config(
        wrap(app, settings),
        host=settings.host,
        port=settings.port,
        http=header_timeout_protocol(settings.header_timeout_s),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,
    )
    server = DrainingServer(config, engine, settings.drain_timeout_s)

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        if settings.warmup:
            t0 = time.perf_counter()
            await asyncio.to_thread(engine.warmup)
            log.info("warm-up done", extra={"seconds": round(time.perf_counter() - t0, 3)})
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():  # uvicorn could not start: it has logged why
            await serving
            raise SystemExit(1)
        app.state.ms.ready = True
        log.info(
            "ready", extra={"host": settings.host, "port": settings.port, "model": app.state.ms.model_id}
        )
        await serving

    try:
        asyncio.run(main())
    finally:
        app.state.ms.serving.close()
        engine.stop()
        if embedder is not None:
            embedder.close()
        engine.close()
        sock.close()
    log.info("stopped")
    return 0
