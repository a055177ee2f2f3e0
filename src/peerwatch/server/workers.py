"""``run_workers``: one port, N worker processes, each accepting on its own SO_REUSEPORT socket.

The supervisor (the calling process) owns no listening socket and runs no event
loop. It holds the port with a bound, never-listening SO_REUSEPORT socket (so
``port=0`` resolves once for every worker, and the port stays ours while a
worker restarts), starts the workers, serves ``/metrics`` if asked, and waits:

- a worker that dies is reported (exit code or signal) and started again,
  after a back-off that grows while workers die young (a crash loop does not
  spin); its connections are lost, the other workers' are untouched;
- SIGTERM or SIGINT: every worker gets SIGTERM and says GOODBYE(GOING_AWAY) to
  its peers, with ``drain`` seconds to finish; a worker still there after
  ``drain`` + ``KILL_GRACE`` seconds is killed. A second signal kills at once.

A supervisor holds a lock on its metrics directory for its life; one that was
SIGKILLed leaves the directory behind, and the next one to start removes it
(``peerwatch.server.leftovers``).

SO_REUSEADDR on every socket means a restart binds at once even while the
previous run's connections sit in TIME_WAIT.

All workers of one run announce the same incarnation id in their HELLO, drawn
by the supervisor: a client that reconnects and lands on another worker does
not see a restart; a client that reconnects after the whole server restarted
does (``conn.peer_restarted``).

User handlers go to the workers by reference (pickled), so they must be
importable module-level functions; the worker processes are started with
``spawn``, so a script calling ``run_workers`` needs the usual
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any

from peerwatch.aio.client import make_config
from peerwatch.core.config import Config
from peerwatch.errors import ConfigError, PeerwatchError
from peerwatch.server.leftovers import claim, release, remove_abandoned
from peerwatch.server.sessions import check_store, session_settings
from peerwatch.server.worker import WorkerSpec, worker_main
from peerwatch.sessions.store import StoreFailed

log = logging.getLogger("peerwatch.server")

#: Seconds a worker may take to import, bind and report ready.
START_TIMEOUT = 30.0
#: Seconds past ``drain`` before a worker that has not exited is killed.
KILL_GRACE = 2.0
#: A worker that served less than this after reporting ready, or never got ready, is a
#: crash-loop suspect: back off more. Counted from ready, not from start: a start that fails
#: after a slow import (a loaded machine) is as much a crash loop as a fast one.
YOUNG = 1.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0


class StartError(PeerwatchError):
    """A worker could not start (bad handler, port taken, uvloop missing...)."""


@dataclass
class WorkerSlot:
    index: int
    process: Any = None  # multiprocessing.Process (spawn context)
    pipe: Pipe | None = None
    started_at: float = 0.0
    ready_at: float | None = None  # when it reported ready; None while starting
    restart_at: float | None = None
    backoff: float = BACKOFF_FIRST
    pid: int | None = None
    ready: bool = False  # reported ready and not seen dead since


@dataclass(frozen=True)
class Ready:
    """What ``on_ready`` gets once every worker listens."""

    host: str
    port: int
    pids: tuple[int, ...]
    loop: str
    metrics_port: int | None
    sessions: str | None = None  # where resumable sessions are kept, None: a plain server


@dataclass
class _State:
    stop: threading.Event = field(default_factory=threading.Event)
    signals: int = 0


def run_workers(
    handler: str | Callable[..., Any],
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    workers: int = 1,
    config: Config | None = None,
    max_connections: int | None = None,
    drain: float = 5.0,
    uvloop: bool = False,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    restart: bool = True,
    on_ready: Callable[[Ready], None] | None = None,
    stop: threading.Event | None = None,
    log_level: int = logging.WARNING,
    resume_window: float | None = None,
    session_store: str | None = None,
    **overrides: Any,
) -> int:
    """Serve ``handler`` on ``host:port`` from ``workers`` processes until SIGTERM/SIGINT.

    ``handler`` is ``"echo"``, ``"sink"``, ``"module:function"`` or an
    importable ``async def handler(conn)``. Keyword overrides are ``Config``
    fields. ``max_connections`` is per worker. ``metrics_port`` serves
    Prometheus ``/metrics`` summed over the workers. ``on_ready`` is called once
    all workers listen. Setting ``stop`` (from another thread) shuts down like
    SIGTERM. Returns 0 after a graceful shutdown; raises ``StartError`` when the
    workers cannot start, ``ConfigError`` for bad settings.

    ``resume_window`` serves resumable sessions (``peerwatch.serve(...,
    resume_window=)``), each worker keeping its own in-process sessions unless
    ``session_store`` names a Redis (``redis://HOST:PORT/DB``): then a session
    resumes on whichever worker the reconnect lands on (``server/sessions.py``).
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if drain < 0:
        raise ConfigError(f"drain must be >= 0 seconds, got {drain}")
    cfg = make_config(config, overrides)
    sessions = session_settings(resume_window, session_store, cfg)
    payload = _handler_payload(handler)
    if uvloop:
        from peerwatch.server.loop import loop_factory

        loop_factory(True)  # ConfigError here, not one per worker, when uvloop is missing
    if sessions is not None:
        try:
            check_store(sessions)
        except StoreFailed as exc:
            raise StartError(str(exc)) from exc
    holder = reserve_port(host, port)
    bound_host, bound_port = holder.getsockname()[:2]
    endpoint = None
    owner_lock: int | None = None
    state = _State(stop=stop if stop is not None else threading.Event())
    restore = _install_signal_handlers(state)
    slots = [WorkerSlot(i) for i in range(workers)]
    try:
        metrics_bound: int | None = None
        if metrics_port is not None:
            from peerwatch.server.metrics import DIRECTORY_PREFIX, MetricsEndpoint

            # what SIGKILLed supervisors left behind (their workers wrote there, then died)
            for path in remove_abandoned(tempfile.gettempdir(), DIRECTORY_PREFIX):
                log.info("removed %s, left behind by a supervisor that died", path)
            endpoint = MetricsEndpoint()
            owner_lock = claim(endpoint.directory)
            try:
                metrics_bound = endpoint.start(metrics_host, metrics_port)
            except OSError as exc:
                raise StartError(
                    f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}"
                ) from exc

        spec = WorkerSpec(
            handler=payload,
            host=host,
            port=bound_port,
            config=cfg,
            max_connections=max_connections,
            drain=drain,
            uvloop=uvloop,
            metrics_dir=endpoint.directory if endpoint is not None else None,
            log_level=log_level,
            incarnation=int.from_bytes(os.urandom(8), "big"),
            sessions=sessions,
        )
        context = multiprocessing.get_context("spawn")
        for slot in slots:
            _start(context, spec, slot)
        try:
            loops = {_await_ready(slot, state.stop) for slot in slots}
        except StartError:
            if state.stop.is_set():
                return 0  # asked to stop while starting: not a failure
            raise
        if endpoint is not None:
            endpoint.workers_alive = workers
        ready = Ready(
            host=str(bound_host),
            port=int(bound_port),
            pids=tuple(slot.pid or 0 for slot in slots),
            loop=",".join(sorted(loops)),
            metrics_port=metrics_bound,
            sessions=sessions.describe() if sessions is not None else None,
        )
        log.debug("listening on %s:%d with %d workers", ready.host, ready.port, workers)
        if on_ready is not None:
            on_ready(ready)
        _supervise(
            context=context,
            spec=spec,
            slots=slots,
            state=state,
            endpoint=endpoint,
            restart=restart,
        )
        return 0
    finally:
        _stop_all(slots, drain, state)
        restore()
        holder.close()
        if endpoint is not None:
            endpoint.close()
        if owner_lock is not None:
            release(owner_lock)


