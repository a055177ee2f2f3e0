"""Running peerwatch as a server: N worker processes on one port, metrics, built-in handlers.

``run_workers(handler, host, port, workers=N)`` is what ``peerwatch serve``
runs, and is open to user handlers. This package is a tool: it may use the
extras (prometheus-client, uvloop), imported only where needed.
"""

from __future__ import annotations

from peerwatch.server.workers import Ready, StartError, run_workers

__all__ = ["Ready", "StartError", "run_workers"]
