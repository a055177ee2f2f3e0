"""Helpers that prove peerwatch against real systems (``servers``: real servers on loopback)."""
