"""Process lifecycle: load, warm up, serve with uvicorn, drain on SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType

import uvicorn

from model_server import logs
from model_server.api import create_app, wrap
from model_server.engine import Engine
from model_server.middleware import header_timeout_protocol
from model_server.settings import Settings

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


def serve(settings: Settings) -> int:
    logs.configure(settings.log_level)
    model_path = settings.resolved_model_path()
    engine = Engine(
        model_path,
        n_ctx=settings.n_ctx,
        n_batch=settings.n_batch,
        n_threads=settings.n_threads,
        n_gpu_layers=settings.n_gpu_layers,
        max_concurrency=settings.max_concurrency,
        max_queue=settings.max_queue,
        flash_attn=settings.flash_attn,
    )
    app = create_app(settings, engine)
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
        serving = asyncio.create_task(server.serve())
        if settings.warmup:
            t0 = time.perf_counter()
            await asyncio.to_thread(engine.warmup)
            log.info("warm-up done", extra={"seconds": round(time.perf_counter() - t0, 3)})
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():  # could not bind: uvicorn has logged why
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
        engine.close()
    log.info("stopped")
    return 0
