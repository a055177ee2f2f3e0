"""The programs the lab runs in its hosts (``python -m peerwatch.lab.agents.main``)."""
