# -*- test-case-name: halp.test.test_wire -*-
"""
The HALP/1 wire codec: request lines in, frozen request objects out, and the
bytes of every response line.

This module is sans-IO.  It imports nothing from :mod:`twisted.internet`; a
protocol feeds it one line at a time (without the line ending) through a
:class:`RequestDecoder` and writes whatever the ``format_*`` functions
return.  The grammar it implements is in ``docs/protocol.rst``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from halp.error import ErrorCode, ProtocolError
from halp.model import (
    Change,
    Entry,
    LabelInfo,
    Limits,
    RejectedEntry,
    Window,
    check_host,
    check_label,
    check_port,
    check_timestamp,
    format_host_port,
    parse_host_port,
)

__all__ = [
    "Changes",
    "ChangesStatus",
    "Get",
    "Peers",
    "Push",
    "Stats",
    "format_change",
    "format_changes_status",
    "format_peer",
    "parse_change_line",
    "parse_changes_status",
    "Hello",
    "InsertOutcome",
    "Insert",
    "LineBuffer",
    "ListLabels",
    "Quit",
    "Reply",
    "Request",
    "RequestDecoder",
    "Response",
    "ResponseReader",
    "Status",
    "Window",
    "format_entry",
    "format_error",
    "format_failure",
    "format_pending",
    "format_field",
    "format_label",
    "format_ok",
    "format_request",
    "format_success",
    "parse_entry_line",
    "parse_field_line",
    "parse_insert_line",
    "parse_label_line",
    "parse_status",
    "printable",
    "summarize",
]

#: The most digits a slice bound may have.
MAX_SLICE_DIGITS = 9


@dataclass(frozen=True, slots=True)
class Get:
    """``get LABEL`` or ``get LABEL[A:B]``: entries of a label, newest first."""

    label: str
    #: ``None`` asks for the server's default first window.
    window: Window | None = None


@dataclass(frozen=True, slots=True)
class ListLabels:
    """``get labels`` (``parent == ""``) or ``get PARENT/``: the label index."""

    parent: str
    window: Window | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    """``insert LABEL [LABEL ...]`` and its block of entry lines."""

    labels: tuple[str, ...]
    entries: tuple[Entry | RejectedEntry, ...]


@dataclass(frozen=True, slots=True)
class Hello:
    """``hello``: the server's protocol version and limits."""


@dataclass(frozen=True, slots=True)
class Quit:
    """``quit``: answer ``ok``, then close the connection."""


@dataclass(frozen=True, slots=True)
class Changes:
    """``changes CURSOR [LIMIT]``: the change feed after ``CURSOR``."""

    #: ``"0"`` for the beginning, or a cursor the server returned.
    cursor: str
    #: ``None`` asks for as many as the server allows.
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Push:
    """``push [SERVER]`` and its block of change lines, from a peer server."""

    #: The pushing server's public address (``HOST:PORT``), if it gave one.
    server: str | None
    changes: tuple[Change | RejectedEntry, ...]


@dataclass(frozen=True, slots=True)
class Stats:
    """``stats``: the server's counters."""


@dataclass(frozen=True, slots=True)
class Peers:
    """``peers``: the servers this one federates with."""


#: Any request a :class:`RequestDecoder` produces.
Request = Union[Get, ListLabels, Insert, Hello, Quit, Changes, Push, Stats, Peers]


@dataclass(frozen=True, slots=True)
class Reply:
    """
    A whole response: data lines, then exactly one status line.

    Each element of ``lines`` and ``status`` is one line including its
    ``\\n``.
    """

    lines: tuple[bytes, ...]
    status: bytes


@dataclass(frozen=True, slots=True)
class Status:
    """A parsed status line (for clients)."""

    ok: bool
    #: ``None`` for ``ok``, else the error code as sent (it may be one this
    #: version does not know).
    code: str | None
    text: str


_WORDS = re.compile(rb"[ \t]+")
_TARGET = re.compile(
    r"(?P<name>[^\[\]]*)(?:\[(?P<start>[0-9]*):(?P<stop>[0-9]*)\])?\Z"
)


def _words(line: bytes) -> list[bytes]:
    return [w for w in _WORDS.split(line) if w]


