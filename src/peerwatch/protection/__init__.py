"""Zero-code protection: every TCP connection a Python program opens gets ``guard``.

Three ways in, one mechanism:

- ``peerwatch run --timeout 5 -- python app.py``: a bootstrap directory with a
  ``sitecustomize`` is put first on ``PYTHONPATH`` (as ``opentelemetry-instrument``
  does) and the settings travel in ``PEERWATCH_PROTECT``;
- ``PEERWATCH_PROTECT=timeout=5,idle_limit=300`` plus that ``PYTHONPATH`` in a
  container's environment (``peerwatch run --print-pythonpath`` prints it);
- ``peerwatch.protect(timeout=5)`` once at start-up, in code.

It acts once per connection, when it is made (``socket.socket.connect``,
``connect_ex``, ``accept``; libpq options for psycopg), never per send or recv,
and imports nothing at start-up that the program does not import itself:
the hooks are installed when the program imports ``socket`` or ``psycopg``.
Each connection gets one log line on the ``peerwatch.protect`` logger: INFO
for what was applied, DEBUG for what was left alone (loopback, Unix sockets),
WARNING when an option could not be set, and INFO when the program tried to
change an option protection owns on a protected socket and was refused
(``defence``: the budget stays; ``defend=0`` lets the program's value through).
"""

from __future__ import annotations

from peerwatch.protection import state
from peerwatch.protection.imports import after_import, cancel

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    import socket

    from peerwatch.protection.settings import ProtectSettings

__all__ = ["ENV_VAR", "ProtectSettings", "defended", "protect", "start", "unprotect"]


def protect(
    timeout: float = 10.0,
    *,
    idle_limit: float | None = None,
    include_loopback: bool = False,
    accepted: bool = False,
    probes: int = 3,
    defend: bool = True,
) -> ProtectSettings:
    """Protect every TCP connection this process opens from now on; returns the settings.

    ``timeout``: a dead peer becomes an error within this many seconds, idle
    or busy. ``idle_limit``: a load balancer's or NAT's idle timeout on the
    path; the first keepalive probe comes before it. Loopback connections are
    left alone unless ``include_loopback``; accepted connections are protected
    only with ``accepted``. ``defend``: a program (a driver) that sets keepalive
    or the user timeout again on a protected socket does not undo the budget
    (``peerwatch.protection.defence``). Calling it again replaces the settings. Connections
    made before the call are not touched (``peerwatch.guard`` them).
    Raises ``ConfigError`` for settings that cannot work.
    """
    from peerwatch.protection.settings import ProtectSettings

    settings = ProtectSettings(
        timeout,
        idle_limit=idle_limit,
        include_loopback=include_loopback,
        accepted=accepted,
        probes=probes,
        defend=defend,
    )
    start(settings)
    return settings


def start(settings: ProtectSettings) -> None:
    """Put ``settings`` in force and install the hooks (now, or when the modules are imported)."""
    state.current = settings
    if settings.log:
        _log_to_stderr(settings.log)
    after_import("socket", _install_socket_hooks)
    after_import("psycopg", _patch_psycopg)


def unprotect() -> None:
    """Stop protecting new connections and remove the hooks. Protected ones keep their options."""
    import sys

    state.current = None
    cancel("socket")
    cancel("psycopg")
    if "peerwatch.protection.sockets" in sys.modules:
        sys.modules["peerwatch.protection.sockets"].uninstall()
    if "peerwatch.protection.libpq" in sys.modules:
        sys.modules["peerwatch.protection.libpq"].unpatch()


def _install_socket_hooks(_socket: object) -> None:
    from peerwatch.protection import sockets

    sockets.install()


def _patch_psycopg(psycopg: object) -> None:
    from peerwatch.protection import libpq

    libpq.patch(psycopg)  # type: ignore[arg-type]


def _log_to_stderr(level: str) -> None:
    """``log=info|debug``: print the per-connection lines on stderr, prefixed ``peerwatch:``."""
    import logging

    logger = logging.getLogger("peerwatch.protect")
    if not any(getattr(h, "_peerwatch", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("peerwatch: %(message)s"))
        handler._peerwatch = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False  # printed here: not a second time by the program's handlers
    logger.setLevel(logging.DEBUG if level == "debug" else logging.INFO)


def defended(sock: socket.socket) -> dict[str, object]:
    """The options protection owns that the program tried to change on ``sock``, and to what.

    ``{"TCP_USER_TIMEOUT": 1000, ...}``: refused, the kernel kept peerwatch's values.
    """
    from peerwatch.protection import defence

    return defence.defended(sock)


def __getattr__(name: str) -> object:
    """``ProtectSettings`` and ``ENV_VAR`` on first use (the bootstrap imports what it needs)."""
    if name in ("ProtectSettings", "ENV_VAR"):
        from peerwatch.protection import settings

        return getattr(settings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
