"""One worker process of ``run_workers``: its own SO_REUSEPORT listener, loop and metrics.

A worker is started by the supervisor with the ``spawn`` method (a fresh
interpreter: no inherited event loop, threads or locks). It reports ``ready``
once its socket listens, and shuts down gracefully on SIGTERM: GOODBYE
(GOING_AWAY) to every peer, at most ``drain`` seconds for them to go, exit 0.
SIGINT is ignored: a Ctrl-C reaches the whole process group, and the
supervisor turns it into one orderly SIGTERM per worker. If the supervisor dies
without that, the kernel sends the worker SIGTERM (PR_SET_PDEATHSIG), so no
orphan keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from peerwatch.childproc import die_with_parent
from peerwatch.core.config import Config
from peerwatch.server.sessions import SessionSettings

log = logging.getLogger("peerwatch.server")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, picklable (sent to a fresh interpreter)."""

    handler: str | bytes  # "echo", "sink", "module:function", or a pickled callable
    host: str | None
    port: int
    config: Config
    max_connections: int | None = None
    backlog: int = 1024
    drain: float = 5.0
    uvloop: bool = False
    metrics_dir: str | None = None
    sweep_interval: float = 1.0
    log_level: int = logging.WARNING
    incarnation: int | None = None  # announced in HELLO by every worker of one run
    sessions: SessionSettings | None = None  # serve resumable sessions (None: plain)


def worker_main(spec: WorkerSpec, index: int, pipe: Pipe) -> None:
    """Entry point of a worker process (the target given to multiprocessing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    if not die_with_parent(signal.SIGTERM, parent):  # the supervisor died before we asked
        sys.exit(0)
    logging.basicConfig(
        level=spec.log_level,
        format=f"peerwatch worker {index} [%(process)d] %(levelname)s %(message)s",
    )
    if spec.metrics_dir is not None:
        from peerwatch.server.metrics import use_multiprocess_directory

        use_multiprocess_directory(spec.metrics_dir)
    from peerwatch.server.loop import run

    try:
        handler = load_handler(spec.handler)
        code = run(_serve(spec, index, handler, pipe, parent), use_uvloop=spec.uvloop)
    except Exception as exc:
        _report(pipe, ("error", f"{type(exc).__name__}: {exc}"))
        log.debug("worker %d failed", index, exc_info=True)
        sys.exit(1)
    sys.exit(code)


def load_handler(handler: str | bytes) -> Any:
    """Resolve a handler spec or unpickle a handler (after the metrics directory is set)."""
    if isinstance(handler, bytes):
        return pickle.loads(handler)
    from peerwatch.server.handlers import resolve_handler

    return resolve_handler(handler)


async def _serve(spec: WorkerSpec, index: int, handler: Any, pipe: Pipe, parent: int) -> int:
    from peerwatch.aio.serving import serve
    from peerwatch.server.loop import loop_name

    metrics = None
    if spec.metrics_dir is not None:
        from peerwatch.server.metrics import WorkerMetrics

        metrics = WorkerMetrics()
    sessions: dict[str, Any] = {}
    close_store = None
    if spec.sessions is not None:
        from peerwatch.server.sessions import open_store

        store, close_store = await open_store(spec.sessions)
        sessions = {"resume_window": spec.sessions.limits.window, "session_store": store}
    server = await serve(
        handler,
        spec.host,
        spec.port,
        config=spec.config,
        reuse_port=True,
        backlog=spec.backlog,
        max_connections=spec.max_connections,
        on_connection=metrics.watch if metrics is not None else None,
        on_accept=metrics.accept if metrics is not None else None,
        # one incarnation for the whole run, not one per worker: a client that reconnects
        # and lands on another worker must not conclude that the server restarted
        incarnation=spec.incarnation,
        **sessions,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    _report(pipe, ("ready", os.getpid(), server.port, loop_name(loop)))
    log.info("worker %d listening on port %d (%s)", index, server.port, loop_name(loop))
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), spec.sweep_interval)
        if metrics is not None:
            metrics.sweep(server)
        if os.getppid() != parent:
            log.warning("worker %d: the supervisor is gone, shutting down", index)
            break
    open_connections = len(server.connections)
    await server.shutdown("server shutting down", drain=spec.drain)
    await server.wait_closed()
    if close_store is not None:
        await close_store()
    if metrics is not None:
        metrics.sweep(server)
    log.info("worker %d stopped (%d connections told GOODBYE)", index, open_connections)
    return 0


def _report(pipe: Pipe, message: tuple[Any, ...]) -> None:
    # the supervisor may be gone; PR_SET_PDEATHSIG or the ppid check ends us then
    with contextlib.suppress(OSError):
        pipe.send(message)
