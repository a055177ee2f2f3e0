"""Keep the budget on a protected socket when the program later sets the same options itself.

Some drivers set keepalive and ``TCP_USER_TIMEOUT`` again *after* connecting,
from their own defaults, over what protection applied: py-amqp (kombu, Celery)
puts back 60+10x9 s and a 1,000 ms user timeout, redis-py's asyncio client its
30+5x3 s keepalive. The lab measured what that costs: a request in flight to a
powered-off host still waiting at 60 s under ``peerwatch run --timeout 5``.

The rule (docs/DRIVERS.md, "Zero code"): on a socket protection applied its
options to, the options it *owns* -- SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL,
TCP_KEEPCNT, TCP_USER_TIMEOUT, each only where it was really set -- keep
peerwatch's values; a later ``setsockopt`` of one of them by the program is not
passed to the kernel (the call returns as if it had been), is remembered
(``defended``) and logged. Not "the stricter value wins": the five come from one
budget and only hold together (the user timeout replaces the keepalive probe
count as the give-up rule), and a driver's "stricter" value can be the wrong
one (py-amqp's 1,000 ms, celery/py-amqp#186). Every other option (TCP_NODELAY,
buffers, SO_RCVTIMEO) passes through untouched, as do sockets protection left
alone. ``defend=0`` (``peerwatch run --no-defend``) turns the rule off.

Sockets are known by identity (a weak reference), not by descriptor: a closed
socket's number reused by another is never mistaken for it, and
``peerwatch.guard(sock)`` called explicitly by the program still applies its own
values (it works on a borrowed view of the descriptor). A driver that wraps the
descriptor in a new socket object after connecting is not seen (none of the
drivers in docs/DRIVERS.md does).
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False  # typing costs milliseconds; this runs in every protected program

if TYPE_CHECKING:
    import weakref

    from peerwatch.kernel.guarding import GuardResult

Option = tuple[int, int]  # (level, option number)


class Kept:
    """The options protection holds on one socket (option -> name), and what was refused."""

    __slots__ = ("options", "peer", "refused")

    def __init__(self, options: dict[Option, str], peer: str) -> None:
        self.options = options
        self.peer = peer
        self.refused: dict[str, object] = {}  # name -> the value the program last asked for


#: The defended sockets. Made on the first protected connection: ``weakref`` costs 1.4 ms
#: to import, and the hooks are installed at start-up in every protected program.
_kept: weakref.WeakKeyDictionary[socket.socket, Kept] | None = None


def owned_options() -> dict[str, Option | None]:
    """The options protection owns, by the name ``apply_knobs`` reports them under."""
    from peerwatch.kernel.knobs import TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_USER_TIMEOUT

    tcp = socket.IPPROTO_TCP
    return {
        "SO_KEEPALIVE": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "TCP_KEEPIDLE": None if TCP_KEEPIDLE is None else (tcp, TCP_KEEPIDLE),
        "TCP_KEEPINTVL": None if TCP_KEEPINTVL is None else (tcp, TCP_KEEPINTVL),
        "TCP_KEEPCNT": None if TCP_KEEPCNT is None else (tcp, TCP_KEEPCNT),
        "TCP_USER_TIMEOUT": None if TCP_USER_TIMEOUT is None else (tcp, TCP_USER_TIMEOUT),
    }


def keep(sock: socket.socket, result: GuardResult, peer: str) -> None:
    """From now on, refuse the program's changes to the options ``result`` set on ``sock``."""
    global _kept
    owned = owned_options()
    options = {
        option: name
        for name, outcome in result.applied.options.items()
        if outcome == "set" and (option := owned.get(name)) is not None
    }
    if not options:
        return
    if _kept is None:
        import weakref

        _kept = weakref.WeakKeyDictionary()
    _kept[sock] = Kept(options, peer)


def forget(sock: socket.socket) -> None:
    """Stop defending ``sock`` (before protection applies its options to it again)."""
    if _kept is not None:
        _kept.pop(sock, None)


def refuses(sock: socket.socket, level: int, option: int, value: object) -> bool:
    """True when ``setsockopt(level, option, value)`` must not reach the kernel (logged here).

    Called for every ``setsockopt`` in the program, so the common answer is fast:
    one dictionary lookup when no socket is defended, two otherwise; a call
    setting an owned option of a defended socket reads the value in force
    (one ``getsockopt``) to tell a real conflict from a repeat. A value of
    the wrong type, or a call on a closed socket, is let through, so the program
    gets the error it would get without peerwatch.
    """
    if not _kept:
        return False
    kept = _kept.get(sock)
    if kept is None:
        return False
    name = kept.options.get((level, option))
    if name is None or not isinstance(value, (int, bytes, bytearray, memoryview)):
        return False
    try:  # the value in force: the budget's, or what an explicit guard() set since
        held = sock.getsockopt(level, option)
    except OSError:  # closed or detached: the program gets its EBADF, as without us
        return False
    asked: object = int(value) if isinstance(value, int) else bytes(value)
    if asked != held:
        kept.refused[name] = asked
        from peerwatch.protection.logs import logger

        logger().info(
            "defended fd %d -> %s: kept %s %d (the program set %r)",
            sock.fileno(),
            kept.peer,
            name,
            held,
            asked,
        )
    return True


def defended(sock: socket.socket) -> dict[str, object]:
    """The owned options the program tried to change on ``sock``: name -> the value it asked for.

    Empty when the socket is not protected or the program never disagreed.
    """
    kept = None if _kept is None else _kept.get(sock)
    return {} if kept is None else dict(kept.refused)
