"""Which peers protection leaves alone: loopback by address or by name, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.protection.addresses import LOOPBACK, REMOTE, UNKNOWN, classify


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", LOOPBACK),
        ("127.255.0.9", LOOPBACK),
        ("::1", LOOPBACK),
        ("::ffff:127.0.0.1", LOOPBACK),
        ("localhost", LOOPBACK),
        ("LocalHost.", LOOPBACK),
        ("10.0.0.2", REMOTE),
        ("128.0.0.1", REMOTE),
        ("fe80::1%eth0", REMOTE),
        ("::ffff:10.0.0.1", REMOTE),
        ("db.internal", UNKNOWN),
        ("", UNKNOWN),
        (None, UNKNOWN),
        (b"127.0.0.1", UNKNOWN),
    ],
)
def test_classify(host: object, kind: str) -> None:
    assert classify(host) == kind


@given(st.one_of(st.text(max_size=60), st.ip_addresses().map(str)))
def test_any_host_is_classified_without_raising(host: str) -> None:
    assert classify(host) in (LOOPBACK, REMOTE, UNKNOWN)
