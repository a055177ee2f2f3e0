"""A middlebox that silently forgets idle flows, as cloud load balancers and NATs do.

The switch namespace gets an address on its bridge and a virtual IP; clients
connect to the virtual IP, the switch rewrites the destination to the server
and the source to itself (nftables dnat + masquerade), and conntrack remembers
each flow for ``nf_conntrack_tcp_timeout_established`` seconds of silence
(AWS NLB 350 s, Azure 4 min, GCP 10 min, kube-proxy IPVS 900 s; the lab uses a
few seconds). When a flow is forgotten its next packet is not a new flow
(``nf_conntrack_tcp_loose=0``: a mid-stream segment does not create one) but
``ct state invalid``, and it is dropped: no RST, no ICMP, the packet goes
nowhere, exactly what users see behind a load balancer. A keepalive probe
sent before the timeout counts as traffic and keeps the flow remembered.
"""

from __future__ import annotations

from dataclasses import dataclass

from peerwatch.lab.hosts import KANG, KODOS, PREFIX_LEN, Lab
from peerwatch.lab.netns import run

#: Address of the switch on the lab LAN (the source the server sees) and the virtual IP.
ROUTER = "10.0.0.254"
VIP = "10.0.0.100"

RULESET = """\
table ip middlebox {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {vip} dnat to {server}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip daddr {server} masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        ct state invalid counter drop
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        ct state invalid counter drop
    }}
}}
"""


@dataclass(frozen=True)
class Middlebox:
    idle_timeout: int  # seconds conntrack keeps an established flow without traffic

    def install(self, lab: Lab) -> None:
        """Turn the lab's switch into the NAT; clients then connect to ``VIP``."""
        sysctls = {
            "net.ipv4.ip_forward": "1",
            # a routed packet leaves by the port it came in: no ICMP redirect to bypass us
            "net.ipv4.conf.all.send_redirects": "0",
            "net.ipv4.conf.default.send_redirects": "0",
            "net.netfilter.nf_conntrack_tcp_loose": "0",
            "net.netfilter.nf_conntrack_tcp_timeout_established": str(self.idle_timeout),
        }
        lab.nft(RULESET.format(vip=VIP, server=KODOS.address))
        ns = lab.switch
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
        run(
            ["ip", "-n", ns, "-batch", "-"],
            input=(f"addr add {ROUTER}/{PREFIX_LEN} dev br0\naddr add {VIP}/32 dev br0\n"),
        )
        for host in (KANG, KODOS):
            accept = (
                "net.ipv4.conf.all.accept_redirects=0",
                "net.ipv4.conf.eth0.accept_redirects=0",
            )
            run(["ip", "netns", "exec", lab.netns(host), "sysctl", "-q", "-w", *accept])

    @staticmethod
    def dropped(lab: Lab) -> int:
        """Packets of forgotten flows the middlebox dropped so far (its counters)."""
        out = run(["ip", "netns", "exec", lab.switch, "nft", "list", "table", "ip", "middlebox"])
        total = 0
        for line in out.splitlines():
            words = line.split()
            if "packets" in words:
                total += int(words[words.index("packets") + 1])
        return total