def printable(raw: bytes) -> str:
    """
    ``raw`` as one line of printable ASCII: any other byte becomes ``\\xNN``.
    Used to echo what a peer sent without letting it forge lines.
    """
    return "".join(
        chr(b) if 0x20 <= b < 0x7F and b != 0x5C else "\\x%02x" % b for b in raw
    )


def _ascii(raw: bytes, what: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(code, f"{what} is not ASCII") from None
    return text


def parse_entry_line(line: bytes) -> Entry:
    """
    Parse ``TIMESTAMP HOST PORT`` (fields separated by spaces or tabs).

    :raises ProtocolError: with code ``bad-entry`` and the reason.
    """
    words = _words(line)
    if len(words) != 3:
        raise ProtocolError(
            ErrorCode.BAD_ENTRY, "expected 3 fields: TIMESTAMP HOST PORT"
        )
    timestamp, host, port = (_ascii(w, "entry", ErrorCode.BAD_ENTRY) for w in words)
    return Entry(check_timestamp(timestamp), check_host(host), check_port(port))


def parse_change_line(line: bytes) -> Change:
    """
    Parse ``LABEL TIMESTAMP HOST PORT [SOURCE]``, a line of a ``push``
    block or of a ``changes`` answer; ``SOURCE`` ``-`` (or none) is
    unknown.

    :raises ProtocolError: with code ``bad-entry`` or ``bad-label``.
    """
    words = _words(line)
    if len(words) not in (4, 5):
        raise ProtocolError(
            ErrorCode.BAD_ENTRY, "expected LABEL TIMESTAMP HOST PORT [SOURCE]"
        )
    label = check_label(_ascii(words[0], "label", ErrorCode.BAD_LABEL))
    entry = parse_entry_line(b" ".join(words[1:4]))
    source = ""
    if len(words) == 5 and words[4] != b"-":
        source = check_host(_ascii(words[4], "source", ErrorCode.BAD_ENTRY))
    return Change(label, entry, source)


_CURSOR_TOKEN = re.compile(r"[A-Za-z0-9:._-]{1,64}\Z")


def _parse_changes(args: list[bytes], limits: Limits) -> Changes:
    if not 1 <= len(args) <= 2:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "usage: changes CURSOR [LIMIT]")
    cursor = _ascii(args[0], "cursor")
    if not _CURSOR_TOKEN.match(cursor):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "a cursor is 0 or a word a changes answer gave"
        )
    limit = None
    if len(args) == 2:
        text = _ascii(args[1], "limit")
        if not text.isdigit() or len(text) > MAX_SLICE_DIGITS or int(text) == 0:
            raise ProtocolError(ErrorCode.BAD_RANGE, "the limit is a positive number")
        limit = int(text)
    return Changes(cursor, limit)


def _parse_push_header(args: list[bytes]) -> str | None:
    if len(args) > 1:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "usage: push [HOST:PORT]")
    if not args:
        return None
    try:
        host, port = parse_host_port(_ascii(args[0], "server"))
    except ProtocolError as e:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"push: {e.message}") from None
    return format_host_port(host, port)


def _parse_window(start: str | None, stop: str | None) -> Window | None:
    if start is None:
        return None
    if len(start) > MAX_SLICE_DIGITS or len(stop or "") > MAX_SLICE_DIGITS:
        raise ProtocolError(ErrorCode.BAD_RANGE, "slice bound too large")
    first = int(start) if start else 0
    last = int(stop) if stop else None
    if last is not None and last < first:
        raise ProtocolError(ErrorCode.BAD_RANGE, "slice ends before it starts")
    return Window(first, last)


def _parse_get(args: list[bytes]) -> Get | ListLabels:
    if len(args) != 1:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "usage: get LABEL[A:B]")
    target = _ascii(args[0], "label", ErrorCode.BAD_LABEL)
    match = _TARGET.match(target)
    if match is None:
        raise ProtocolError(ErrorCode.BAD_RANGE, "a slice is written [A:B]")
    name = match.group("name")
    window = _parse_window(match.group("start"), match.group("stop"))
    if name == "labels":
        return ListLabels("", window)
    if name.endswith("/"):
        return ListLabels(check_label(name[:-1]), window)
    return Get(check_label(name), window)


