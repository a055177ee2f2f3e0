"""The rules behind ``assess()``: kernel figures in, ALIVE / SUSPECT / DEAD out.

The kernel already knows a great deal about every connection: whether the
peer acknowledges what we send (TCP_INFO ``unacked``, ``retransmits``,
``last_ack_recv``), whether it reads (its advertised window, ``snd_wnd``),
whether it closed its side (state CLOSE_WAIT), whether anything would notice it
dying (the keepalive timer). ``assess_info`` turns those figures into a verdict
with a pure function, so every rule is tested without sockets or waiting.

Honesty about time: the kernel keeps no "time in this state". The durations
quoted are lower bounds built from what it does keep: ``last_ack_recv`` (time
since the peer's last segment that acknowledged anything; in CLOSE_WAIT the FIN
was such a segment, so the state is at least that old), ``last_data_recv``, and
the retransmission backoff.
"""

from __future__ import annotations

from typing import NamedTuple

from peerwatch.assessment.model import (
    Assessment,
    AssessPolicy,
    Finding,
    SocketFacts,
    Status,
    Timer,
    format_duration,
)
from peerwatch.frozen import build
from peerwatch.kernel.tcpinfo import TcpInfo, TcpState

__all__ = ["RULE_FIELDS", "assess_info", "unacknowledged_for"]

#: Every TCP_INFO field the rules read to reach a verdict (the evidence figures,
#: ``figures=True``, read more). A caller that wants only verdicts may decode just these:
#: ``parse_tcp_info(raw, RULE_FIELDS)`` (tests/diag/test_assess_rules.py holds them to it).
RULE_FIELDS = frozenset(
    {
        "last_ack_recv_ms",
        "last_data_recv_ms",
        "last_data_sent_ms",
        "notsent_bytes",
        "probes",
        "rcv_wnd",
        "retransmits",
        "rto_us",
        "rtt_us",
        "rwnd_limited_us",
        "sacked",
        "snd_wnd",
        "total_retrans",
        "unacked",
    }
)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def unacknowledged_for(info: TcpInfo) -> float:
    """Lower bound of how long the oldest unacknowledged data has waited, in seconds.

    The head segment was retransmitted ``retransmits`` times, each after an RTO
    that doubled; the current (backed-off) RTO over 2**n is at most the first
    one, so summing the series from it never overstates. Plus the time since the
    last transmission. Never more than the time since the peer's last ACK.
    """
    n = min(info.retransmits, 30)
    first_rto = info.rto_us / 1e6 / (1 << n)
    waited = first_rto * ((1 << n) - 1) + info.last_data_sent_ms / 1000
    return min(waited, info.last_ack_recv_ms / 1000)


class _Finding(NamedTuple):
    """A tuple, not a frozen dataclass: one or two are built per socket, 10,000 per scrape."""

    status: Status
    cause: Finding
    text: str


def assess_info(
    facts: SocketFacts, policy: AssessPolicy | None = None, *, figures: bool = True
) -> Assessment:
    """Decide ALIVE / SUSPECT / DEAD from the kernel's figures; pure, no I/O.

    ``figures=False`` leaves the figures out of the evidence (the verdict is the
    same): the exporter, which only counts verdicts, saves a quarter of its time.
    """
    policy = policy or AssessPolicy()
    info = facts.info
    if _quiet_established(facts):
        # the common case, short cut: _state_findings says nothing about ESTABLISHED and
        # every _traffic_findings rule but the last needs what _quiet_established rules out
        # (tests/diag/test_assess_rules.py checks the shortcut against the full rule set)
        unguarded = _unguarded(facts, policy)
        findings = [] if unguarded is None else [unguarded]
    else:
        findings = _state_findings(facts, policy) + _traffic_findings(facts, policy)
    evidence = _figures(facts) if figures else ()
    silent_for = _silent_for(info)
    if not findings:
        if info is None:
            findings.append(
                _Finding(
                    Status.SUSPECT,
                    Finding.NO_TCP_INFO,
                    "this platform gives no TCP_INFO: nothing can be said about the peer",
                )
            )
        else:
            heard = "never" if silent_for is None else f"{format_duration(silent_for)} ago"
            findings.append(_Finding(Status.ALIVE, Finding.OK, f"peer last heard from {heard}"))
    # worst first; among equals, the order the rules produced them
    ranked = findings if len(findings) == 1 else sorted(findings, key=lambda f: -f.status.rank)
    top = ranked[0]
    secondary = tuple(f"{f.cause.value}: {f.text}" for f in ranked[1:])
    return build(  # not the frozen __init__: a fifth of a quiet socket's verdict
        Assessment,
        {
            "status": top.status,
            "cause": top.cause,
            "detail": top.text,
            "evidence": secondary + evidence,
            "silent_for": silent_for,
        },
    )


