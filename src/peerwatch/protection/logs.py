"""The ``peerwatch.protect`` logger, in a module of its own: every part of protection logs to it.

Created on first use: ``logging`` is imported on the first line someone may
read, not at start-up (see ``settings``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds; this runs in every protected program

if TYPE_CHECKING:
    import logging

_logger: logging.Logger | None = None


def logger() -> logging.Logger:
    """The ``peerwatch.protect`` logger, created on first use."""
    global _logger
    if _logger is None:
        import logging

        _logger = logging.getLogger("peerwatch.protect")
    return _logger
