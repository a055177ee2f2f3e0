"""Kernel knobs land on real sockets, and accepted sockets inherit them from the listener."""

from __future__ import annotations

import socket
import sys

import pytest

from peerwatch.aio.sockets import listening_socket
from peerwatch.core.config import Config
from peerwatch.kernel.knobs import TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, apply_knobs, knobs_for

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket options")


def read_knobs(sock: socket.socket) -> dict[str, int]:
    get = sock.getsockopt
    return {
        "nodelay": get(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "keepalive": get(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": get(socket.IPPROTO_TCP, TCP_KEEPIDLE),
        "intvl": get(socket.IPPROTO_TCP, TCP_KEEPINTVL),
        "cnt": get(socket.IPPROTO_TCP, TCP_KEEPCNT),
        "user_timeout": get(socket.IPPROTO_TCP, 18),
    }


@linux
def test_apply_knobs_sets_every_option_and_says_so() -> None:
    knobs = knobs_for(12.0)
    with socket.socket() as sock:
        applied = apply_knobs(sock, knobs)
        assert applied.complete, applied.describe()
        assert read_knobs(sock) == {
            "nodelay": 1,
            "keepalive": 1,
            "idle": knobs.keepalive_idle,
            "intvl": knobs.keepalive_interval,
            "cnt": 3,
            "user_timeout": 12000,
        }


@linux
def test_accepted_sockets_inherit_the_listeners_knobs() -> None:
    cfg = Config(interval=2.0, timeout=10.0)
    knobs = knobs_for(cfg.kernel_bound)
    listener = listening_socket("127.0.0.1", 0, cfg)
    listener.setblocking(True)
    with listener, socket.create_connection(listener.getsockname()) as client:
        accepted, _ = listener.accept()
        with accepted:
            # every knob, so serve() need set none per accepted socket (it sets none)
            assert read_knobs(accepted) == {
                "nodelay": 1,
                "keepalive": 1,
                "idle": knobs.keepalive_idle,
                "intvl": knobs.keepalive_interval,
                "cnt": knobs.keepalive_count,
                "user_timeout": knobs.user_timeout_ms,
            }
        assert read_knobs(client)["keepalive"] == 0  # a plain socket has none: the test can fail


def test_a_failing_option_is_reported_not_raised() -> None:
    sock = socket.socket()
    sock.close()  # every setsockopt now fails with EBADF
    applied = apply_knobs(sock, knobs_for(5.0))
    assert not applied.complete
    assert set(applied.missing()) == set(applied.options)
    assert all(v in ("failed", "unavailable") for v in applied.options.values())
