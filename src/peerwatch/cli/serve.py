"""``peerwatch serve``: a peerwatch server on N worker processes sharing one port.

    peerwatch serve --host 0.0.0.0 --port 9870 --workers 4 --handler echo --metrics-port 9100
    peerwatch serve --workers 4 --resume-window 30 --session-store redis://127.0.0.1:6379/0

Prints one line when every worker listens, logs worker deaths and restarts to
stderr, and on SIGTERM/SIGINT says GOODBYE to every peer and exits 0. With
``--json`` those lines are JSON lines on stdout (docs/JSON.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from peerwatch.cli.args import (
    count,
    missing_extras,
    non_negative,
    port,
    positive,
    require_extras,
    resolvable_host,
)
from peerwatch.core.config import DEFAULT_HOST

DEFAULT_PORT = 9870
#: Seconds a detached session is kept when only ``--session-store`` is given (the library's).
DEFAULT_RESUME_WINDOW = 30.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a peerwatch server on N worker processes (SO_REUSEPORT), with metrics",
        description=(
            "Serve peerwatch connections on HOST:PORT from N worker processes, each with its"
            " own SO_REUSEPORT listening socket. SIGTERM/SIGINT: GOODBYE to every peer, at most"
            " --drain seconds to finish, exit 0. A worker that dies is reported and restarted."
        ),
    )
    parser.add_argument(
        "--host",
        type=resolvable_host,
        default=DEFAULT_HOST,
        help="address to bind (default %(default)s: this machine only; 0.0.0.0 or :: to serve"
        " the network)",
    )
    parser.add_argument("--port", type=port, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument("--workers", type=count, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--handler",
        default="echo",
        help="echo, sink, or package.module:function (async def f(conn)); default echo",
    )
    parser.add_argument("--metrics-port", type=port, help="serve Prometheus /metrics on this port")
    parser.add_argument(
        "--metrics-host", type=resolvable_host, default="127.0.0.1", help="default %(default)s"
    )
    parser.add_argument("--uvloop", action="store_true", help="run the workers on uvloop")
    parser.add_argument("--interval", type=positive, default=1.0, help="ping after s quiet")
    parser.add_argument("--timeout", type=positive, default=5.0, help="peer dead after s silent")
    parser.add_argument("--policy", choices=("fixed", "adaptive"), default="fixed")
    parser.add_argument(
        "--max-connections", type=count, help="per worker; beyond it GOODBYE(OVERLOADED)"
    )
    parser.add_argument("--handshake-timeout", type=positive, default=5.0)
    parser.add_argument("--max-frame", type=count, default=1024 * 1024, help="bytes")
    parser.add_argument("--send-queue", type=count, default=1024, help="messages per connection")
    parser.add_argument("--max-pings-per-interval", type=count, default=10)
    parser.add_argument(
        "--batch-pings",
        action="store_true",
        help="ping every client ahead of its own pings, in batches (many idle connections)",
    )
    parser.add_argument(
        "--drain", type=non_negative, default=5.0, help="seconds peers get at shutdown (default 5)"
    )
    parser.add_argument(
        "--no-restart", action="store_true", help="do not restart a worker that died"
    )
    parser.add_argument(
        "--resume-window",
        type=positive,
        help="serve resumable sessions (peerwatch.connect(..., resume=True)), each kept s"
        " seconds after its connection dies (default 30 when --session-store is given)",
    )
    parser.add_argument(
        "--session-store",
        type=session_store,
        help="where sessions are kept: memory (this worker only; the default) or"
        " redis://HOST:PORT/DB, rediss://..., unix:///path/redis.sock?db=N (any worker or host"
        " reaching that Redis resumes them; needs peerwatch[sessions])",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections too")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout (docs/JSON.md)")
    parser.set_defaults(func=run)


def session_store(text: str) -> str:
    """``memory`` or a Redis URL that redis-py can use; a typo is refused at parse time."""
    if text == "memory":
        return text
    if missing_extras(["redis"]):
        return text  # run() says which extra to install, the same way every command does
    from peerwatch.errors import ConfigError
    from peerwatch.sessions.redis import check_url

    try:
        return check_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    import logging

    from peerwatch.errors import ConfigError
    from peerwatch.server import Ready, StartError, run_workers

    metrics = args.metrics_port is not None
    if metrics and (missing := require_extras("serve", "server", ["prometheus_client"])):
        return missing
    if args.uvloop and (missing := require_extras("serve", "uvloop", ["uvloop"])):
        return missing
    shared = args.session_store not in (None, "memory")
    if shared and (missing := require_extras("serve", "sessions", ["redis"])):
        return missing
    resume_window = args.resume_window
    if resume_window is None and args.session_store is not None:
        resume_window = DEFAULT_RESUME_WINDOW

    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(
        level=logging.INFO, format="peerwatch serve: %(message)s", stream=sys.stderr
    )
    logging.getLogger("peerwatch").setLevel(level)
    logging.getLogger("peerwatch.server").setLevel(logging.INFO)

    def on_ready(ready: Ready) -> None:
        if args.json:
            from peerwatch.cli.jsonout import emit

            metrics = None
            if ready.metrics_port is not None:
                metrics = f"http://{_hostport(args.metrics_host, ready.metrics_port)}/metrics"
            emit(
                "listening",
                host=ready.host,
                port=ready.port,
                pids=list(ready.pids),
                loop=ready.loop,
                handler=args.handler,
                interval=args.interval,
                timeout=args.timeout,
                metrics=metrics,
                sessions=ready.sessions,
            )
            return
        pids = " ".join(str(pid) for pid in ready.pids)
        print(
            f"peerwatch serve: listening on {_hostport(ready.host, ready.port)}, {len(ready.pids)}"
            f" worker(s) (pids {pids}) on {ready.loop}, handler {args.handler},"
            f" interval {args.interval} s, timeout {args.timeout} s"
            + (f", {ready.sessions}" if ready.sessions is not None else ""),
            flush=True,
        )
        if ready.metrics_port is not None:
            print(
                f"peerwatch serve: metrics on http://{args.metrics_host}:{ready.metrics_port}"
                "/metrics",
                flush=True,
            )

    try:
        code = run_workers(
            args.handler,
            args.host,
            args.port,
            workers=args.workers,
            max_connections=args.max_connections,
            drain=args.drain,
            uvloop=args.uvloop,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            restart=not args.no_restart,
            on_ready=on_ready,
            log_level=level,
            interval=args.interval,
            timeout=args.timeout,
            policy=args.policy,
            handshake_timeout=args.handshake_timeout,
            max_frame=args.max_frame,
            send_queue=args.send_queue,
            max_pings_per_interval=args.max_pings_per_interval,
            batch_pings=args.batch_pings,
            resume_window=resume_window,
            session_store=args.session_store if shared else None,
        )
    except ConfigError as exc:
        print(f"peerwatch serve: {exc}", file=sys.stderr)
        return 2
    except StartError as exc:
        print(f"peerwatch serve: {exc}", file=sys.stderr)
        return 1
    if args.json:
        from peerwatch.cli.jsonout import emit

        emit("stopped", status=code)
    else:
        print("peerwatch serve: stopped", flush=True)
    return code


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
