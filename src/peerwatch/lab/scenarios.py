"""The faults of the two articles, each a named scenario with its timeline.

A scenario is a list of timed steps, relative to the moment the fault is
injected (t = 0), that the runner executes while every strategy's client is
connected at once. Steps either act on the world (the server process, kodos's
host, the switch) or tell clients to do what an application would do
(``write`` the article's "kodos, are you there?", ``check`` that the connection
still carries data, ``stream`` to a slow reader).

``peer_dead`` says what a perfect detector would report: when it is false
(cable-pull, loss, slow-reader) any detection is a false alarm.

In the scenarios where the peer comes back (``peer_returns``: the cable back,
the partition healed, the server restarted after a power cycle) the outage
outlasts every bound, so a detector must call the connection dead; the
question there is what the application has afterwards, and the resumable
session runs beside the plain strategies (``RETURN_STRATEGIES``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from peerwatch.lab.settings import LabSettings
from peerwatch.lab.strategies import RETURN_STRATEGIES, Strategy

#: Which clients a client command goes to: all, or only those of one strategy kind.
Target = Literal["all", "raw", "peerwatch"]

#: How long the runner waits for the answer to a ``check`` (the agents give up at 3 s).
CHECK_WAIT = 3.2


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the fault
    action: str  # a fault (FAULT_ACTIONS) or a client command (CLIENT_COMMANDS)
    target: Target = "all"  # for client commands: every client, or only the raw/peerwatch ones


#: Actions on the world, carried out by the runner (see runner.World).
FAULT_ACTIONS = frozenset(
    {
        "sigint",
        "sigkill",
        "sigstop",
        "close-all",
        "power-cycle",
        "power-off",
        "unplug",
        "plug",
        "drop-kodos-to-kang",
        "lose",
        "heal",
        "restart-server",
    }
)
#: Commands sent to client agents.
CLIENT_COMMANDS = frozenset({"write", "check", "stream"})


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    peer_dead: bool
    timeline: Callable[[LabSettings], list[Step]]
    #: Seconds after the fault the runner keeps watching (it stops earlier once
    #: every client has its final answer and no step is left).
    duration: Callable[[LabSettings], float]
    read_mode: Literal["echo", "slow"] = "echo"
    peer_returns: bool = False  # the peer comes back after the outage (see the docstring)
    #: where the resumable server keeps its sessions: its own memory, or the lab's Redis
    #: (``sessionstore``), which outlives kodos
    session_store: Literal["memory", "redis"] = "memory"

    def runs(self, strategy: Strategy) -> bool:
        """Whether ``strategy`` is measured in this scenario."""
        if self.peer_returns:
            return strategy.name in RETURN_STRATEGIES
        return strategy.kind != "resumable"


def _shared_check(s: LabSettings) -> float:
    """When the echo check runs after the reboot: the restarted server (an interpreter
    start-up on a busy machine) and the client's reconnect backoff had their time."""
    return 1.0 + s.bound + 3.0


def _return_check(s: LabSettings) -> float:
    """When the echo check runs after the peer came back: time for a reconnect and a resume."""
    return s.return_outage + 2.5


def _loss_timeline(s: LabSettings) -> list[Step]:
    steps = [Step(0.0, "lose")]
    steps += [Step(float(t), "write") for t in range(1, int(s.loss_duration))]
    steps += [Step(s.loss_duration, "heal"), Step(s.loss_duration + 0.5, "check")]
    return steps


def _hung_duration(s: LabSettings) -> float:
    # Long enough that the kernel-only strategies had every chance: their
    # failure to notice is the finding, not a short wait.
    return max(s.bound, s.tuned_knobs.keepalive_bound, s.timers.keepalive_bound) + 1.5


