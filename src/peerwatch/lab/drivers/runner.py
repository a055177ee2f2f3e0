"""Run the driver scenarios: servers on kodos, every driver x protection on kang, one fault.

One lab (the same kang-switch-kodos hosts as the rest of the lab, with Linux's
default TCP timers: these scenarios show what a production host does) per
fault. All servers start at once, every client connects and makes a first
request, then the fault is injected for all of them together and the runner
watches until every client has its answer or the bound has passed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from peerwatch.lab.agents.drivers import DRIVER_MODULES, client_class
from peerwatch.lab.control import Agent
from peerwatch.lab.drivers.faults import (
    DriverSettings,
    Fault,
    Step,
    expectation,
    options_text,
)
from peerwatch.lab.drivers.middlebox import VIP, Middlebox
from peerwatch.lab.drivers.servers import Server, ServerSet
from peerwatch.lab.hosts import KANG, KODOS, Lab
from peerwatch.lab.netns import LabError, Registry, namespace_pids, terminate_as_interrupt
from peerwatch.lab.settings import LINUX_DEFAULTS

CLIENT = "peerwatch.lab.agents.drivers"
#: Seconds for every server to start and every client to connect (RabbitMQ takes ~5 s idle).
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class DriverRecord:
    fault: str
    server: str
    driver: str
    protection: str
    outcome: str  # "error", "reply", "never", or "failed" (set-up did not work)
    seconds: float | None  # how long the application waited for the outcome
    saw: str  # what the application saw (exception type and text, or the reply)
    expected: str
    ok: bool | None  # None: no claim
    why: str = ""
    socket: str = ""  # keepalive / user timeout on the driver's socket, read from the kernel

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def protect_available() -> bool:
    """Whether this peerwatch has zero-code protection (``peerwatch run``) to measure."""
    import peerwatch

    return hasattr(peerwatch, "protect")


def client_argv(
    server: Server, driver: str, protection: str, s: DriverSettings, host: str
) -> list[str]:
    spec = {
        "driver": driver,
        "host": host,
        "port": server.port,
        "protection": protection,
        "timeout": s.timeout,
        "parent": os.getpid() if protection != "run" else None,
    }
    argv = [sys.executable, "-m", CLIENT, json.dumps(spec)]
    if protection == "run":
        # The one place the "protect" strategy is spelled: the program, unchanged, under run.
        limits = ["--timeout", f"{s.timeout:g}", "--idle-limit", str(s.middlebox_timeout)]
        argv = [sys.executable, "-m", "peerwatch", "run", *limits, "--", *argv]
    return argv


class FaultRun:
    """One fault, all servers and clients, and what each client saw on the fault's time axis."""

    def __init__(
        self,
        fault: Fault,
        servers: Sequence[Server],
        protections: Sequence[str],
        settings: DriverSettings,
        lab: Lab,
    ) -> None:
        self.fault, self.settings, self.lab = fault, settings, lab
        self.servers = [sv for sv in servers if sv.closes_idle or not fault.only_idle_closers]
        self.protections = protections
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.clients: dict[str, Agent] = {}
        self.seen: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.failed: dict[str, str] = {}
        self.options: dict[str, dict[str, int]] = {}  # socket options each client read back
        self.dropped = 0

    @staticmethod
    def key(server: Server, driver: str, protection: str) -> str:
        return f"{server.name}/{driver}/{protection}"

    def start(self, server_set: ServerSet) -> None:
        server_set.start(
            self.lab, KODOS, self.settings.idle_close if self.fault.idle_close else None
        )
        host = VIP if self.fault.middlebox else KODOS.address
        for server, driver, protection in self.triples():
            key = self.key(server, driver, protection)
            stderr = tempfile.TemporaryFile(prefix="pwlab-driver-")  # noqa: SIM115
            argv = client_argv(server, driver, protection, self.settings, host)
            proc = self.lab.spawn(KANG, argv, stderr=stderr)
            self.clients[key] = Agent(key, proc, self.events, stderr)
            self.seen[key] = []
        failures = self._wait_ready(time.monotonic() + START_TIMEOUT)
        for key, why in failures.items():
            tail = self.clients[key].stderr_tail(300).strip().splitlines()
            server = next(sv for sv in self.servers if key.startswith(sv.name + "/"))
            logs = server_set.log_tail(server)
            self.failed[key] = " ".join([why, *(tail[-1:]), logs]).strip()[:400]

    def _wait_ready(self, deadline: float) -> dict[str, str]:
        """Wait for every client's ready (keeping the socket options it read) or failure."""
        pending = set(self.clients)
        failures: dict[str, str] = {}
        while pending and time.monotonic() < deadline:
            try:
                key, event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if key not in pending:
                continue
            if event.get("ev") == "ready":
                pending.discard(key)
                self.options[key] = event.get("options") or {}
            elif event.get("ev") in ("failed", "exit"):
                pending.discard(key)
                failures[key] = str(event.get("why", "exited during start-up"))
        failures.update((key, "did not start in time") for key in pending)
        return failures

    def drive(self, tick: Callable[[float], None] | None = None) -> None:
        steps = sorted(self.fault.timeline(self.settings))
        time.sleep(self.settings.warmup)
        t0 = time.monotonic() - min(0.0, steps[0][0])  # the fault instant
        end = max(at for at, _ in steps) + self.settings.bound
        pending = list(steps)
        while True:
            now = time.monotonic() - t0
            while pending and pending[0][0] <= now:
                self._execute(pending.pop(0))
            self._collect(t0, 0.1)
            if tick is not None:
                tick(now)
            if now >= end or (not pending and self._all_answered()):
                break
        self._collect(t0, 0.0)
        if self.fault.middlebox:
            self.dropped = Middlebox.dropped(self.lab)

    def _execute(self, step: Step) -> None:
        action = step[1]
        if action in ("slow", "quick"):
            for key, agent in self.clients.items():
                if key not in self.failed:
                    agent.send({"cmd": action})
        elif action == "power-off":
            self.lab.power_off(KODOS)
        elif action == "sigstop":
            for pid in namespace_pids(self.lab.netns(KODOS)):
                try:
                    os.kill(pid, signal.SIGSTOP)
                except OSError:
                    continue
        else:
            raise LabError(f"unknown step {action!r}")

    def _collect(self, t0: float, wait: float) -> None:
        block = wait > 0
        while True:
            try:
                key, event = self.events.get(timeout=wait) if block else self.events.get_nowait()
            except queue.Empty:
                return
            block = False
            if key in self.seen:
                self.seen[key].append((float(event.get("t", time.monotonic())) - t0, event))

    def _answer(self, key: str) -> tuple[str, float, dict[str, Any]] | None:
        """The first error or the reply to the fault's request, on the fault's time axis."""
        request_at = None
        for when, event in self.seen[key]:
            kind = event.get("ev")
            if kind == "request" and when >= -0.5:
                request_at = when
            if kind == "error" and when >= 0.0:
                return "error", when, event
            if kind == "reply" and request_at is not None:
                return "reply", when, event
        return None

    def _all_answered(self) -> bool:
        return all(key in self.failed or self._answer(key) is not None for key in self.clients)

    def _anchor(self, key: str) -> float:
        """When the application started waiting: the fault, or its request after the fault."""
        if self.fault.from_fault:
            return 0.0
        for when, event in self.seen[key]:
            if event.get("ev") == "request" and when >= -0.5:
                return when
        return max(at for at, _ in self.fault.timeline(self.settings))

    def triples(self) -> list[tuple[Server, str, str]]:
        """Every server x driver x protection that applies (pool-check only where a pool
        hook exists)."""
        return [
            (server, driver, protection)
            for server in self.servers
            for driver in server.drivers
            for protection in self.protections
            if client_class(driver, protection) is not None
        ]

    def records(self) -> list[DriverRecord]:
        return [self._record(*triple) for triple in self.triples()]

    def _record(self, server: Server, driver: str, protection: str) -> DriverRecord:
        key = self.key(server, driver, protection)
        options = self.options.get(key, {})
        cls = client_class(driver, protection)
        attempts, expiry = (cls.attempts, cls.idle_expiry) if cls is not None else (1, None)
        expect = expectation(
            self.fault, protection, self.settings, options, attempts=attempts, idle_expiry=expiry
        )

        def record(
            outcome: str, seconds: float | None, saw: str, ok: bool | None, why: str = ""
        ) -> DriverRecord:
            return DriverRecord(
                self.fault.name,
                server.name,
                driver,
                protection,
                outcome,
                seconds,
                saw,
                expect.text,
                ok,
                why,
                options_text(options),
            )

        if key in self.failed:
            return record("failed", None, self.failed[key], False, "client set-up failed")
        answer = self._answer(key)
        if answer is None:
            outcome, seconds, saw = "never", None, f"still waiting at {self.settings.bound:g} s"
        else:
            outcome, when, event = answer
            seconds = round(max(0.0, when - self._anchor(key)), 2)
            if outcome == "error":
                saw = f"{event.get('kind')}: {event.get('msg', '')}"[:120]
            else:
                saw = f"reply {event.get('result', '')}"
        if self.fault.middlebox:
            saw += (
                f" (middlebox dropped {self.dropped} packets in all)" if outcome == "never" else ""
            )
        if expect.outcome is None:
            return record(outcome, seconds, saw, None)
        ok = outcome == expect.outcome and (
            expect.within is None or (seconds is not None and seconds <= expect.within)
        )
        why = "" if ok else f"expected {expect.text}, got {outcome}"
        return record(outcome, seconds, saw, ok, why)