def _quiet_established(facts: SocketFacts) -> bool:
    """ESTABLISHED with nothing outstanding: no data in flight, no probe, both windows open.

    Then only the keepalive rule (``_unguarded``) can speak. Most sockets of a host
    are like this, and ``peerwatch exporter`` judges 10,000 of them per scrape.
    """
    info = facts.info
    return (
        facts.state is TcpState.ESTABLISHED
        and info is not None
        and info.unacked == 0
        and info.probes == 0
        and info.snd_wnd != 0
        and info.rcv_wnd != 0
        and facts.timer is not Timer.ZERO_WINDOW_PROBE
    )


def _silent_for(info: TcpInfo | None) -> float | None:
    if info is None:
        return None
    return min(info.last_ack_recv_ms, info.last_data_recv_ms) / 1000


def _state_findings(facts: SocketFacts, policy: AssessPolicy) -> list[_Finding]:
    info, state = facts.info, facts.state
    out: list[_Finding] = []
    if state is TcpState.CLOSE:
        out.append(
            _Finding(
                Status.DEAD,
                Finding.CLOSED,
                "the connection is over (TCP state CLOSE): reset by the peer or given up "
                "by the kernel, and this process still holds the socket",
            )
        )
    elif state is TcpState.TIME_WAIT:
        out.append(
            _Finding(
                Status.DEAD,
                Finding.CLOSED,
                "both sides closed; the kernel keeps TIME_WAIT to absorb late segments",
            )
        )
    elif state is TcpState.LISTEN:
        out.append(_listening(facts))
    elif state in (TcpState.SYN_SENT, TcpState.SYN_RECV, TcpState.NEW_SYN_RECV):
        retries = info.retransmits if info else (facts.timer_retrans or 0)
        if retries:
            what = "SYN" if state is TcpState.SYN_SENT else "SYN-ACK"
            out.append(
                _Finding(
                    Status.SUSPECT,
                    Finding.CONNECTING,
                    f"{what} unanswered after {_plural(retries, 'retransmission')}: "
                    "host down, or packets dropped on the way",
                )
            )
        else:
            out.append(_Finding(Status.ALIVE, Finding.CONNECTING, "handshake in progress"))
    elif state is TcpState.CLOSE_WAIT:
        out.append(_close_wait(facts, policy))
    elif state is TcpState.FIN_WAIT2:
        age = info.last_ack_recv_ms / 1000 if info else None
        if age is not None and age >= policy.close_wait_after:
            out.append(
                _Finding(
                    Status.SUSPECT,
                    Finding.HALF_CLOSED,
                    f"this side closed its sending side at least {format_duration(age)} ago "
                    "and the peer never closed its own (it may sit in CLOSE_WAIT)",
                )
            )
        else:
            out.append(
                _Finding(
                    Status.ALIVE,
                    Finding.HALF_CLOSED,
                    "this side closed its sending side; waiting for the peer's FIN",
                )
            )
    elif state in (TcpState.FIN_WAIT1, TcpState.CLOSING, TcpState.LAST_ACK):
        out.append(
            _Finding(
                Status.ALIVE,
                Finding.CLOSING,
                f"closing ({state.name}): waiting for the peer to acknowledge our FIN",
            )
        )
    return out


def _listening(facts: SocketFacts) -> _Finding:
    info = facts.info
    # sock_diag gives the accept queue as rqueue/wqueue; TCP_INFO as unacked/sacked
    if facts.recv_queue is not None and facts.send_queue is not None:
        waiting, backlog = facts.recv_queue, facts.send_queue
    elif info is not None:
        waiting, backlog = info.unacked, info.sacked
    else:
        return _Finding(Status.ALIVE, Finding.LISTENING, "listening")
    if backlog and waiting >= backlog:
        return _Finding(
            Status.SUSPECT,
            Finding.ACCEPT_QUEUE_FULL,
            f"accept queue full ({waiting} of {backlog}): the process is not accepting, "
            "new connections are dropped",
        )
    return _Finding(
        Status.ALIVE, Finding.LISTENING, f"listening; {waiting} of {backlog} waiting to be accepted"
    )