ARTICLE_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "graceful-close",
        "server process gets SIGINT and closes its sockets (article: the warm-up)",
        peer_dead=True,
        timeline=lambda s: [Step(0.0, "sigint")],
        duration=lambda s: 2.0,
    ),
    Scenario(
        "crash",
        "server process killed with SIGKILL: its kernel still closes the sockets",
        peer_dead=True,
        timeline=lambda s: [Step(0.0, "sigkill")],
        duration=lambda s: 2.0,
    ),
    Scenario(
        "power-cycle",
        "kodos reboots without a packet; back at the same address, it answers RST (puzzle 1)",
        peer_dead=True,
        timeline=lambda s: [Step(0.0, "power-cycle"), Step(1.0, "write")],
        duration=lambda s: max(1.0, s.bound) + 2.0,
    ),
    Scenario(
        "power-off",
        "kodos vanishes without a packet and stays away; the client writes later (puzzle 2)",
        peer_dead=True,
        timeline=lambda s: [Step(0.0, "power-off"), Step(s.idle_write_at, "write")],
        duration=lambda s: s.idle_write_at + s.retransmission_deadline + 2.0,
    ),
    Scenario(
        "cable-pull",
        "kodos's cable is out for less than the bound, data in flight, then back: must survive",
        peer_dead=False,
        timeline=lambda s: [
            Step(0.0, "unplug"),
            Step(0.0, "write", "raw"),
            Step(s.cable_outage, "plug"),
            Step(s.cable_outage + 1.5, "check"),
        ],
        duration=lambda s: s.cable_outage + 1.5 + CHECK_WAIT,
    ),
    Scenario(
        "half-open",
        "server application closes, the client keeps its half-closed socket like dnc (puzzle 3)",
        peer_dead=True,
        timeline=lambda s: [
            Step(0.0, "close-all"),
            Step(s.timers.tcp_fin_timeout + 1.5, "write"),
        ],
        duration=lambda s: s.timers.tcp_fin_timeout + 1.5 + 2.5,
    ),
    Scenario(
        "partition-oneway",
        "frames from kodos to kang are dropped, kang to kodos still pass; the client writes",
        peer_dead=True,
        timeline=lambda s: [Step(0.0, "drop-kodos-to-kang"), Step(0.5, "write")],
        duration=lambda s: 0.5 + s.retransmission_deadline + 2.0,
    ),
    Scenario(
        "loss",
        "a fraction of frames dropped at random both ways while requests flow: no false alarm",
        peer_dead=False,
        timeline=_loss_timeline,
        duration=lambda s: s.loss_duration + 0.5 + CHECK_WAIT,
    ),
    Scenario(
        "hung",
        "server process SIGSTOPped: its kernel still ACKs, its application never answers;"
        " peerwatch clients keep streaming into its closed window",
        peer_dead=True,
        # The peerwatch clients stream after the write: their data fills the stopped
        # reader's window, so its kernel answers zero-window probes instead of pings
        # (HUNG must hold with data in flight too). The other clients only write, so
        # their findings stay those of the article (an idle line but for one write).
        timeline=lambda s: [
            Step(0.0, "sigstop"),
            Step(0.5, "write"),
            Step(0.5, "stream", "peerwatch"),
        ],
        duration=_hung_duration,
    ),
    Scenario(
        "slow-reader",
        "the server reads a little now and then, its window closes: slow is not dead",
        peer_dead=False,
        timeline=lambda s: [Step(0.0, "stream")],
        duration=lambda s: s.slow_duration,
        read_mode="slow",
    ),
)

RETURN_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "cable-out-2x",
        "kodos's cable is out for 2 x timeout, then back; the line was idle but for heartbeats",
        peer_dead=True,
        timeline=lambda s: [
            Step(0.0, "unplug"),
            Step(s.return_outage, "plug"),
            Step(_return_check(s), "check"),
        ],
        duration=lambda s: _return_check(s) + CHECK_WAIT,
        peer_returns=True,
    ),
    Scenario(
        "partition-heals",
        "frames from kodos to kang are dropped for 2 x timeout, then pass again",
        peer_dead=True,
        timeline=lambda s: [
            Step(0.0, "drop-kodos-to-kang"),
            Step(s.return_outage, "heal"),
            Step(_return_check(s), "check"),
        ],
        duration=lambda s: _return_check(s) + CHECK_WAIT,
        peer_returns=True,
    ),
    Scenario(
        "power-cycle-restart",
        "kodos reboots without a packet and its server starts again, with an empty"
        " in-process session store; the client writes 1 s later",
        peer_dead=True,
        timeline=lambda s: [
            Step(0.0, "power-cycle"),
            Step(0.1, "restart-server"),
            Step(1.0, "write"),
        ],
        duration=lambda s: s.resume_timeout + 2.0,
        peer_returns=True,
    ),
    Scenario(
        "power-cycle-shared",
        "the same reboot and restart, but the server keeps its sessions in a Redis that"
        " outlives kodos; the client writes 1 s later, then checks the echoes",
        peer_dead=True,
        timeline=lambda s: [
            Step(0.0, "power-cycle"),
            Step(0.1, "restart-server"),
            Step(1.0, "write"),
            Step(_shared_check(s), "check"),
        ],
        duration=lambda s: _shared_check(s) + CHECK_WAIT,
        peer_returns=True,
        session_store="redis",
    ),
)

SCENARIOS = ARTICLE_SCENARIOS + RETURN_SCENARIOS
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