def reserve_port(host: str | None, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEADDR+SO_REUSEPORT socket holding ``host:port``.

    It never listens, so the kernel never hands it a connection; it only makes
    ``port=0`` resolve to one port shared by all workers, and fails early with
    EADDRINUSE when someone else (without SO_REUSEPORT) owns the port.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("multi-worker serving needs SO_REUSEPORT (Linux >= 3.9, BSD, macOS)")
    infos = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise StartError(f"cannot bind {host}:{port}: {exc}") from exc
    return sock


def _handler_payload(handler: str | Callable[..., Any]) -> str | bytes:
    if isinstance(handler, str):
        from peerwatch.server.handlers import resolve_handler

        resolve_handler(handler)  # fail here, not in N workers
        return handler
    try:
        return pickle.dumps(handler)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ConfigError(
            f"handler {handler!r} cannot be sent to worker processes ({exc}):"
            " use a module-level async function or a 'module:function' string"
        ) from exc


def _start(context: Any, spec: WorkerSpec, slot: WorkerSlot) -> None:
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=worker_main,
        args=(spec, slot.index, sender),
        name=f"peerwatch-worker-{slot.index}",
    )
    process.start()
    sender.close()
    slot.process = process
    slot.pipe = receiver
    slot.pid = process.pid
    slot.started_at = time.monotonic()
    slot.ready_at = None
    slot.restart_at = None
    slot.ready = False


