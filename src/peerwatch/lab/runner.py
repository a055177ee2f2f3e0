"""Run scenarios: build the hosts, start the agents, inject the fault, watch, judge, tear down.

Within a scenario every strategy runs at once: one server process on kodos
listens on one port per strategy (so a fault on "the server process" hits all
of them together), and one client process per strategy runs on kang. Their
events come back as JSON lines on one queue; the runner keeps the scenario's
timeline and stops early once every client has its final answer.

Scenarios run one after another, each in a fresh lab (three new namespaces),
so no state leaks from one fault into the next.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from peerwatch.lab.control import (
    START_TIMEOUT,
    Agent,
    client_spec,
    server_spec,
    start_agent,
    wait_ready,
)
from peerwatch.lab.expectations import expectation, state_expectation
from peerwatch.lab.hosts import KANG, KODOS, Lab
from peerwatch.lab.netns import LabError, Registry, terminate_as_interrupt
from peerwatch.lab.observations import Observation, Record
from peerwatch.lab.scenarios import CLIENT_COMMANDS, Scenario, Step
from peerwatch.lab.sessionstore import STORE_URL, start_store
from peerwatch.lab.settings import LabSettings
from peerwatch.lab.states import GONE, StateWatcher, Timeline
from peerwatch.lab.strategies import Strategy, port_of
from peerwatch.testing.servers import Server

#: Rough seconds of set-up per scenario, for the progress bar only.
SETUP_ESTIMATE = 3.0

Tick = Callable[[str, float], None]  # (what is happening, seconds of the run done so far)


@dataclass
class ScenarioRun:
    """State of one scenario while it runs."""

    scenario: Scenario
    strategies: Sequence[Strategy]
    settings: LabSettings
    lab: Lab
    server: Agent
    clients: dict[str, Agent]
    observations: dict[str, Observation]
    server_events: list[dict[str, Any]]
    events: queue.Queue[tuple[str, Any]]
    server_stderr: str = ""
    server_argv: list[str] = field(default_factory=list)  # to start it again (restart-server)
    agents: list[Agent] = field(default_factory=list)  # every agent started, for their stderr


def run_scenario(
    scenario: Scenario,
    strategies: Sequence[Strategy],
    settings: LabSettings,
    tag: str,
    *,
    tick: Tick | None = None,
    on_lab: Callable[[Lab], None] | None = None,
) -> list[Record]:
    """Run one scenario with every strategy at once and return one Record per strategy.

    The scenario's lab is torn down when this returns or raises (Ctrl-C included).
    Strategies the scenario does not measure (``Scenario.runs``) are left out.
    """
    strategies = [st for st in strategies if scenario.runs(st)]
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    agents: list[Agent] = []
    store: Server | None = None
    try:
        with Lab(tag, settings.timers, Registry()) as lab:
            if on_lab is not None:
                on_lab(lab)
            store_url = None
            if scenario.session_store == "redis":
                store, store_url = start_store(lab), STORE_URL
            spec = server_spec(scenario.read_mode, strategies, settings, store_url)
            server_argv = ["server", spec]
            server = start_agent(lab, KODOS, "server", server_argv, events)
            agents.append(server)
            failures = wait_ready(events, {"server"}, time.monotonic() + START_TIMEOUT)
            if failures:
                raise LabError(f"the server agent did not start: {server.stderr_tail()}")
            observations = {st.name: Observation(st.name) for st in strategies}
            clients = {}
            for st in strategies:
                argv = ["client", client_spec(st, settings)]
                clients[st.name] = start_agent(lab, KANG, st.name, argv, events)
                agents.append(clients[st.name])
            failures = wait_ready(events, set(clients), time.monotonic() + START_TIMEOUT)
            for name, why in failures.items():
                observations[name].error = f"{why} {clients[name].stderr_tail()}".strip()
            run = ScenarioRun(
                scenario,
                strategies,
                settings,
                lab,
                server,
                clients,
                observations,
                [],
                events,
                server_argv=server_argv,
                agents=agents,
            )
            ports = [port_of(st) for st in strategies]
            with StateWatcher(lab, ports) as watcher:
                time.sleep(settings.warmup)
                _drive(run, tick)
            run.server_stderr = run.server.stderr_tail()
            return [_judge(run, st, watcher.for_port(port_of(st))) for st in strategies]
    finally:
        for agent in agents:
            agent.stderr.close()
        if store is not None:
            store.stop()


def _drive(run: ScenarioRun, tick: Tick | None) -> None:
    """Execute the timeline from t0 (the fault) and collect events until the end."""
    scenario, settings = run.scenario, run.settings
    steps = sorted(scenario.timeline(settings), key=lambda step: step.at)
    duration = scenario.duration(settings)
    t0 = time.monotonic()
    next_step = 0
    while True:
        now = time.monotonic() - t0
        while next_step < len(steps) and steps[next_step].at <= now:
            _execute(run, steps[next_step])
            next_step += 1
        _collect(run, t0, 0.0)
        if tick is not None:
            tick(scenario.name, min(now, duration))
        if now >= duration:
            break
        if next_step >= len(steps) and _all_over(run):
            time.sleep(0.3)  # let last words (server verdicts, states) arrive
            _collect(run, t0, 0.0)
            break
        wake = steps[next_step].at if next_step < len(steps) else duration
        _collect(run, t0, max(0.0, min(wake - now, 0.2)))


def _collect(run: ScenarioRun, t0: float, wait: float) -> None:
    """Move agent events onto the scenario's time axis; wait up to ``wait`` s for the first."""
    block = wait > 0
    while True:
        try:
            name, record = run.events.get(timeout=wait) if block else run.events.get_nowait()
        except queue.Empty:
            return
        block = False
        when = float(record.get("t", time.monotonic())) - t0
        if name == "server":
            run.server_events.append({**record, "t": round(when, 3)})
        elif name in run.observations:
            run.observations[name].add(when, record)


