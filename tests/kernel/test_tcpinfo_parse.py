"""parse_tcp_info (one precompiled Struct per buffer length) agrees with the layout table.

Every field is checked against a decode of its own bytes at the offset the
table gives, for buffers of every length a kernel could return (older kernels
send shorter ones: the fields they lack must be None, never read past the end).
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from peerwatch.kernel.tcpinfo import _LAYOUT, MIN_TCP_INFO_LEN, TcpState, parse_tcp_info

FULL = _LAYOUT[-1][2] + 4


@given(
    st.integers(MIN_TCP_INFO_LEN, FULL + 16).flatmap(lambda n: st.binary(min_size=n, max_size=n))
)
def test_every_field_is_read_from_its_own_offset_or_none(raw: bytes) -> None:
    info = parse_tcp_info(raw)
    for name, code, offset in _LAYOUT:
        value = getattr(info, name)
        if offset + struct.calcsize("=" + code) > len(raw):
            assert value is None, name
            continue
        (expected,) = struct.unpack_from("=" + code, raw, offset)
        if name == "state":
            assert value is TcpState.of(expected)
        else:
            assert value == expected, name


@given(
    st.integers(MIN_TCP_INFO_LEN, FULL + 16).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.sets(st.sampled_from([name for name, _, _ in _LAYOUT])),
)
def test_only_the_fields_asked_for_are_decoded(raw: bytes, asked: set[str]) -> None:
    """``fields``: those (and state) as the full parse reads them, the rest None; a buffer
    too short for one of them (an older kernel) is decoded whole."""
    full = parse_tcp_info(raw)
    part = parse_tcp_info(raw, frozenset(asked))
    ends = {name: offset + struct.calcsize("=" + code) for name, code, offset in _LAYOUT}
    whole = any(ends[name] > len(raw) for name in asked)
    for name, _, _ in _LAYOUT:
        if whole or name in asked or name == "state":
            assert getattr(part, name) == getattr(full, name), name
        else:
            assert getattr(part, name) is None, name


def test_a_field_that_does_not_exist_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="no such TCP_INFO field: rtt_ms"):
        parse_tcp_info(bytes(FULL), frozenset({"rtt_us", "rtt_ms"}))
