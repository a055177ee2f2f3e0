"""pika: the driver's own ``tcp_options`` (keepalive timers and TCP_USER_TIMEOUT by name).

::

    params = pika.ConnectionParameters(host, tcp_options=tcp_options(5))

pika turns SO_KEEPALIVE on when keepalive timers are given. The AMQP
heartbeat (``heartbeat=``) is pika's own application-level check and stays
useful: it notices a broker that is alive at the TCP level but hung.
"""

from __future__ import annotations

from peerwatch.integrations.options import tcp_options_by_name

__all__ = ["tcp_options"]


def tcp_options(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> dict[str, int]:
    """``ConnectionParameters(tcp_options=...)`` for the budget."""
    return tcp_options_by_name(timeout, idle_limit=idle_limit, probes=probes)
