"""``peerwatch exporter``: a node-level Prometheus exporter of what ``peerwatch inspect`` sees.

Serves ``/metrics`` over HTTP: this host's TCP connections by state and
verdict, retransmitting and hung connections, and connections per process,
peer and service port with bounded label cardinality (``--top`` worst groups
plus "other"). Every scrape reads the sockets afresh (netlink sock_diag); nothing
runs between scrapes. Listens on loopback unless told otherwise:

    peerwatch exporter --host 0.0.0.0 --port 9465

Run it in the network namespace to watch (the host's: ``hostNetwork`` on
Kubernetes, see deploy/). Reading sockets needs no privilege; naming the owning
process of other users' sockets needs root (or CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH).
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 9465


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from peerwatch.cli.args import count_at_most, non_negative, port, resolvable_host

    parser = subparsers.add_parser(
        "exporter",
        help="serve this host's connection verdicts as Prometheus metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", type=resolvable_host, default="127.0.0.1", help="address to listen on (127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one ({DEFAULT_PORT})",
    )
    parser.add_argument(
        "--top",
        type=count_at_most(1000),
        default=20,
        metavar="K",
        help="label the K worst process/peer/port groups, the rest as 'other' (20)",
    )
    parser.add_argument(
        "--json", action="store_true", help="announce the address as JSON lines (docs/JSON.md)"
    )
    policy = parser.add_argument_group("verdict thresholds (seconds), as for inspect")
    policy.add_argument("--dead-after", type=non_negative, default=10.0, metavar="S")
    policy.add_argument("--close-wait-after", type=non_negative, default=60.0, metavar="S")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from peerwatch.cli.args import require_extras

    if (code := require_extras("exporter", "server", ["prometheus_client"])) is not None:
        return code
    import threading

    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    from peerwatch.assessment.model import AssessPolicy
    from peerwatch.exporter.collector import HostCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_cpu_seconds_total: the exporter's own cost
    policy = AssessPolicy(dead_after=args.dead_after, close_wait_after=args.close_wait_after)
    collector = HostCollector(top=args.top, policy=policy)
    registry.register(collector)
    try:
        server, _ = start_http_server(args.port, addr=args.host, registry=registry)
    except OSError as exc:  # address in use, not an address of this host, unresolvable
        print(
            f"peerwatch exporter: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    host, port = server.server_address[:2]
    collector.scrape_port = port
    host = host.decode() if isinstance(host, bytes) else host
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/metrics"
    if args.json:
        from peerwatch.cli.jsonout import emit

        emit("listening", host=host, port=port, metrics=url)
    else:
        print(f"peerwatch exporter: metrics on {url}", flush=True)
    try:
        threading.Event().wait()  # serve until interrupted (SIGINT; SIGTERM ends the process)
    finally:
        server.shutdown()
    return 0
