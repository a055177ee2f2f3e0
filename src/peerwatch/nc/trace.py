"""Timestamped events, as text for people or one JSON object per line for programs.

Every event has a wall-clock time (UTC, microseconds), the seconds elapsed since
the start, a machine name (``event``), a sentence (``message``) and the figures
behind it. ``TcpWatch`` turns successive TCP_INFO snapshots into events: state
changes, retransmissions and probes that the application would otherwise never
see, since the kernel tells a process nothing until it reads or writes.
"""

from __future__ import annotations

import json
import time
from typing import TextIO

from peerwatch.cli.jsonout import timestamp
from peerwatch.kernel.tcpinfo import TcpInfo, TcpState, tcp_info
from peerwatch.nc.meaning import STATE_MEANING

__all__ = ["TcpWatch", "Tracer"]


class Tracer:
    """Writes events to ``out`` (stderr by default, so stdout carries only the peer's bytes)."""

    def __init__(self, out: TextIO, *, as_json: bool = False) -> None:
        self._out = out
        self._json = as_json
        self._start = time.monotonic()

    def emit(self, event: str, message: str, **fields: object) -> None:
        stamp = timestamp()
        elapsed = time.monotonic() - self._start
        if self._json:  # the CLI's JSON convention: time and event first (docs/JSON.md)
            record = {"time": stamp, "event": event, "elapsed": round(elapsed, 6)}
            record.update(fields)
            record["message"] = message
            line = json.dumps(record)
        else:
            line = f"{stamp} +{elapsed:.6f}s  {message}"
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (BrokenPipeError, ValueError):  # the reader of the trace went away
            pass


class TcpWatch:
    """Reports what changed in a socket's TCP_INFO since the last look."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._last: TcpInfo | None = None

    def reset(self, info: TcpInfo | None) -> None:
        """Start from ``info`` without reporting it (the caller already said where we are)."""
        self._last = info

    def check(self, sock_fd: int) -> TcpInfo | None:
        info = tcp_info(sock_fd)
        if info is None:
            return None
        last = self._last
        self._last = info
        if last is None:
            return info
        if info.state is not last.state:
            meaning = STATE_MEANING.get(info.state, "")
            self._tracer.emit(
                "tcp_state",
                f"TCP state {last.state.name} -> {info.state.name}"
                + (f": {meaning}" if meaning else ""),
                old=last.state.name,
                new=info.state.name,
            )
        if info.retransmits > last.retransmits:
            self._tracer.emit(
                "retransmit",
                f"kernel retransmitted unacknowledged data: {info.retransmits} unanswered "
                f"in a row ({info.unacked} segments in flight, next try in "
                f"{info.rto_us / 1e6:.1f} s); the peer's kernel is not acknowledging",
                retransmits=info.retransmits,
                unacked=info.unacked,
                rto_us=info.rto_us,
            )
        elif last.retransmits > 0 and info.retransmits == 0 and info.state is TcpState.ESTABLISHED:
            self._tracer.emit(
                "recovered",
                f"the peer acknowledged again after {last.retransmits} retransmissions",
                retransmits=last.retransmits,
            )
        self._window(last, info)
        zero_window = info.snd_wnd == 0
        # a reader that does not read answers zero-window probes, at a limited rate: one
        # outstanding probe is normal there, a second one is not
        if info.probes > last.probes and (info.probes >= 2 or not zero_window):
            kind = "zero-window" if zero_window else "keepalive"
            self._tracer.emit(
                "probe",
                f"{info.probes} {kind} probe{'s' if info.probes != 1 else ''} unanswered; "
                f"nothing heard from the peer for {info.last_ack_recv_ms / 1000:.1f} s",
                kind=kind,
                probes=info.probes,
                last_ack_recv_ms=info.last_ack_recv_ms,
            )
        return info

    def _window(self, last: TcpInfo, info: TcpInfo) -> None:
        if info.snd_wnd is None or last.snd_wnd is None:  # kernels before 5.4
            return
        if info.snd_wnd == 0 and last.snd_wnd != 0:
            self._tracer.emit(
                "window",
                "the peer advertises a zero window: its application is not reading "
                f"({info.notsent_bytes or 0} bytes wait in our send queue); the kernel now "
                "probes the window",
                snd_wnd=0,
                notsent_bytes=info.notsent_bytes,
            )
        elif last.snd_wnd == 0 and info.snd_wnd > 0:
            self._tracer.emit(
                "window",
                f"the peer's window reopened ({info.snd_wnd} bytes): its application read",
                snd_wnd=info.snd_wnd,
            )
