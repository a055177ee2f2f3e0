"""Faults a middlebox makes on live connections, for sessions that must survive them.

::

    kang 10.0.0.1 ──► middlebox (the lab switch, routing + NAT) ──► kodos 10.0.0.2
    clients dial VIP 10.0.0.100; the middlebox DNATs it to kodos and SNATs the
    client to its own address (10.0.0.254, or 10.0.0.253 after a rebinding)

The topology is the lab's (``hosts.Lab``) with the driver lab's NAT installed
in the switch (``drivers.middlebox``), so every packet between the hosts goes
through one IP stack that the faults act on without either host's TCP knowing:

* ``cable-pull``: kodos's switch port goes down (nothing passes either way);
* ``partition``: frames from kodos to kang are dropped, kang to kodos pass;
* ``rst``: the middlebox answers every TCP segment between the hosts, both ways,
  with a RST of its own (nftables ``reject with tcp reset``; the RST carries the
  sequence number the receiver expects, so each end accepts it, RFC 5961 3.2);
* ``nat-rebind``: the NAT forgets its mappings and maps the client to another
  source address from then on. The server's kernel knows no socket for the new
  4-tuple and answers RST; the server's own next segment reaches the middlebox,
  which knows no flow either and answers RST too. Both ends learn at once.

A fault lasts from ``start`` to ``stop``; ``nat-rebind`` happens at once and
needs no stop (the new source address stays, as after a real rebinding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from peerwatch.core.verdicts import Cause
from peerwatch.lab.drivers.middlebox import ROUTER, VIP, Middlebox
from peerwatch.lab.hosts import KANG, KODOS, PREFIX_LEN, Lab
from peerwatch.lab.netns import run, run_tag
from peerwatch.lab.settings import KernelTimers

FaultKind = Literal["cable-pull", "partition", "rst", "nat-rebind"]
FAULT_KINDS: tuple[FaultKind, ...] = ("cable-pull", "partition", "rst", "nat-rebind")

#: What a plain peerwatch client on kang concludes when each fault hits an idle,
#: heartbeating connection (proven by tests/lab/test_middlefaults.py): a pulled cable
#: and a partition are silence (the kernel does not acknowledge either), the other
#: two are a RST.
PLAIN_CLIENT_VERDICT: dict[FaultKind, Cause] = {
    "cable-pull": Cause.SILENT,
    "partition": Cause.SILENT,
    "rst": Cause.RESET,
    "nat-rebind": Cause.RESET,
}

#: The client's second face on the server's LAN: the NAT moves it there on rebinding.
REBOUND = "10.0.0.253"

#: Long enough that conntrack never forgets a flow by itself during a test.
FLOW_MEMORY = 3600

FAULTS_RULESET = """\
table ip faults {
    chain forward {
        type filter hook forward priority filter - 10; policy accept;
    }
}
"""


class FaultyPath:
    """The middlebox between kang and kodos, and the four faults it can make."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.nat_source = ROUTER  # the address the server sees the client at

    @property
    def server_address(self) -> str:
        """Where a client on kang connects: the middlebox's virtual IP."""
        return VIP

    def install(self) -> None:
        Middlebox(idle_timeout=FLOW_MEMORY).install(self.lab)
        self.lab.nft(FAULTS_RULESET)
        run(["ip", "-n", self.lab.switch, "addr", "add", f"{REBOUND}/{PREFIX_LEN}", "dev", "br0"])
        # A mid-stream segment of a forgotten flow becomes a new flow (mapped anew),
        # as in a NAT that lost its table, instead of being dropped as invalid.
        self._switch_sysctl("net.netfilter.nf_conntrack_tcp_loose=1")
        # With br_netfilter, frames crossing the bridge carry bridge state, and a
        # ``reject`` then answers out of the bridge port directly, skipping NAT: the RST
        # would leave with kodos's address, which kang's socket (dialled to VIP) ignores.
        # Every packet between the hosts is routed here anyway, so the bridge's own
        # pass through the IP hooks is not needed.
        self._switch_sysctl("net.bridge.bridge-nf-call-iptables=0")

    def start(self, kind: FaultKind) -> None:
        if kind == "cable-pull":
            self.lab.unplug(KODOS)
        elif kind == "partition":
            self._rule(f"ip saddr {KODOS.address} ip daddr {KANG.address} drop")
        elif kind == "rst":
            for source, destination in ((KANG, KODOS), (KODOS, KANG)):
                self._rule(
                    f"ip saddr {source.address} ip daddr {destination.address}"
                    " counter reject with tcp reset"
                )
        else:
            self.rebind()

    def stop(self, kind: FaultKind) -> None:
        if kind == "cable-pull":
            self.lab.plug(KODOS)
        elif kind in ("partition", "rst"):
            self.lab.nft("flush chain ip faults forward\n")

    def rebind(self) -> None:
        """Map the client to the other source address and forget every flow (a NAT reboot)."""
        self.nat_source = REBOUND if self.nat_source == ROUTER else ROUTER
        self.lab.nft(
            "flush chain ip middlebox postrouting\n"
            f"add rule ip middlebox postrouting ip daddr {KODOS.address}"
            f" snat to {self.nat_source}\n"
        )
        self._switch_exec(["conntrack", "-F"])

    def _rule(self, rule: str) -> None:
        self.lab.nft(f"add rule ip faults forward ip protocol tcp {rule}\n")

    def _switch_sysctl(self, assignment: str) -> None:
        self._switch_exec(["sysctl", "-q", "-w", assignment])

    def _switch_exec(self, argv: list[str]) -> None:
        run(["ip", "netns", "exec", self.lab.switch, *argv])


@contextlib.contextmanager
def faulty_path(timers: KernelTimers) -> Iterator[FaultyPath]:
    """Build kang -- middlebox -- kodos (fresh namespaces), yield the path, remove everything."""
    with Lab(f"{run_tag()}-mf", timers) as lab:
        path = FaultyPath(lab)
        path.install()
        yield path
