"""py-amqp and kombu (Celery): the driver's own ``socket_settings``.

::

    conn = amqp.Connection(host, socket_settings=socket_settings(5))
    conn = kombu.Connection(url, transport_options={"socket_settings": socket_settings(5)})

py-amqp sets its defaults after connecting (keepalive 60/10/9 and a 1,000 ms
``TCP_USER_TIMEOUT`` that ends slow links, celery/py-amqp#186), then these
settings over them; so zero-code protection alone does not change py-amqp's
sockets: use this. kombu passes ``transport_options`` on to py-amqp.
"""

from __future__ import annotations

from peerwatch.integrations.options import tcp_options_by_number

__all__ = ["socket_settings"]


def socket_settings(
    timeout: float = 10.0, *, idle_limit: float | None = None, probes: int = 3
) -> dict[int, int]:
    """py-amqp ``socket_settings`` (TCP option number -> value) for the budget."""
    return tcp_options_by_number(timeout, idle_limit=idle_limit, probes=probes)
