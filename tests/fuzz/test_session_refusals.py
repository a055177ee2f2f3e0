"""A server that does not serve sessions refuses session frames by name (issue 12).

Against both real servers (asyncio and blocking, in child processes, see
fuzzkit.py): a RESUME on a plain connection is a protocol error, as an unknown
frame kind was before the session extension gave kind 7 a meaning.
"""

from __future__ import annotations

import pytest
from fuzzkit import Hostile, Target

from peerwatch.core.decoder import Decoder
from peerwatch.core.frames import (
    PROTOCOL_VERSION,
    Goodbye,
    GoodbyeCode,
    Hello,
    encode_data,
    encode_hello,
    encode_resume,
)

pytestmark = pytest.mark.timeout(60)

HELLO = encode_hello(Hello(PROTOCOL_VERSION, 99, 0.2, 1.0, 1 << 20, 1 << 20))


def test_a_resume_on_a_plain_connection_is_refused(target: Target) -> None:
    with Hostile(target.port) as peer:
        peer.send(HELLO + encode_resume(0, 0) + encode_data(1, b"after"))
        said = [f for f in peer.finish() if isinstance(f, Goodbye)]
    assert len(said) == 1, said
    assert said[0].code is GoodbyeCode.PROTOCOL_ERROR
    assert "RESUME outside a session" in said[0].reason
    target.check()


def test_only_a_session_decoder_takes_resume() -> None:
    assert len(Decoder(1 << 20, sessions=True).feed(encode_resume(3, 2))) == 1
