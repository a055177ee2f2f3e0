"""frozen.build: the same frozen dataclass instance as __init__ makes, without its cost."""

from __future__ import annotations

import dataclasses

import pytest

from peerwatch.assessment.model import Assessment, Finding, SocketFacts, Status, Timer
from peerwatch.frozen import build
from peerwatch.kernel.tcpinfo import TcpState


def test_built_equals_initialised_and_stays_frozen() -> None:
    fields: dict[str, object] = {
        "status": Status.ALIVE,
        "cause": Finding.OK,
        "detail": "peer last heard from 1 s ago",
        "evidence": (),
        "silent_for": 1.0,
    }
    built = build(Assessment, dict(fields))
    made = Assessment(**fields)  # type: ignore[arg-type]
    assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.detail = "changed"  # type: ignore[misc]


def test_a_field_left_out_reads_its_default() -> None:
    facts = build(SocketFacts, {"state": TcpState.ESTABLISHED, "info": None, "timer": Timer.NONE})
    assert facts == SocketFacts(state=TcpState.ESTABLISHED, info=None, timer=Timer.NONE)
    assert facts.keepalive is None and facts.user_timeout_ms is None
