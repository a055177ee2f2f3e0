"""peerwatch's start-up bootstrap: ``peerwatch run`` puts this directory first on PYTHONPATH.

Python imports ``sitecustomize`` at start-up (the ``site`` module), so this
runs before the program. It reads ``PEERWATCH_PROTECT``, starts protection
and then imports the ``sitecustomize`` this one shadows, if there is one, so
a distribution's or a user's own start-up code still runs. A bad setting or
an interpreter without peerwatch gives one line on stderr, and the program
runs unprotected: protection must never stop a program from starting.
"""

import os
import sys


def _start() -> None:
    text = os.environ.get("PEERWATCH_PROTECT")
    if text is None:
        return
    try:
        from peerwatch.errors import ConfigError
        from peerwatch.protection import start
        from peerwatch.protection.settings import ProtectSettings
    except ImportError:
        sys.stderr.write(
            f"peerwatch: {sys.executable} cannot import peerwatch; connections are NOT protected\n"
        )
        return
    try:
        start(ProtectSettings.from_env(text))
    except ConfigError as exc:
        sys.stderr.write(f"peerwatch: {exc}; connections are NOT protected\n")


def _chain() -> None:
    """Import the next ``sitecustomize`` on the path, the one this file hides."""
    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        import sitecustomize  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        if ours is not None:
            sys.modules["sitecustomize"] = ours
    finally:
        sys.path[:] = saved


_start()
_chain()