def _parse_insert_header(args: list[bytes], limits: Limits) -> tuple[str, ...]:
    if not args:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "usage: insert LABEL [LABEL ...]")
    labels = tuple(
        dict.fromkeys(check_label(_ascii(a, "label", ErrorCode.BAD_LABEL)) for a in args)
    )
    if len(labels) > limits.max_insert_labels:
        raise ProtocolError(
            ErrorCode.TOO_MANY_LABELS,
            f"at most {limits.max_insert_labels} labels per insert",
        )
    return labels


class LineBuffer:
    """
    Splits a byte stream into lines, in time linear in its length.

    (Twisted's ``LineReceiver`` copies the rest of its buffer for every
    line, which makes a 64 KiB read of short lines cost quadratic time;
    here each line is copied once, and :meth:`feed` copies only what was
    not taken yet, normally part of one line.)  Lines come out without
    their LF; a CR before it is left for the :class:`RequestDecoder` to
    strip.  A line longer than ``max_line`` bytes, not counting its line
    ending, raises ``line-too-long`` as soon as that is certain, so at most
    ``max_line + 1`` bytes of an unfinished line are ever held.
    """

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._data = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Append bytes received."""
        if self._pos < len(self._data):
            self._data = self._data[self._pos :] + data
        else:
            self._data = bytes(data)
        self._pos = 0

    def next_line(self) -> bytes | None:
        """
        The next complete line, or ``None`` until more bytes are fed.

        :raises ~halp.error.ProtocolError: ``line-too-long``; the buffer is
            emptied and unusable afterwards.
        """
        data, pos = self._data, self._pos
        end = data.find(b"\n", pos)
        if end < 0:
            pending = len(data) - pos
            if pending > self._max + 1 or (pending == self._max + 1 and not data.endswith(b"\r")):
                self._overflow()
            return None
        if end - pos > self._max and (end - pos > self._max + 1 or data[end - 1] != 13):
            self._overflow()
        self._pos = end + 1
        return data[pos:end]

    @property
    def partial(self) -> bool:
        """Whether bytes of an unterminated line are buffered."""
        return len(self._data) > self._pos and not self._data.endswith(b"\n")

    def end(self) -> None:
        """The stream ended: an unterminated last line counts as complete."""
        if self.partial:
            self._data += b"\n"

    def _overflow(self) -> None:
        self._data = b""
        self._pos = 0
        raise ProtocolError(
            ErrorCode.LINE_TOO_LONG, f"request lines are at most {self._max} bytes"
        )


class RequestDecoder:
    """
    Turns request lines into requests.

    Feed it each line without its line ending.  Most lines are a whole
    request; ``insert`` opens a block that ends at the next empty line, and
    the decoder buffers at most ``limits.max_insert_entries`` parsed entries
    of it (later lines are counted and dropped, and the request fails with
    ``too-many-entries``).  Syntax errors come back as :class:`~halp.error.ProtocolError`
    values, not raised, so that the caller answers them in request order.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._in_block = False
        self._push = False  # the open block is a push, not an insert
        self._labels: tuple[str, ...] = ()
        self._server: str | None = None
        self._block_error: ProtocolError | None = None
        self._entries: list[Entry | Change | RejectedEntry] = []
        self._extra = 0

    @property
    def in_block(self) -> bool:
        """Whether an ``insert`` block is open, waiting for its empty line."""
        return self._in_block

    def feed(self, line: bytes) -> Request | ProtocolError | None:
        """
        Take one line.

        :return: a complete request, a :class:`~halp.error.ProtocolError` to answer, or
            ``None`` when the line completes nothing (a blank line between
            requests, or an entry line inside a block).
        """
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._in_block:
            if line.strip(b" \t"):
                self._add_entry(line)
                return None
            return self.end()
        words = _words(line)
        if not words:
            return None
        command, args = words[0], words[1:]
        try:
            if command == b"get":
                return _parse_get(args)
            if command == b"insert":
                self._open_block(args, push=False)
                return None
            if command == b"push":
                self._open_block(args, push=True)
                return None
            if command == b"hello":
                return Hello()
            if command == b"changes":
                return _parse_changes(args, self._limits)
            if command in (b"stats", b"peers"):
                if args:
                    raise ProtocolError(
                        ErrorCode.BAD_REQUEST, f"usage: {command.decode()}"
                    )
                return Stats() if command == b"stats" else Peers()
            if command == b"quit":
                if args:
                    raise ProtocolError(ErrorCode.BAD_REQUEST, "usage: quit")
                return Quit()
            raise ProtocolError(
                ErrorCode.UNKNOWN_COMMAND,
                f"unknown command '{printable(command)}'; "
                "known: get, insert, hello, quit, changes, push, stats, peers",
            )
        except ProtocolError as e:
            return e

    def end(self) -> Request | ProtocolError | None:
        """
        End an open ``insert`` block (an empty line, or the end of the
        input) and return the request it makes; ``None`` if none was open.
        """
        if not self._in_block:
            return None
        self._in_block = False
        labels, entries, extra = self._labels, tuple(self._entries), self._extra
        error, self._block_error = self._block_error, None
        self._labels, self._entries, self._extra = (), [], 0
        if error is not None:
            return error
        if extra:
            return ProtocolError(
                ErrorCode.TOO_MANY_ENTRIES,
                f"{len(entries) + extra} entry lines; at most "
                f"{self._block_limit()} per {'push' if self._push else 'insert'}",
            )
        if self._push:
            return Push(self._server, entries)  # type: ignore[arg-type]
        return Insert(labels, entries)  # type: ignore[arg-type]

    def _block_limit(self) -> int:
        if self._push:
            return self._limits.max_gossip_entries
        return self._limits.max_insert_entries

    def _open_block(self, args: list[bytes], push: bool) -> None:
        self._in_block = True
        self._push = push
        try:
            if push:
                self._server = _parse_push_header(args)
            else:
                self._labels = _parse_insert_header(args, self._limits)
        except ProtocolError as e:
            self._block_error = e

    def _add_entry(self, line: bytes) -> None:
        if self._block_error is not None:
            return
        if len(self._entries) >= self._block_limit():
            self._extra += 1
            return
        try:
            parse = parse_change_line if self._push else parse_entry_line
            self._entries.append(parse(line))
        except ProtocolError as e:
            self._entries.append(RejectedEntry(printable(line.strip(b" \t")), e.message))


