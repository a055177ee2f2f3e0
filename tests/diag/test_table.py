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
