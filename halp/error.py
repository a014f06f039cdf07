"""
HALP's exceptions.

:class:`ProtocolError` is what a peer did wrong and becomes an ``error``
status line (or an HTTP 4xx); :class:`StoreError` is what went wrong in a
backend and becomes ``error unavailable``.  Anything else reaching the
server's dispatcher is a bug: it is logged with its traceback and answered
with ``error internal``.
"""

from __future__ import annotations

import enum

__all__ = [
    "BadResponse",
    "ClientError",
    "ConnectionClosed",
    "ErrorCode",
    "HALPError",
    "NoServerAvailable",
    "ProtocolError",
    "ServerRefused",
    "StoreError",
    "StoreSchemaError",
    "Timeout",
]


class ErrorCode(str, enum.Enum):
    """The codes of HALP/1 ``error`` status lines (``docs/protocol.rst``)."""

    #: The request does not follow the grammar.
    BAD_REQUEST = "bad-request"
    #: The command word is not one HALP/1 knows.
    UNKNOWN_COMMAND = "unknown-command"
    #: A label breaks the label rules.
    BAD_LABEL = "bad-label"
    #: A slice is malformed or its end is before its start.
    BAD_RANGE = "bad-range"
    #: An entry line is malformed.  Entry problems are answered in
    #: ``failure:`` lines, never with this code in a status line.
    BAD_ENTRY = "bad-entry"
    #: An ``insert`` names more labels than the server accepts.
    TOO_MANY_LABELS = "too-many-labels"
    #: An ``insert`` block has more entry lines than the server accepts.
    TOO_MANY_ENTRIES = "too-many-entries"
    #: A request line is longer than the server accepts; the server closes.
    LINE_TOO_LONG = "line-too-long"
    #: The server refuses the request for now because the peer sent too
    #: much; the message says when to try again.
    BUSY = "busy"
    #: The store cannot serve the request now; retry later or elsewhere.
    UNAVAILABLE = "unavailable"
    #: The server failed in a way it did not expect (and logged it).
    INTERNAL = "internal"


class HALPError(Exception):
    """Base class of every exception HALP raises on purpose."""


class ProtocolError(HALPError):
    """
    A request, or part of one, that breaks the HALP/1 rules.

    :ivar code: the :class:`ErrorCode` to answer with.
    :ivar message: one line of text for a human, naming the problem.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class StoreError(HALPError):
    """A store could not carry out an operation (I/O error, disk full, ...)."""


class StoreSchemaError(StoreError):
    """A store's on-disk data is of a version or shape this HALP cannot use."""


class ClientError(HALPError):
    """Something went wrong talking to a HALP server (client side)."""


class ConnectionClosed(ClientError):
    """The connection failed or ended before the answer was complete."""


class Timeout(ClientError):
    """The server did not answer within the time allowed."""


class BadResponse(ClientError):
    """The server sent something that is not a HALP/1 (or libhalp) answer."""


class ServerRefused(ClientError):
    """
    The server answered with an ``error`` status line.

    :ivar code: the error code as sent (it may be one this HALP does not
        know).
    :ivar message: the server's text.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"error {self.code} {self.message}".rstrip()


class NoServerAvailable(ClientError):
    """No known server could be reached."""