# -- responses ---------------------------------------------------------------


def format_entry(entry: Entry) -> bytes:
    """``TIMESTAMP HOST PORT``: a data line of a ``get`` answer."""
    return b"%d %s %d\n" % (entry.timestamp, entry.host.encode("ascii"), entry.port)


def format_label(info: LabelInfo) -> bytes:
    """``TIMESTAMP NAME``: a data line of a label listing (last segment)."""
    return b"%d %s\n" % (info.timestamp, info.segment.encode("ascii"))


def format_success(label: str, entry: Entry) -> bytes:
    """``success: LABEL TIMESTAMP HOST PORT``, with the stored time."""
    return b"success: %s %d %s %d\n" % (
        label.encode("ascii"),
        entry.timestamp,
        entry.host.encode("ascii"),
        entry.port,
    )


def format_failure(label: str, raw: str, reason: str) -> bytes:
    """
    ``failure: LABEL LINE ; REASON``: an entry that was not stored.  For a
    pushed line that could not be parsed, ``label`` is ``""`` and ``raw``
    the whole line: ``failure: LINE ; REASON``.
    """
    line = f"{label} {raw}" if label else raw
    return ("failure: %s ; %s\n" % (line, _one_line(reason))).encode("ascii")


def format_pending(label: str, raw: str, reason: str) -> bytes:
    """
    ``pending: LABEL LINE ; REASON``: an entry that names a host other than
    its sender, stored and served once the server has reached that host.
    """
    return ("pending: %s %s ; %s\n" % (label, raw, _one_line(reason))).encode("ascii")


def format_peer(address: str, state: str, quality: int, pinned: bool) -> bytes:
    """``HOST:PORT STATE QUALITY [pinned]``: a line of a ``peers`` answer."""
    tail = " pinned" if pinned else ""
    return ("%s %s %d%s\n" % (address, state, quality, tail)).encode("ascii")


def format_change(change: Change) -> bytes:
    """``LABEL TIMESTAMP HOST PORT SOURCE``: a line of ``push`` or ``changes``."""
    entry = change.entry
    return b"%s %d %s %d %s\n" % (
        change.label.encode("ascii"),
        entry.timestamp,
        entry.host.encode("ascii"),
        entry.port,
        (change.source or "-").encode("ascii"),
    )


