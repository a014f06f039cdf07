# -*- test-case-name: halp.test.test_store -*-
"""
Change-feed cursors, shared by the stores.

A cursor is ``EPOCH:SEQ``: ``SEQ`` counts the changes a store made, and
``EPOCH`` names the store's numbering, chosen at random when the store's
data was created.  A cursor from another numbering (a store that was
wiped, or another server's) does not point anywhere in this one, so it
means "from the beginning": a puller then gets everything again instead of
missing what came after a number that was reused.
"""

from __future__ import annotations

import re

__all__ = ["make_cursor", "parse_cursor", "split_cursor"]

_CURSOR = re.compile(r"([0-9a-f]{1,32}):([0-9]{1,18})\Z")


def make_cursor(epoch: str, seq: int) -> str:
    """The cursor after change number ``seq`` of numbering ``epoch``."""
    return f"{epoch}:{seq}"


def split_cursor(cursor: str) -> tuple[str, int]:
    """
    The numbering and change number of ``cursor``; ``("", 0)`` for ``""``,
    ``"0"`` or anything that is not a cursor.
    """
    match = _CURSOR.match(cursor)
    if match is None:
        return ("", 0)
    return (match.group(1), int(match.group(2)))


def parse_cursor(cursor: str, epoch: str) -> int:
    """
    The change number after which ``cursor`` continues in numbering
    ``epoch``: 0 (the beginning) for ``""``, ``"0"``, a cursor of another
    numbering, or anything that is not a cursor.
    """
    theirs, seq = split_cursor(cursor)
    return seq if theirs == epoch else 0