def _all_over(run: ScenarioRun) -> bool:
    return all(
        obs.error is not None or obs.over_at() is not None for obs in run.observations.values()
    )


def _execute(run: ScenarioRun, step: Step) -> None:
    lab, server = run.lab, run.server
    action = step.action
    if action in CLIENT_COMMANDS:
        for strategy in run.strategies:
            if step.target not in ("all", strategy.kind):
                continue
            run.clients[strategy.name].send({"cmd": action})
    elif action in ("sigint", "sigkill", "sigstop"):
        sig = {"sigint": signal.SIGINT, "sigkill": signal.SIGKILL, "sigstop": signal.SIGSTOP}
        os.kill(server.proc.pid, sig[action])
    elif action == "close-all":
        server.send({"cmd": "close-all"})
    elif action == "power-cycle":
        lab.power_cycle(KODOS)
    elif action == "restart-server":
        # the rebooted host starts its server again: same ports, no memory of any session
        run.server = start_agent(lab, KODOS, "server", run.server_argv, run.events)
        run.agents.append(run.server)
    elif action == "power-off":
        lab.power_off(KODOS)
    elif action == "unplug":
        lab.unplug(KODOS)
    elif action == "plug":
        lab.plug(KODOS)
    elif action == "drop-kodos-to-kang":
        lab.drop(KODOS, KANG)
    elif action == "lose":
        lab.lose(run.settings.loss_percent)
    elif action == "heal":
        lab.heal()
    else:
        raise LabError(f"unknown step {action!r}")


def _states(timelines: dict[str, list[Timeline]]) -> dict[str, list[str]]:
    """State names per host, in order; a state after ESTABLISHED that lasted carries its time.

    ``FIN_WAIT2 3.0 s`` is how the report shows that kodos sat in FIN_WAIT2 for
    tcp_fin_timeout, measured from the kernel's own state changes.
    """
    out: dict[str, list[str]] = {}
    for role, lines in timelines.items():
        names: list[str] = []
        for timeline in lines:
            changes = timeline.changes
            for i, (when, state) in enumerate(changes):
                label = state
                if i + 1 < len(changes) and state not in ("ESTABLISHED", GONE):
                    lasted = changes[i + 1][0] - when
                    if lasted >= 0.5:
                        label = f"{state} {lasted:.1f} s"
                if not names or names[-1].split(" ")[0] != state:
                    names.append(label)
        out[role] = names
    return out


