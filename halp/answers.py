# -*- test-case-name: halp.test.test_answers -*-
"""
Encoded answers to ``get LABEL`` requests, kept while they hold: the HALP/1
server's fast path.

A busy label is asked for far more often than it changes.  The server
keeps the bytes of each ``get`` answer under its request line, exactly as
the client sent it, and writes them again when the same line comes back:
no parsing, no store, no Deferred.  An answer is dropped when

- the core merges anything into its label (the cache watches the core),
- its oldest entry expires (the label's newest entries then change),
- or ``max_age`` seconds after it was made.

``max_age`` (``--answer-cache``, 1 second by default) bounds how stale an
answer can be when other processes write to the same store (Redis, or an
SQLite file that several servers share), whose merges this process does
not see; ``0`` turns the cache off.  At most ``size`` answers are kept, the
oldest going first, so that a client cannot grow the cache by spelling one
request in many ways.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from twisted.internet.interfaces import IReactorTime

from halp.core import HALPCore
from halp.model import Entry
from halp.wire import Get, Reply, summarize

__all__ = ["Answer", "AnswerCache"]


@dataclass(slots=True)
class Answer:
    """The encoded answer to one ``get`` request line."""

    #: The whole reply: data lines and status line.
    data: bytes
    label: str
    #: The request and the status, for the request log.
    summary: str
    status: str
    lines: int
    #: Clock time from which the answer no longer holds.
    until: float


class AnswerCache:
    """
    Encoded ``get`` answers by request line (see the module docstring).

    :param core: the core whose merges invalidate answers, and whose
        limits say when entries expire.
    :param clock: the time source answers expire by (the reactor, or a
        ``Clock`` in tests).
    :param max_age: the longest an answer is kept, in seconds; ``0`` or
        less keeps none.
    :param size: the most answers kept.
    """

    def __init__(
        self, core: HALPCore, clock: IReactorTime, max_age: float = 1.0, size: int = 4096
    ) -> None:
        self._clock = clock
        self._ttl = core.limits.ttl
        self.max_age = max_age
        if size < 1:
            raise ValueError(f"an answer cache holds at least one answer, not {size}")
        self.size = size
        self._answers: OrderedDict[bytes, Answer] = OrderedDict()
        self._lines: dict[str, set[bytes]] = {}
        #: Counts the core's merges: an answer made while one happened may
        #: already be stale, and is not kept.
        self.generation = 0
        if max_age > 0:
            core.watch_merges(self._merged)

    def __len__(self) -> int:
        return len(self._answers)

    def lookup(self, line: bytes, now: float) -> Answer | None:
        """The answer kept for request ``line``, if it still holds at clock
        time ``now``."""
        answer = self._answers.get(line)
        if answer is not None and now >= answer.until:
            self._forget(line)
            return None
        return answer

    def keep(
        self,
        line: bytes,
        request: Get,
        reply: Reply,
        entries: Sequence[Entry],
        generation: int,
    ) -> None:
        """
        Keep ``reply``, the answer to ``request`` (sent as ``line``) made of
        ``entries``, unless the store changed since ``generation`` (the
        :attr:`generation` when the answer was begun).
        """
        if self.max_age <= 0 or generation != self.generation:
            return
        until = self._clock.seconds() + self.max_age
        if entries:
            # Served while now - ttl <= timestamp, in whole seconds.
            until = min(until, min(e.timestamp for e in entries) + self._ttl + 1)
        self._forget(line)
        while len(self._answers) >= self.size:
            self._unindex(*self._answers.popitem(last=False))
        self._answers[line] = Answer(
            b"".join(reply.lines) + reply.status,
            request.label,
            summarize(request),
            reply.status.decode("ascii").rstrip("\n"),
            len(reply.lines),
            until,
        )
        self._lines.setdefault(request.label, set()).add(line)

    def _forget(self, line: bytes) -> None:
        answer = self._answers.pop(line, None)
        if answer is not None:
            self._unindex(line, answer)

    def _unindex(self, line: bytes, answer: Answer) -> None:
        lines = self._lines[answer.label]
        lines.discard(line)
        if not lines:
            del self._lines[answer.label]

    def _merged(self, labels: set[str]) -> None:
        self.generation += 1
        for label in labels:
            for line in self._lines.pop(label, ()):
                del self._answers[line]
