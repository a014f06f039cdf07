# -*- test-case-name: halp.test.test_store -*-
"""
The network group that every store records with an entry, for the
per-group quota of :meth:`~halp.interfaces.IHostStore.merge`.
"""

from __future__ import annotations

from functools import lru_cache

from halp.model import address_group

__all__ = ["source_group"]

#: Sources whose group is remembered.  Parsing an address and looking it
#: up in the special-purpose registries costs tens of microseconds, about
#: as much as the rest of a merged change; one client inserts many entries,
#: and replication brings the same sources again and again.
CACHED_SOURCES = 8192

_cached = lru_cache(maxsize=CACHED_SOURCES)(address_group)


def source_group(source: str) -> str:
    """:func:`halp.model.address_group` of ``source``, remembered."""
    return _cached(source)
