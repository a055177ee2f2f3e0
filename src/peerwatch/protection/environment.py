"""The environment that protects a Python program: ``PYTHONPATH`` with the bootstrap first.

``peerwatch run`` builds it; a container sets the same two variables itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from peerwatch.protection.settings import ENV_VAR, ProtectSettings

#: The directory holding the bootstrap ``sitecustomize.py``.
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")


def pythonpath(current: str | None) -> str:
    """``PYTHONPATH`` with the bootstrap first (once), then whatever was there."""
    rest = [p for p in (current or "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    return os.pathsep.join([BOOTSTRAP_DIR, *rest])


def protected_environment(settings: ProtectSettings, base: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``base`` in which every Python program started is protected with ``settings``."""
    env = dict(base)
    env[ENV_VAR] = settings.to_env()
    env["PYTHONPATH"] = pythonpath(base.get("PYTHONPATH"))
    return env
