"""The words ``peerwatch nc`` prints for what the kernel said."""

from __future__ import annotations

import errno

from peerwatch.nc.meaning import errno_text


def test_errno_text_names_the_errno_and_says_what_it_means() -> None:
    name, meaning = errno_text(errno.ECONNRESET)
    assert name == "ECONNRESET"
    assert meaning  # every errno a dead peer produces has a sentence


def test_an_errno_without_a_name_is_shown_as_its_number() -> None:
    assert errno_text(99999) == ("99999", "")


def test_no_errno_at_all_is_unknown() -> None:
    assert errno_text(None) == ("?", "unknown error")