def _await_ready(slot: WorkerSlot, stop: threading.Event | None = None) -> str:
    """Wait for the worker's ``ready`` (returns its loop name) or raise ``StartError``."""
    assert slot.pipe is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            raise StartError(f"worker {slot.index} was still starting when the server stopped")
        if slot.pipe.poll(0.05):
            try:
                message = slot.pipe.recv()
            except EOFError:
                message = ("error", "exited before it was ready")
            if message[0] == "ready":
                slot.ready = True
                slot.ready_at = time.monotonic()
                return str(message[3])
            raise StartError(f"worker {slot.index} (pid {slot.pid}) failed: {message[1]}")
        if not slot.process.is_alive() and not slot.pipe.poll(0):
            raise StartError(
                f"worker {slot.index} (pid {slot.pid}) {describe_exit(slot.process.exitcode)}"
                " before it was ready"
            )
    raise StartError(f"worker {slot.index} not ready after {START_TIMEOUT} s")


def _supervise(
    *,
    context: Any,
    spec: WorkerSpec,
    slots: list[WorkerSlot],
    state: _State,
    endpoint: Any,
    restart: bool,
) -> None:
    while not state.stop.is_set():
        alive = [s for s in slots if s.process is not None]
        wait([s.process.sentinel for s in alive], timeout=0.2)
        if state.stop.is_set():
            return  # a group-wide signal reaches the workers too: no restart then
        now = time.monotonic()
        for slot in slots:
            process = slot.process
            if process is not None and not process.is_alive():
                process.join()
                lived = now - slot.started_at
                young = slot.ready_at is None or now - slot.ready_at < YOUNG
                delay = slot.backoff if young else BACKOFF_FIRST
                slot.backoff = min(BACKOFF_MAX, delay * 2) if young else BACKOFF_FIRST
                log.warning(
                    "worker %d (pid %d) %s after %.1f s; its connections are lost%s",
                    slot.index,
                    slot.pid,
                    describe_exit(process.exitcode),
                    lived,
                    f"; restarting it in {delay:.1f} s" if restart else "",
                )
                slot.ready = False
                if endpoint is not None:
                    endpoint.worker_exited(slot.pid)
                if slot.pipe is not None:
                    slot.pipe.close()
                slot.process = slot.pipe = None
                slot.restart_at = now + delay if restart else None
            if slot.restart_at is not None and now >= slot.restart_at and not state.stop.is_set():
                _restart(context, spec, slot, endpoint, state.stop)
        if endpoint is not None:
            endpoint.workers_alive = sum(1 for s in slots if s.ready)
        if not restart and all(s.process is None for s in slots):
            log.error("every worker is gone and restart is off: stopping")
            return


def _restart(
    context: Any, spec: WorkerSpec, slot: WorkerSlot, endpoint: Any, stop: threading.Event
) -> None:
    old = slot.pid
    _start(context, spec, slot)
    try:
        _await_ready(slot, stop)
    except StartError as exc:
        log.error("restart of worker %d failed: %s", slot.index, exc)
        return  # the sentinel fires; the next round backs off and tries again
    if endpoint is not None:
        endpoint.restarts += 1
    log.warning("worker %d restarted: pid %d replaces pid %d", slot.index, slot.pid, old)


def _stop_all(slots: list[WorkerSlot], drain: float, state: _State) -> None:
    running = [s for s in slots if s.process is not None and s.process.is_alive()]
    for slot in running:
        _signal(slot.pid, signal.SIGTERM)
    deadline = time.monotonic() + drain + KILL_GRACE
    for slot in running:
        while slot.process.is_alive() and time.monotonic() < deadline and state.signals < 2:
            slot.process.join(0.05)
        if slot.process.is_alive():
            log.error("worker %d (pid %d) did not stop in time: killed", slot.index, slot.pid)
            _signal(slot.pid, signal.SIGKILL)
            slot.process.join(5.0)
    for slot in slots:
        if slot.process is not None:
            slot.process.join(0.1)
            slot.process.close()
            slot.process = None
        if slot.pipe is not None:
            slot.pipe.close()
            slot.pipe = None


def _signal(pid: int | None, signum: int) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _install_signal_handlers(state: _State) -> Callable[[], None]:
    """SIGTERM/SIGINT set the stop flag; a second one also skips the drain. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_signal(signum: int, frame: Any) -> None:
        state.signals += 1
        state.stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def describe_exit(exitcode: int | None) -> str:
    """``exited with code 3`` or ``was killed by SIGKILL``, from a multiprocessing exitcode."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"