def _close_wait(facts: SocketFacts, policy: AssessPolicy) -> _Finding:
    info = facts.info
    if info is None:
        return _Finding(
            Status.SUSPECT,
            Finding.PEER_CLOSED,
            "CLOSE_WAIT: the peer closed its side and this process has not closed yet",
        )
    # the FIN acknowledged something, so the state is at least as old as the last ACK received
    age = info.last_ack_recv_ms / 1000
    if age >= policy.close_wait_after:
        return _Finding(
            Status.DEAD,
            Finding.PEER_CLOSED,
            f"CLOSE_WAIT for at least {format_duration(age)}: the peer closed and this process "
            "never did; the peer has most likely forgotten the connection (tcp_fin_timeout), "
            "so a write would be answered with RST",
        )
    return _Finding(
        Status.SUSPECT,
        Finding.PEER_CLOSED,
        f"the peer closed its sending side {format_duration(age)} ago (CLOSE_WAIT) and this "
        "process has not closed yet: fine for a deliberate half-close, a leak otherwise",
    )


def _traffic_findings(facts: SocketFacts, policy: AssessPolicy) -> list[_Finding]:
    info = facts.info
    if info is None or facts.state in (TcpState.LISTEN, TcpState.TIME_WAIT, TcpState.CLOSE):
        return []
    out: list[_Finding] = []
    if info.unacked > 0 and info.retransmits > 0:
        waited = unacknowledged_for(info)
        text = (
            f"peer not acknowledging for {format_duration(waited)}, "
            f"{_plural(info.retransmits, 'retransmission')} "
            f"({_plural(info.unacked, 'segment')} in flight)"
        )
        if waited >= policy.dead_after:
            out.append(_Finding(Status.DEAD, Finding.NOT_ACKNOWLEDGING, text))
        elif waited >= policy.suspect_after:
            out.append(_Finding(Status.SUSPECT, Finding.NOT_ACKNOWLEDGING, text))
    zero_window = info.snd_wnd == 0 or facts.timer is Timer.ZERO_WINDOW_PROBE
    # A reader that does not read still answers zero-window probes, but the answer to a
    # probe (an out-of-window segment) is rate limited (tcp_invalid_ratelimit, 500 ms),
    # so one probe in the air is normal there: two unanswered ones are not.
    probes_alarming = info.probes >= (2 if zero_window else 1)
    if probes_alarming and info.unacked == 0:
        kind = "zero-window" if zero_window else "keepalive"
        quiet = info.last_ack_recv_ms / 1000
        text = (
            f"{_plural(info.probes, kind + ' probe')} unanswered; nothing heard from the peer "
            f"for {format_duration(quiet)}"
        )
        dead = info.probes >= 2 and quiet >= policy.dead_after
        out.append(
            _Finding(Status.DEAD if dead else Status.SUSPECT, Finding.PROBES_UNANSWERED, text)
        )
    elif zero_window and _has_data_to_send(facts):
        held = (info.rwnd_limited_us or 0) / 1e6
        waiting = facts.send_queue if facts.send_queue is not None else info.notsent_bytes
        text = "peer's window is zero (peer application not reading)"
        if held >= 0.001:
            text += f"; sending held back for {format_duration(held)} so far"
        if waiting:
            text += f", {waiting} bytes waiting"
        out.append(_Finding(Status.SUSPECT, Finding.PEER_NOT_READING, text))
    if info.rcv_wnd == 0 and (facts.recv_queue or 0) > 0:
        out.append(
            _Finding(
                Status.SUSPECT,
                Finding.LOCAL_NOT_READING,
                f"this process is not reading: {facts.recv_queue} bytes wait in its receive "
                "queue and the window offered to the peer is zero",
            )
        )
    if not out and facts.state is TcpState.ESTABLISHED:
        unguarded = _unguarded(facts, policy)
        if unguarded is not None:
            out.append(unguarded)
    return out


def _has_data_to_send(facts: SocketFacts) -> bool:
    info = facts.info
    return bool(
        facts.send_queue
        or (info is not None and info.notsent_bytes)
        or facts.timer is Timer.ZERO_WINDOW_PROBE
    )


