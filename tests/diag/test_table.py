"""The inspect table's own rules, without sockets."""

from __future__ import annotations

import textwrap

from hypothesis import given
from hypothesis import strategies as st

from peerwatch.diag.table import _wrap

words = st.lists(st.text(alphabet="abc:;()-.0123456789", min_size=1, max_size=40), max_size=30)


@given(words, st.integers(min_value=1, max_value=80))
def test_wrap_keeps_every_character_and_the_width(parts: list[str], width: int) -> None:
    text = " ".join(parts)
    lines = _wrap(text, width)
    assert all(len(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    if all(len(part) <= width for part in parts):  # then it is textwrap's greedy fill
        assert lines == (textwrap.wrap(text, width, break_on_hyphens=False) or [""])


def test_the_sort_names_in_help_are_the_view_s() -> None:
    """--help lists the orders without importing the view; the two lists must agree."""
    from peerwatch.cli.inspect import _SORTS
    from peerwatch.diag.view import SORTS

    assert list(_SORTS) == list(SORTS)


def test_the_table_s_tcp_info_fields_are_all_it_reads() -> None:
    """Rows decoded with only TCP_INFO_FIELDS lay out, judge and sort exactly like rows
    decoded whole: real loopback connections, one of them with unread data."""
    import socket

    from peerwatch.assessment.model import AssessPolicy
    from peerwatch.assessment.rules import assess_info
    from peerwatch.diag.sockdiag import SockRecord, read_sockets
    from peerwatch.diag.table import TCP_INFO_FIELDS, row_cells
    from peerwatch.diag.view import SORTS, Row
    from peerwatch.frozen import build

    def row(record: SockRecord) -> Row:
        return Row(record, (), assess_info(record.facts(), AssessPolicy(), figures=False))

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                client.sendall(b"x" * 70_000)  # unread: queues, windows, rtt
                ours = {
                    (("127.0.0.1", port), ("0.0.0.0", 0)),
                    (client.getsockname(), server.getsockname()),
                    (server.getsockname(), client.getsockname()),
                }
                # by both ends: other tests' sockets on 127/8 may share the port number
                records = [r for r in read_sockets() if (r.local, r.remote) in ours and r.info]
    assert len(records) == 3  # listener, both ends
    for full in records:
        fields = {name: getattr(full, name) for name in full.__dataclass_fields__}
        part = build(SockRecord, {**fields, "tcp_info_fields": TCP_INFO_FIELDS})
        assert part.info != full.info  # really decoded in part
        assert row_cells(row(part)) == row_cells(row(full))
        for key, _ in SORTS.values():
            assert key(row(part)) == key(row(full))