def run_fault(
    fault: Fault,
    servers: Sequence[Server],
    protections: Sequence[str],
    settings: DriverSettings,
    tag: str,
    *,
    tick: Callable[[float], None] | None = None,
) -> list[DriverRecord]:
    """Run one fault in a fresh lab and return a record per server x protection."""
    server_set = ServerSet(list(servers))
    agents: list[Agent] = []
    try:
        with Lab(tag, LINUX_DEFAULTS, Registry()) as lab:
            if fault.middlebox:
                Middlebox(settings.middlebox_timeout).install(lab)
            run = FaultRun(fault, servers, protections, settings, lab)
            try:
                run.start(server_set)
                run.drive(tick)
            finally:
                agents = list(run.clients.values())
            return run.records()
    finally:
        for agent in agents:
            agent.stderr.close()
        server_set.remove()


def run_all(
    faults: Sequence[Fault],
    servers: Sequence[Server],
    protections: Sequence[str],
    settings: DriverSettings,
    tag: str,
    *,
    on_records: Callable[[list[DriverRecord]], None] | None = None,
) -> list[DriverRecord]:
    records: list[DriverRecord] = []
    with terminate_as_interrupt():
        for index, fault in enumerate(faults):
            batch = run_fault(fault, servers, protections, settings, f"{tag}-d{index}")
            records.extend(batch)
            if on_records is not None:
                on_records(batch)
    return records


def prerequisites(servers: Sequence[Server]) -> list[str]:
    """Why the driver scenarios cannot run here (missing servers, drivers, tools); empty: ok."""
    import importlib.util
    import shutil

    problems = [
        f"{sv.name} is not installed (Debian package {sv.package}; run tools/system-deps.sh)"
        for sv in servers
        if not sv.installed()
    ]
    problems += [
        f"{driver} is missing: pip install 'peerwatch[drivers]'"
        for server in servers
        for driver in server.drivers
        if importlib.util.find_spec(DRIVER_MODULES[driver]) is None
    ]
    if shutil.which("setpriv") is None:
        problems.append("setpriv (util-linux) is missing")
    if os.geteuid() != 0:
        problems.append(
            "the driver scenarios need real root: PostgreSQL and RabbitMQ run as their own "
            "users, which a user namespace cannot provide"
        )
    return problems
