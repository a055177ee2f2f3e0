"""The lab's side of its agents: start them in a host, send commands, read their events.

Agents (``peerwatch.lab.agents.main``) speak JSON lines: commands on stdin, events on
stdout. One reader thread per agent puts ``(name, event)`` on a queue shared by
the scenario, so the runner waits on one queue for everything. stderr goes to
a temporary file, never a pipe: nobody reads a pipe while a scenario runs, and
an agent blocked on a full stderr pipe would look like a hung peer.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from peerwatch.childproc import file_tail, start_json_reader
from peerwatch.lab.hosts import KODOS, Host, Lab
from peerwatch.lab.settings import LabSettings
from peerwatch.lab.strategies import Strategy, port_of

AGENT = "peerwatch.lab.agents.main"
#: Seconds to wait for agents to start (python start-up on a busy 2-core CI machine).
START_TIMEOUT = 20.0


class Agent:
    """A process in a lab host speaking JSON lines; its events go to a shared queue."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        sink: queue.Queue[tuple[str, Any]],
        stderr: IO[bytes],
    ) -> None:
        self.name = name
        self.proc = proc
        self.stderr = stderr
        self._lock = threading.Lock()
        assert proc.stdout is not None  # spawned with stdout=PIPE
        self._reader = start_json_reader(
            proc.stdout,
            lambda record: sink.put((name, record)),
            lambda: sink.put((name, {"ev": "exit", "t": time.monotonic()})),
            name=f"agent-{name}",
        )

    def send(self, command: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if stdin is None:
            return
        with self._lock:
            try:
                stdin.write((json.dumps(command) + "\n").encode())
                stdin.flush()
            except (OSError, ValueError):
                pass  # the agent is gone (crash, power-off): nothing to tell

    def stderr_tail(self, size: int = 600) -> str:
        """The end of what the agent wrote to stderr (a traceback, usually)."""
        return file_tail(self.stderr, size)


def start_agent(
    lab: Lab, host: Host, name: str, args: list[str], sink: queue.Queue[tuple[str, Any]]
) -> Agent:
    # closed by run_scenario once the agent is gone (the Agent outlives this function)
    stderr = tempfile.TemporaryFile(prefix=f"pwlab-{name}-")  # noqa: SIM115
    try:
        proc = lab.spawn_python(host, AGENT, args, stderr)
    except BaseException:
        stderr.close()
        raise
    return Agent(name, proc, sink, stderr)


def server_spec(
    read_mode: str,
    strategies: Sequence[Strategy],
    s: LabSettings,
    session_store: str | None = None,
) -> str:
    """``session_store``: a Redis URL for the resumable server's sessions (None: its memory)."""
    return json.dumps(
        {
            "parent": os.getpid(),
            "host": KODOS.address,
            "read_mode": read_mode,
            "slow_read_bytes": s.slow_read_bytes,
            "slow_read_pause": s.slow_read_pause,
            "interval": s.interval,
            "timeout": s.timeout,
            "close_timeout": s.websockets_close_timeout,
            "resume_window": s.resume_timeout,
            "session_store": session_store,
            "listeners": [
                {
                    "kind": st.kind,
                    "strategy": st.name,
                    "port": port_of(st),
                    "policy": st.policy,
                }
                for st in strategies
            ],
        }
    )


def client_spec(strategy: Strategy, s: LabSettings) -> str:
    spec = strategy.client_spec(s, KODOS.address, port_of(strategy))
    spec["parent"] = os.getpid()
    return json.dumps(spec)


def wait_ready(
    events: queue.Queue[tuple[str, Any]], names: set[str], deadline: float
) -> dict[str, str]:
    """Wait until every agent in ``names`` said ready (or failed); return failures by name."""
    pending = set(names)
    failures: dict[str, str] = {}
    others: list[tuple[str, Any]] = []
    while pending and time.monotonic() < deadline:
        try:
            name, record = events.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        kind = record.get("ev")
        if name not in pending:
            others.append((name, record))
        elif kind == "ready":
            pending.discard(name)
        elif kind in ("failed", "exit"):
            pending.discard(name)
            failures[name] = str(record.get("why", "exited during start-up"))
    for name in pending:
        failures[name] = "did not start in time"
    for item in others:  # other agents' events (the server's "accepted"): keep them
        events.put(item)
    return failures
