"""The defence rule, in process: on a protected socket, the options protection owns keep
peerwatch's values when the program sets them again; everything else passes through."""

from __future__ import annotations

import gc
import logging
import socket
import sys
from collections.abc import Iterator

import pytest

import peerwatch
from peerwatch.protection import defended

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux options")

TCP = socket.IPPROTO_TCP
USER_TIMEOUT = 18  # TCP_USER_TIMEOUT


def owned(sock: socket.socket) -> tuple[int, int, int, int, int]:
    get = sock.getsockopt
    return (
        get(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        get(TCP, socket.TCP_KEEPIDLE),
        get(TCP, socket.TCP_KEEPINTVL),
        get(TCP, socket.TCP_KEEPCNT),
        get(TCP, USER_TIMEOUT),
    )


def set_like_py_amqp(sock: socket.socket) -> None:
    """What py-amqp does after connecting (its DEFAULT_SOCKET_SETTINGS), and keepalive off."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
    sock.setsockopt(TCP, socket.TCP_KEEPIDLE, 60)
    sock.setsockopt(TCP, socket.TCP_KEEPINTVL, 10)
    sock.setsockopt(TCP, socket.TCP_KEEPCNT, 9)
    sock.setsockopt(TCP, USER_TIMEOUT, 1000)


@pytest.fixture
def protection() -> Iterator[None]:
    try:
        yield
    finally:
        peerwatch.unprotect()


@pytest.fixture
def address(loopback_server: socket.socket) -> tuple[str, int]:
    host, port = loopback_server.getsockname()
    return host, port


def test_a_protected_socket_keeps_the_budget_and_says_what_was_refused(
    protection: None, address: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerwatch.protect")
    peerwatch.protect(timeout=5, include_loopback=True)
    with socket.create_connection(address) as sock:
        before = owned(sock)
        assert before == (1, 2, 1, 3, 4600)
        set_like_py_amqp(sock)
        assert owned(sock) == before
        assert defended(sock) == {
            "SO_KEEPALIVE": 0,
            "TCP_KEEPIDLE": 60,
            "TCP_KEEPINTVL": 10,
            "TCP_KEEPCNT": 9,
            "TCP_USER_TIMEOUT": 1000,
        }
    lines = [r.getMessage() for r in caplog.records if "defended" in r.getMessage()]
    assert len(lines) == 5
    assert lines[-1].endswith(": kept TCP_USER_TIMEOUT 4600 (the program set 1000)")


def test_the_same_value_is_no_conflict_and_other_options_pass_through(
    protection: None, address: tuple[str, int]
) -> None:
    peerwatch.protect(timeout=5, include_loopback=True)
    with socket.create_connection(address) as sock:
        sock.setsockopt(TCP, socket.TCP_KEEPCNT, 3)  # what peerwatch set already
        sock.setsockopt(TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setsockopt(TCP, socket.TCP_KEEPIDLE, 60)
        assert sock.getsockopt(TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
        assert defended(sock) == {"TCP_KEEPIDLE": 60}


def test_sockets_protection_left_alone_and_defend_off_take_the_programs_values(
    protection: None, address: tuple[str, int]
) -> None:
    peerwatch.protect(timeout=5)  # loopback left alone
    with socket.create_connection(address) as sock:
        set_like_py_amqp(sock)
        assert owned(sock) == (0, 60, 10, 9, 1000)
    peerwatch.protect(timeout=5, include_loopback=True, defend=False)
    with socket.create_connection(address) as sock:
        assert owned(sock) == (1, 2, 1, 3, 4600)  # protected...
        set_like_py_amqp(sock)
        assert owned(sock) == (0, 60, 10, 9, 1000)  # ...and the program may change it
        assert defended(sock) == {}


def test_an_explicit_guard_call_still_applies_and_is_then_kept(
    protection: None, address: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="peerwatch.protect")
    peerwatch.protect(timeout=5, include_loopback=True)
    with socket.create_connection(address) as sock:
        result = peerwatch.guard(sock, 30)
        assert result.complete
        held = result.knobs.user_timeout_ms
        assert sock.getsockopt(TCP, USER_TIMEOUT) == held > 20000
        sock.setsockopt(TCP, USER_TIMEOUT, held)  # what is in force already: no conflict
        assert defended(sock) == {}
        sock.setsockopt(TCP, USER_TIMEOUT, 1000)
        assert sock.getsockopt(TCP, USER_TIMEOUT) == held
        assert defended(sock) == {"TCP_USER_TIMEOUT": 1000}
    lines = [r.getMessage() for r in caplog.records if "defended" in r.getMessage()]
    assert lines and lines[-1].endswith(f"kept TCP_USER_TIMEOUT {held} (the program set 1000)")


def test_a_bad_value_fails_as_it_would_without_peerwatch(
    protection: None, address: tuple[str, int]
) -> None:
    peerwatch.protect(timeout=5, include_loopback=True)
    with socket.create_connection(address) as sock:
        with pytest.raises(TypeError):
            sock.setsockopt(TCP, USER_TIMEOUT, "1000")  # type: ignore[call-overload]
        with pytest.raises(OSError):
            sock.setsockopt(TCP, socket.TCP_KEEPINTVL, None, 4)  # optlen form: the kernel decides
    with pytest.raises(OSError):  # closed: EBADF, not a silent success
        sock.setsockopt(TCP, USER_TIMEOUT, 1000)


def test_a_descriptor_number_reused_by_another_socket_is_not_defended(
    protection: None, address: tuple[str, int]
) -> None:
    gc.collect()  # garbage sockets of earlier tests closed now, not between the two below
    peerwatch.protect(timeout=5, include_loopback=True)
    first = socket.create_connection(address)
    fd = first.fileno()
    first.close()
    del first
    gc.collect()
    peerwatch.protect(timeout=5)  # the next one is left alone (loopback)
    with socket.create_connection(address) as second:
        assert second.fileno() == fd
        second.setsockopt(TCP, USER_TIMEOUT, 1000)
        assert second.getsockopt(TCP, USER_TIMEOUT) == 1000


def test_unprotect_removes_the_setsockopt_hook(protection: None) -> None:
    peerwatch.protect(timeout=5)
    assert "setsockopt" in vars(socket.socket)
    peerwatch.unprotect()
    assert "setsockopt" not in vars(socket.socket)  # the inherited original is back