def _judge(run: ScenarioRun, strategy: Strategy, timelines: dict[str, list[Timeline]]) -> Record:
    obs = run.observations[strategy.name]
    expect = expectation(run.scenario.name, strategy, run.settings)
    states = _states(timelines)
    ok: bool | None
    if obs.error is not None:
        ok, why = False, f"client set-up failed: {obs.error}"
    elif expect.judge is None:
        ok, why = None, ""
    else:
        states_judge = state_expectation(run.scenario.name, strategy, run.settings)
        problem = expect.judge(obs) or states_judge(states)
        ok, why = problem is None, problem or ""
        stall, who = _worst_stall(run, obs)
        if not ok and stall >= run.settings.interval:
            # The agent itself did not run for that long: the measurement saw the
            # machine's load, not the fault. Say so instead of blaming the strategy.
            ok = None
            why = f"not judged: the lab's {who} stalled {stall:.1f} s (machine overloaded): {why}"
    saw = obs.saw_text()
    server_view = _server_verdict(run, strategy.name)
    if server_view and not server_view.startswith("LOCAL"):
        saw += f" (server side: {server_view})"
    return Record(
        scenario=run.scenario.name,
        strategy=strategy.name,
        peer_dead=run.scenario.peer_dead,
        detected=obs.detected,
        seconds=obs.seconds,
        saw=saw,
        expected=expect.text,
        ok=ok,
        why=why,
        states=states,
        untuned=expect.untuned,
    )


def _server_verdict(run: ScenarioRun, strategy: str) -> str | None:
    """The peerwatch server's own verdict on this strategy's connection, with its time."""
    for event in run.server_events:
        if event.get("ev") == "server-verdict" and event.get("strategy") == strategy:
            cause = str(event.get("verdict", "")).split(":", 1)[0]
            return f"{cause} at {float(event.get('t', 0.0)):.1f} s"
    return None


def _worst_stall(run: ScenarioRun, obs: Observation) -> tuple[float, str]:
    """Longest event-loop stall the server agent or this client agent reported around the fault."""
    window = -run.settings.timeout - 1.0
    server = max(
        (
            float(e.get("seconds", 0.0))
            for e in run.server_events
            if e.get("ev") == "stall" and float(e.get("t", 0.0)) >= window
        ),
        default=0.0,
    )
    client = max(
        (float(e.fields.get("seconds", 0.0)) for e in obs.events if e.kind == "stall"),
        default=0.0,
    )
    return (server, "server agent") if server >= client else (client, "client agent")


def estimate(scenarios: Sequence[Scenario], settings: LabSettings) -> float:
    """Seconds the run should take at most (for the progress bar)."""
    return sum(SETUP_ESTIMATE + settings.warmup + sc.duration(settings) for sc in scenarios)


def run_all(
    scenarios: Sequence[Scenario],
    strategies: Sequence[Strategy],
    settings: LabSettings,
    tag: str,
    *,
    tick: Tick | None = None,
    on_records: Callable[[list[Record]], None] | None = None,
    on_timers: Callable[[dict[str, str]], None] | None = None,
) -> list[Record]:
    """Run the scenarios one after another, each in its own lab, torn down whatever happens."""
    records: list[Record] = []
    done = 0.0
    with terminate_as_interrupt():
        for index, scenario in enumerate(scenarios):
            if not any(scenario.runs(st) for st in strategies):
                continue
            offset = done

            def scenario_tick(name: str, seconds: float, offset: float = offset) -> None:
                if tick is not None:
                    tick(name, offset + SETUP_ESTIMATE + settings.warmup + seconds)

            if tick is not None:
                tick(scenario.name, offset)

            def read_timers(lab: Lab, first: bool = index == 0) -> None:
                if on_timers is not None and first:
                    on_timers(lab.sysctl_values(KANG))

            batch = run_scenario(
                scenario,
                strategies,
                settings,
                f"{tag}-{index}",
                tick=scenario_tick,
                on_lab=read_timers,
            )
            records.extend(batch)
            if on_records is not None:
                on_records(batch)
            done += SETUP_ESTIMATE + settings.warmup + scenario.duration(settings)
            if tick is not None:
                tick(scenario.name, done)
    return records
