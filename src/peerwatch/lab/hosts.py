"""Two hosts and a switch, each in its own network namespace.

::

    ┌──── <tag>-kang ────┐   ┌───────── <tag>-sw ─────────┐   ┌──── <tag>-kodos ────┐
    │ client agents      │   │            br0             │   │ server agent        │
    │ eth0 10.0.0.1 ─────┼───┼── kang (port) kodos (port)─┼───┼───── eth0 10.0.0.2  │
    └────────────────────┘   │ nftables: table bridge lab │   └─────────────────────┘
                             └────────────────────────────┘

The switch is a namespace of its own so that pulling one host's cable (taking
its switch port down) leaves the other host's link up, as on a real LAN, and
so that faults (drops, loss, one-way partitions) are applied between the hosts
by nftables without touching either host's TCP stack.

The hosts know each other's MAC address permanently (static neighbour
entries). Without that, a host that disappears makes ARP fail, Linux turns the
failure into a soft EHOSTUNREACH and reports it instead of ETIMEDOUT when the
connection finally dies; the articles' peers were silent, not unreachable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from peerwatch.lab.netns import LabError, Registry, namespace_pids, run
from peerwatch.lab.settings import KernelTimers


@dataclass(frozen=True)
class Host:
    role: str  # "kang" (client) or "kodos" (server), as in the article
    address: str
    mac: str


KANG = Host("kang", "10.0.0.1", "02:00:0a:00:00:01")
KODOS = Host("kodos", "10.0.0.2", "02:00:0a:00:00:02")
HOSTS = (KANG, KODOS)
PREFIX_LEN = 24

#: nftables ruleset of the switch: an empty chain that faults add rules to.
SWITCH_RULESET = """
table bridge lab {
    chain faults {
        type filter hook forward priority 0; policy accept;
    }
}
"""

#: Always set in the hosts, whatever the timers: no IPv6 chatter (DAD, router solicitations).
QUIET_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


class Lab:
    """One kang-switch-kodos topology. A context manager: leaving it removes everything.

    ``generation[role]`` counts how many times a host was (re)born, so observers
    holding a handle on a namespace know when power-cycle replaced it.
    """

    def __init__(self, tag: str, timers: KernelTimers, registry: Registry | None = None) -> None:
        self.tag = tag
        self.timers = timers
        self.registry = registry if registry is not None else Registry()
        self.switch = f"{tag}-sw"
        self.generation = {host.role: 0 for host in HOSTS}
        self._processes: dict[str, list[subprocess.Popen[bytes]]] = {h.role: [] for h in HOSTS}
        self._lock = threading.Lock()

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def netns(self, host: Host) -> str:
        return f"{self.tag}-{host.role}"

    def build(self) -> None:
        self.registry.add_namespace(self.switch)
        self._ip(
            self.switch,
            [
                "link set lo up",
                "link add br0 type bridge",
                "link set br0 up",
            ],
        )
        self.nft(SWITCH_RULESET)
        for host in HOSTS:
            self._add_host(host)

    def teardown(self) -> list[str]:
        """Remove every process and namespace of this lab; returns names that would not go."""
        return self.registry.teardown()

    def _add_host(self, host: Host) -> None:
        ns = self.netns(host)
        self.registry.add_namespace(ns)
        sysctls = {**QUIET_SYSCTLS, **self.timers.sysctls()}
        run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                *(f"{k}={v}" for k, v in sysctls.items()),
            ]
        )
        self._ip(
            self.switch,
            [
                f"link add {host.role} type veth peer name eth0 netns {ns}",
                f"link set {host.role} master br0",
                f"link set {host.role} up",
            ],
        )
        other = KODOS if host is KANG else KANG
        self._ip(
            ns,
            [
                "link set lo up",
                f"link set eth0 address {host.mac}",
                f"addr add {host.address}/{PREFIX_LEN} dev eth0",
                "link set eth0 up",
                f"neigh replace {other.address} lladdr {other.mac} dev eth0 nud permanent",
            ],
        )
        with self._lock:
            self.generation[host.role] += 1

    # -------------------------------------------------------------- plumbing

    def _ip(self, ns: str, commands: Sequence[str]) -> None:
        run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")

    def nft(self, script: str) -> None:
        """Load an nftables script into the switch (its bridge sees every frame between hosts)."""
        run(["ip", "netns", "exec", self.switch, "nft", "-f", "-"], input=script)

    def sysctl_values(self, host: Host) -> dict[str, str]:
        """The timers as the kernel of ``host`` reports them (read back, not assumed)."""
        names = list(self.timers.sysctls())
        out = run(["ip", "netns", "exec", self.netns(host), "sysctl", *names])
        values = {}
        for line in out.splitlines():
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
        return values

    # -------------------------------------------------------------- processes

    def exec_argv(self, host: Host, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def spawn(
        self, host: Host, argv: Sequence[str], stderr: IO[bytes] | int = subprocess.DEVNULL
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``, in its own session (Ctrl-C reaches only the lab).

        ``stderr`` should be a file, not a pipe: nobody reads a pipe while a
        scenario runs, and an agent blocked on a full stderr pipe looks hung.
        """
        proc = subprocess.Popen(
            self.exec_argv(host, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        self.registry.add_process(proc)
        with self._lock:
            self._processes[host.role].append(proc)
        return proc

    def spawn_python(
        self,
        host: Host,
        module: str,
        args: Sequence[str],
        stderr: IO[bytes] | int = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        return self.spawn(host, [sys.executable, "-m", module, *args], stderr)

    def processes(self, host: Host) -> list[subprocess.Popen[bytes]]:
        with self._lock:
            return list(self._processes[host.role])

    # -------------------------------------------------------------- the cable

    def unplug(self, host: Host) -> None:
        """Take the host's switch port down: nothing passes, the other host's link stays up."""
        self._ip(self.switch, [f"link set {host.role} down"])

    def plug(self, host: Host) -> None:
        self._ip(self.switch, [f"link set {host.role} up"])

    def power_cycle(self, host: Host) -> None:
        """Crash ``host`` without a packet leaving it, then boot it again, empty, at its address.

        The new namespace has the same MAC and address and no memory of any
        connection, so it answers the next segment with RST.
        """
        self.power_off(host)
        self.power_on(host)

    def power_on(self, host: Host) -> None:
        """Boot a powered-off host: a fresh namespace, same MAC and address, no connections."""
        self._add_host(host)

    def power_off(self, host: Host) -> None:
        """Make ``host`` vanish without a packet leaving it: no FIN, no RST, no ICMP, ever.

        Order matters: the link goes first (deleting the switch port deletes
        the host's end of the cable too), then its processes are killed (their
        kernel would answer with FIN or RST, but there is no wire any more),
        then the whole namespace, TCP state included, is thrown away.
        """
        self._ip(self.switch, [f"link del {host.role}"])
        with self._lock:
            victims = self._processes[host.role]
            self._processes[host.role] = []
        for proc in victims:
            if proc.poll() is None:
                proc.kill()
        ns = self.netns(host)
        for pid in namespace_pids(ns):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for proc in victims:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired as exc:
                raise LabError(f"process {proc.pid} in {ns} did not die") from exc
        run(["ip", "netns", "delete", ns])
        self.registry.forget_namespace(ns)

    # -------------------------------------------------------------- the switch

    def drop(self, source: Host, destination: Host) -> None:
        """Drop every frame from ``source`` to ``destination`` (one direction only)."""
        self.nft(
            f"add rule bridge lab faults iifname {source.role} oifname {destination.role} drop\n"
        )

    def lose(self, percent: int) -> None:
        """Drop ``percent`` % of frames at random, independently in each direction."""
        self.nft(f"add rule bridge lab faults numgen random mod 100 < {percent} drop\n")

    def heal(self) -> None:
        """Remove every fault rule from the switch."""
        self.nft("flush chain bridge lab faults\n")
