"""The protection settings in force, in a module of its own so the bootstrap sets them cheaply.

The hooks read ``current`` on every connection; None means protection is off
(hooks installed earlier then do nothing).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds at start-up
if TYPE_CHECKING:
    from peerwatch.protection.settings import ProtectSettings

current: ProtectSettings | None = None