def _unguarded(facts: SocketFacts, policy: AssessPolicy) -> _Finding | None:
    """An idle connection that nothing probes: the peer could be dead for hours unnoticed."""
    keepalive = facts.keepalive
    if keepalive is None and facts.timer is not None:
        # sock_diag: an ESTABLISHED socket with SO_KEEPALIVE always has sk_timer pending,
        # but a pending retransmit timer hides it; only "no timer at all" proves it off
        if facts.timer is Timer.KEEPALIVE:
            keepalive = True
        elif facts.timer is Timer.NONE:
            keepalive = False
    info = facts.info
    if keepalive is True:
        return _slow_keepalive(facts, policy)
    if keepalive is None or info is None or info.unacked > 0:
        return None
    quiet = min(info.last_ack_recv_ms, info.last_data_recv_ms) / 1000
    if quiet >= policy.idle_after:
        return _Finding(
            Status.SUSPECT,
            Finding.UNGUARDED,
            f"idle with no keepalive: nothing heard from the peer for {format_duration(quiet)}, "
            "and a dead peer would never be noticed",
        )
    return _Finding(
        Status.ALIVE,
        Finding.UNGUARDED,
        f"peer heard from {format_duration(quiet)} ago, but no keepalive: if it dies while "
        "the connection is idle, nothing will notice",
    )


def _slow_keepalive(facts: SocketFacts, policy: AssessPolicy) -> _Finding | None:
    """Keepalive is on, but so slow that an idle dead peer goes unnoticed for a long time.

    From the settings when they are known (a live socket): the probe count rule,
    or the user timeout, which replaces the count once set. From sock_diag, only
    the keepalive timer's expiry: nothing can be noticed before it fires.
    """
    idle, interval, count = facts.keepalive_idle, facts.keepalive_interval, facts.keepalive_count
    if idle is not None and interval is not None and count is not None:
        bound = float(idle + interval * count)
        if facts.user_timeout_ms:
            bound = max(facts.user_timeout_ms / 1000, float(idle + interval))
        settings = f"idle {idle} s, {count} probes every {interval} s"
        if facts.user_timeout_ms:
            settings += f", user timeout {facts.user_timeout_ms} ms"
        if bound > policy.keepalive_bound_after:
            return _Finding(
                Status.ALIVE,
                Finding.SLOW_KEEPALIVE,
                f"keepalive on, but slow ({settings}): a peer dying while the connection is "
                f"idle is noticed only after about {format_duration(bound)}",
            )
        return None
    if facts.timer is Timer.KEEPALIVE and facts.timer_expires_ms is not None:
        first = facts.timer_expires_ms / 1000
        if first > policy.keepalive_bound_after:
            return _Finding(
                Status.ALIVE,
                Finding.SLOW_KEEPALIVE,
                f"keepalive on, but its next probe is {format_duration(first)} away: a peer "
                "dying while the connection is idle goes unnoticed at least that long",
            )
    return None


def _figures(facts: SocketFacts) -> tuple[str, ...]:
    info = facts.info
    out = [f"state {facts.state.name}"]
    if info is not None:
        out.append(
            f"last ACK from peer {format_duration(info.last_ack_recv_ms / 1000)} ago, "
            f"last data {format_duration(info.last_data_recv_ms / 1000)} ago"
        )
        if info.rtt_us:
            out.append(f"rtt {info.rtt_us / 1000:.2f} ms, rto {info.rto_us / 1000:.0f} ms")
        if info.unacked or info.retransmits or info.total_retrans:
            out.append(
                f"unacked {info.unacked}, retransmits {info.retransmits} "
                f"(backoff {info.backoff}, total {info.total_retrans}), probes {info.probes}"
            )
        if info.snd_wnd == 0:
            out.append("peer's advertised window 0")
        if info.notsent_bytes:
            out.append(f"not yet sent {info.notsent_bytes} bytes")
    if facts.recv_queue is not None or facts.send_queue is not None:
        out.append(f"recv-q {facts.recv_queue}, send-q {facts.send_queue}")
    if facts.timer is not None:
        timer = f"timer {facts.timer.label}"
        if facts.timer is not Timer.NONE and facts.timer_expires_ms is not None:
            timer += f", fires in {format_duration(facts.timer_expires_ms / 1000)}"
            if facts.timer_retrans:
                timer += f", count {facts.timer_retrans}"
        out.append(timer)
    if facts.keepalive is not None:
        if facts.keepalive and facts.keepalive_idle is not None:
            out.append(
                f"keepalive on: idle {facts.keepalive_idle} s, "
                f"{facts.keepalive_count} probes every {facts.keepalive_interval} s"
            )
        elif facts.keepalive:
            out.append("keepalive on")
        else:
            out.append("keepalive off")
    if facts.user_timeout_ms:
        out.append(f"user timeout {facts.user_timeout_ms} ms")
    return tuple(out)