def format_field(key: str, value: object) -> bytes:
    """``KEY VALUE``: a data line of a ``hello`` answer."""
    return ("%s %s\n" % (key, _one_line(str(value)))).encode("ascii")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    ascii_text = text.encode("ascii", "backslashreplace").decode("ascii")
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), ascii_text)


def format_ok(text: str = "") -> bytes:
    """The ``ok`` status line, with optional words after it."""
    if not text:
        return b"ok\n"
    return ("ok %s\n" % _one_line(text)).encode("ascii")


def format_error(code: ErrorCode, message: str) -> bytes:
    """The ``error CODE MESSAGE`` status line."""
    return ("error %s %s\n" % (code.value, _one_line(message))).encode("ascii")


def parse_status(line: bytes) -> Status | None:
    """
    Parse a status line (without its line ending); ``None`` for a data line.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    text = line.decode("ascii", "replace")
    word, _, rest = text.partition(" ")
    if word == "ok":
        return Status(True, None, rest)
    if word == "error":
        code, _, message = rest.partition(" ")
        return Status(False, code, message)
    return None


# -- requests, for clients ---------------------------------------------------


def _format_target(name: str, window: Window | None) -> str:
    if window is None:
        return name
    stop = "" if window.stop is None else str(window.stop)
    return f"{name}[{window.start}:{stop}]"


def format_request(request: Request) -> bytes:
    """The bytes a client sends for ``request``, line endings included."""
    if isinstance(request, Get):
        return b"get %s\n" % _format_target(request.label, request.window).encode()
    if isinstance(request, ListLabels):
        name = request.parent + "/" if request.parent else "labels"
        return b"get %s\n" % _format_target(name, request.window).encode()
    if isinstance(request, Insert):
        lines: list[bytes] = [b"insert %s\n" % " ".join(request.labels).encode()]
        for entry in request.entries:
            if isinstance(entry, RejectedEntry):
                raise ValueError("cannot send an unparsed entry line")
            lines.append(format_entry(entry))
        lines.append(b"\n")
        return b"".join(lines)
    if isinstance(request, Push):
        header = b"push %s\n" % request.server.encode() if request.server else b"push\n"
        body = []
        for change in request.changes:
            if isinstance(change, RejectedEntry):
                raise ValueError("cannot send an unparsed change line")
            body.append(format_change(change))
        return header + b"".join(body) + b"\n"
    if isinstance(request, Changes):
        if request.limit is None:
            return b"changes %s\n" % request.cursor.encode()
        return b"changes %s %d\n" % (request.cursor.encode(), request.limit)
    if isinstance(request, Hello):
        return b"hello\n"
    if isinstance(request, Stats):
        return b"stats\n"
    if isinstance(request, Peers):
        return b"peers\n"
    return b"quit\n"


def summarize(request: Request) -> str:
    """A short text form of ``request`` for logs."""
    if isinstance(request, Insert):
        return "insert %s (%d entries)" % (" ".join(request.labels), len(request.entries))
    if isinstance(request, Push):
        return "push %s(%d entries)" % (
            request.server + " " if request.server else "",
            len(request.changes),
        )
    return format_request(request).decode("ascii").strip()


# -- responses, for clients --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """
    A whole response as a client reads it.

    :ivar lines: the data lines, without their line endings.
    :ivar status: the status line, or ``None`` for an answer in the libhalp
        form (data lines, then the server closed the connection).
    """

    lines: tuple[bytes, ...]
    status: Status | None


class ResponseReader:
    """
    Splits the lines a server sends into :class:`Response` objects: data
    lines up to and including the next status line.
    """

    def __init__(self) -> None:
        self._lines: list[bytes] = []

    @property
    def pending(self) -> int:
        """Data lines read since the last status line."""
        return len(self._lines)

    def feed(self, line: bytes) -> Response | None:
        """Take one line, without its line ending; a :class:`Response` when complete."""
        status = parse_status(line)
        if status is None:
            self._lines.append(line[:-1] if line.endswith(b"\r") else line)
            return None
        lines, self._lines = tuple(self._lines), []
        return Response(lines, status)

    def end(self) -> Response:
        """
        The connection closed: the data lines read since the last status
        line, as an answer in the libhalp form.
        """
        lines, self._lines = tuple(self._lines), []
        return Response(lines, None)


def parse_label_line(line: bytes, parent: str) -> LabelInfo:
    """
    Parse ``TIMESTAMP SEGMENT``, a data line of a label listing of
    ``parent`` (``""`` for ``get labels``), into a row with the full name.

    :raises ProtocolError: ``bad-entry`` or ``bad-label``.
    """
    words = _words(line)
    if len(words) != 2:
        raise ProtocolError(ErrorCode.BAD_ENTRY, "expected 2 fields: TIMESTAMP LABEL")
    timestamp = check_timestamp(_ascii(words[0], "label row", ErrorCode.BAD_ENTRY))
    segment = _ascii(words[1], "label", ErrorCode.BAD_LABEL)
    if "/" in segment:
        raise ProtocolError(ErrorCode.BAD_LABEL, "a listed label is one segment")
    name = f"{parent}/{segment}" if parent else segment
    return LabelInfo(timestamp, check_label(name))


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    """
    A data line of an ``insert`` answer, as a client reads it.

    :ivar entry: for a ``success:`` line, the entry with its stored time.
    :ivar reason: for a ``failure:`` line, why the entry was not stored;
        for a ``pending:`` line, what it waits for.
    :ivar pending: whether it is a ``pending:`` line: the server stores
        the entry once it has reached its host itself.
    """

    label: str
    entry: Entry | None
    offered: str = ""
    reason: str = ""
    pending: bool = False

    @property
    def stored(self) -> bool:
        return self.entry is not None


def parse_insert_line(line: bytes) -> InsertOutcome:
    """
    Parse ``success: LABEL TIMESTAMP HOST PORT``,
    ``failure: LABEL LINE ; REASON`` or ``pending: LABEL LINE ; REASON``.

    :raises ProtocolError: ``bad-entry`` for anything else.
    """
    text = _ascii(line, "insert answer", ErrorCode.BAD_ENTRY)
    if text.endswith("\r"):
        text = text[:-1]
    kind, _, rest = text.partition(" ")
    # Not rstrip: "failure: LABEL LINE ; " (an empty reason) must keep its " ; ".
    label, _, detail = rest.lstrip().partition(" ")
    if kind == "success:":
        entry = parse_entry_line(detail.encode("ascii"))
        return InsertOutcome(check_label(label), entry)
    if kind in ("failure:", "pending:"):
        offered, sep, reason = detail.rpartition(" ; ")
        if not sep:
            offered, reason = detail, ""
        return InsertOutcome(
            check_label(label), None, offered.strip(), reason.strip(), kind == "pending:"
        )
    raise ProtocolError(ErrorCode.BAD_ENTRY, "expected success:, failure: or pending:")


def parse_field_line(line: bytes) -> tuple[str, str]:
    """Parse ``KEY VALUE``, a data line of a ``hello`` answer."""
    text = _ascii(line, "field", ErrorCode.BAD_ENTRY)
    key, _, value = text.partition(" ")
    if not key:
        raise ProtocolError(ErrorCode.BAD_ENTRY, "empty field name")
    return key, value.strip()


@dataclass(frozen=True, slots=True)
class ChangesStatus:
    """The status of a ``changes`` answer: ``ok N next CURSOR more|end``."""

    count: int
    cursor: str
    more: bool


def format_changes_status(count: int, cursor: str, more: bool) -> bytes:
    """The status line of a ``changes`` answer."""
    return format_ok(f"{count} next {cursor} {'more' if more else 'end'}")


def parse_changes_status(status: Status) -> ChangesStatus:
    """
    Read the status of a ``changes`` answer.

    :raises ProtocolError: ``bad-entry`` if it is not one.
    """
    words = status.text.split()
    if (
        len(words) != 4
        or not words[0].isdigit()
        or len(words[0]) > MAX_SLICE_DIGITS  # int() refuses over 4300 digits
        or words[1] != "next"
        or not _CURSOR_TOKEN.match(words[2])
        or words[3] not in ("more", "end")
    ):
        raise ProtocolError(ErrorCode.BAD_ENTRY, "expected: ok N next CURSOR more|end")
    return ChangesStatus(int(words[0]), words[2], words[3] == "more")
