# -*- test-case-name: halp.test.test_web -*-
"""
HALP's HTTP face: a JSON and text API, a GNUnet-style host list,
Prometheus metrics and a status page for operators, served by
:mod:`twisted.web` over the same :class:`~halp.core.HALPCore` as the line
protocol.

Everything here is translation: query strings and JSON bodies become the
core's arguments, and its answers become JSON, text or HTML.  The rules
(validation, clamping, caps, expiry) stay in the core and the model.

``docs/http.rst`` documents every endpoint.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from io import BytesIO
from typing import Any, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence, cast

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from halp import __version__
from halp.connlimit import BUSY_RETRY, ConnectionLimiter, Refusal
from halp.core import UNKNOWN_SOURCE, HALPCore, Page, Pending, Refused, Stored
from halp.error import ErrorCode, ProtocolError, StoreError
from halp.model import (
    Census,
    Change,
    Entry,
    LabelInfo,
    RejectedEntry,
    Window,
    check_host,
    check_label,
    check_port,
    check_timestamp,
)
from halp.server import address_host, admit, describe_address
from halp.stats import COUNTERS, OK_RESULTS
from halp.wire import format_entry, format_field

__all__ = [
    "HALPResource",
    "HALPSite",
    "HOSTLIST_CAP",
    "MAX_BODY",
    "make_site",
]

#: The largest request body accepted, in bytes; a request that announces
#: (or sends) more is answered ``413`` and the connection is closed before
#: the rest is read.  100 entries (the insert limit) fit with room to spare.
MAX_BODY = 16 * 1024

#: The most bytes ``/hostlist`` sends, as GNUnet caps its host lists
#: (``MAX_BYTES_PER_HOSTLISTS``, 500,000 bytes); the list ends at a whole
#: line.
HOSTLIST_CAP = 500_000

#: A host list is built again when it is older than this (seconds) ...
HOSTLIST_MAX_AGE = 60.0
#: ... or when entries changed and it is older than this.
HOSTLIST_MIN_AGE = 5.0

#: Host lists kept: the full one and the most recent ``?label=`` ones.
HOSTLISTS_KEPT = 65

#: Labels the status page lists.
STATUS_LABELS = 100

#: ``Cache-Control`` of entry lists: shared caches and mirrors may serve a
#: list for this many seconds.
LIST_MAX_AGE = 30

_NUMBER = re.compile(r"[0-9]{1,9}\Z")

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"


class HTTPError(Exception):
    """An answer other than 2xx, with a JSON body ``{"error", "message"}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


#: The HTTP status of each HALP error code.
_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_COMMAND: 400,
    ErrorCode.BAD_LABEL: 400,
    ErrorCode.BAD_RANGE: 400,
    ErrorCode.BAD_ENTRY: 400,
    ErrorCode.TOO_MANY_LABELS: 400,
    ErrorCode.TOO_MANY_ENTRIES: 400,
    ErrorCode.LINE_TOO_LONG: 414,
    ErrorCode.BUSY: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


@dataclass
class Answer:
    """A successful answer: status, body, type, and extra headers."""

    body: bytes
    content_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: What the request counts as in metrics (``ok``, ``not-modified``, or
    #: the error code).
    result: str = "ok"
    #: For an error, its message, for the status page.
    message: str = ""


def _json(value: object) -> bytes:
    return (json.dumps(value, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def _entry_json(entry: Entry) -> dict[str, object]:
    return {"timestamp": entry.timestamp, "host": entry.host, "port": entry.port}


def _iso(when: int) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _etag(body: bytes) -> str:
    return '"%s"' % hashlib.sha256(body).hexdigest()[:32]


def _matches(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (weak comparison)."""
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def conditional(
    request: Request,
    answer: Answer,
    last_modified: int | None,
    max_age: int,
    now: int | None = None,
) -> Answer:
    """
    Give ``answer`` an ``ETag`` (and a ``Last-Modified`` time, the newest
    confirmation it lists), and turn it into ``304 Not Modified`` when the
    request's ``If-None-Match`` (or, without one, ``If-Modified-Since``,
    unless it is later than ``now``) says the client has it already.
    """
    etag = _etag(answer.body)
    answer.headers["ETag"] = etag
    answer.headers["Cache-Control"] = f"public, max-age={max_age}"
    if last_modified is not None:
        answer.headers["Last-Modified"] = http.datetimeToString(last_modified).decode("ascii")
    none_match = _header(request, "If-None-Match")
    fresh = False
    if none_match is not None:
        fresh = _matches(none_match, etag)
    elif last_modified is not None:
        since = _header(request, "If-Modified-Since")
        if since is not None:
            try:
                when = http.stringToDatetime(since.encode("latin-1"))
            except (ValueError, IndexError, KeyError, UnicodeEncodeError):
                when = None
            # A date later than the server's clock is invalid (RFC 9110,
            # 13.1.3) and is ignored.
            fresh = when is not None and last_modified <= when and (now is None or when <= now)
    if fresh:
        answer.status = 304
        answer.body = b""
        answer.result = "not-modified"
    return answer


def _header(request: Request, name: str) -> str | None:
    # By bytes: asked by text, Twisted decodes the value as UTF-8, and a
    # Latin-1 byte in it would fail the request.
    value: bytes | None = request.getHeader(name.encode("ascii"))
    if value is None:
        return None
    return value.decode("latin-1")


def _param(request: Request, name: str) -> str | None:
    values: list[bytes] | None = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return None
    if len(values) > 1:
        raise HTTPError(400, "bad-request", f"{name} given more than once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "bad-request", f"{name} is not UTF-8") from None


def _number(request: Request, name: str, default: int, low: int) -> int:
    text = _param(request, name)
    if text is None:
        return default
    if not _NUMBER.match(text) or int(text) < low:
        raise HTTPError(
            400, ErrorCode.BAD_RANGE.value, f"{name} must be a whole number of at least {low}"
        )
    return int(text)


def _wants_text(request: Request) -> bool:
    """``?format=text|json`` decides; else ``Accept: text/plain`` without JSON."""
    chosen = _param(request, "format")
    if chosen is not None:
        if chosen not in ("text", "json"):
            raise HTTPError(400, "bad-request", "format must be text or json")
        return chosen == "text"
    accept = (_header(request, "Accept") or "").lower()
    return "text/plain" in accept and _JSON not in accept


class _Job:
    """One request being answered: what metrics and the error list record."""

    def __init__(self, kind: str, summary: str) -> None:
        self.kind = kind
        self.summary = summary


#: A handler: makes the answer of one request.
Handler = Callable[[Request, list[str], _Job], Awaitable[Answer]]


class HALPResource(Resource):
    """
    The whole HTTP face as one leaf resource that routes on the path.

    :param core: the rules and the store.
    :param clock: for the host list's age.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, core: HALPCore, clock: IReactorTime) -> None:
        super().__init__()
        self.core = core
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self._census: Census | None = None
        self.registry.register(_Collector(self))
        self.registry.register(ProcessCollector(registry=None))
        self._hostlists: dict[str, tuple[Answer, float, int, int | None]] = {}
        self._building: dict[str, list[Deferred[tuple[Answer, int | None]]]] = {}
        self._generation = 0
        core.watch(self._changed)

    def _changed(self, changes: list[Change], relay: bool) -> None:
        self._generation += 1

    # -- routing -------------------------------------------------------------

    def render(self, request: Request) -> int:
        method = request.method.decode("ascii", "replace")
        try:
            path = [p.decode("utf-8") for p in request.postpath or []]
        except UnicodeDecodeError:
            path = ["\ufffd"]
        while path and path[-1] == "" and len(path) > 1:
            path.pop()  # a trailing slash
        handler, allowed, kind = self._route(path)
        job = _Job(kind, f"{method} {'/' + '/'.join(path)}"[:120])
        d = Deferred.fromCoroutine(self._answer(request, method, path, handler, allowed, job))
        d.addErrback(self._crashed, request)
        return NOT_DONE_YET

    def _route(self, path: list[str]) -> tuple[Handler | None, tuple[str, ...], str]:
        get = ("GET", "HEAD")
        if path in ([], [""]):
            return self._status_page, get, "status"
        if path == ["hostlist"]:
            return self._hostlist, get, "hostlist"
        if path == ["metrics"]:
            return self._metrics, get, "metrics"
        if len(path) >= 2 and path[0] == "v1":
            if path[1:] == ["hello"]:
                return self._hello, get, "hello"
            if path[1:] == ["stats"]:
                return self._stats, get, "stats"
            if path[1:] == ["peers"]:
                return self._peers, get, "peers"
            if path[1:] == ["labels"]:
                return self._labels, get, "labels"
            if path[1] == "labels":
                return self._label, (*get, "POST"), "get"
        return None, (), "unknown"

    async def _answer(
        self,
        request: Request,
        method: str,
        path: list[str],
        handler: Handler | None,
        allowed: tuple[str, ...],
        job: _Job,
    ) -> None:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        try:
            if handler is None:
                raise HTTPError(404, "not-found", f"no such resource: /{'/'.join(path)}")
            if method not in allowed:
                raise HTTPError(
                    405,
                    "method-not-allowed",
                    f"{method} is not allowed here; use {', '.join(allowed)}",
                    headers={"Allow": ", ".join(allowed)},
                )
            answer = await handler(request, path, job)
        except HTTPError as e:
            answer = self._error(e)
        except ProtocolError as e:
            answer = self._error(HTTPError(_STATUS.get(e.code, 400), e.code.value, e.message))
        except StoreError as e:
            self.core.store_failed(job.summary, e)
            answer = self._error(
                HTTPError(
                    503,
                    ErrorCode.UNAVAILABLE.value,
                    "store unavailable, try again later",
                    headers={"Retry-After": "5"},
                )
            )
        if gone or request.finished:
            return
        self._record(request, job, answer)
        request.setResponseCode(answer.status)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        if answer.status != 304:
            request.setHeader("Content-Type", answer.content_type)
            request.setHeader("Content-Length", str(len(answer.body)))
            request.setHeader("X-Content-Type-Options", "nosniff")
            if method != "HEAD":
                _write_then_finish(request, answer.body, gone)
                return
        request.finish()

    def _error(self, e: HTTPError) -> Answer:
        body = {"error": e.code, "message": e.message, **e.extra}
        return Answer(
            _json(body), _JSON, e.status, dict(e.headers), result=e.code, message=e.message
        )

    def _record(self, request: Request, job: _Job, answer: Answer) -> None:
        self.core.traffic.record(
            "http",
            job.kind,
            answer.result,
            when=self.core.now(),
            peer=_client_host(request),
            request=job.summary,
            message=answer.message,
        )

    def _crashed(self, failure: Failure, request: Request) -> None:
        self._log.failure("Unexpected error answering {uri}", failure, uri=request.uri)
        if request.finished or request.channel is None:
            return
        answer = self._error(HTTPError(500, ErrorCode.INTERNAL.value, "internal server error"))
        self.core.traffic.record(
            "http", "unknown", answer.result, when=self.core.now(), peer=_client_host(request)
        )
        request.setResponseCode(500)
        request.setHeader("Content-Type", _JSON)
        request.setHeader("Content-Length", str(len(answer.body)))
        request.setHeader("X-Content-Type-Options", "nosniff")
        request.write(answer.body)
        request.finish()

    # -- /v1/labels/LABEL ----------------------------------------------------

    async def _label(self, request: Request, path: list[str], job: _Job) -> Answer:
        # Set before the label is checked: a bad label counts as a get or an insert.
        job.kind = "insert" if request.method == b"POST" else "get"
        label = check_label("/".join(path[2:]))
        if request.method == b"POST":
            return await self._insert(request, label)
        limits = self.core.limits
        offset = _number(request, "offset", 0, 0)
        limit = _number(request, "limit", limits.default_slice, 1)
        text = _wants_text(request)
        page = await self.core.get(label, Window(offset, offset + limit))
        return self._page(
            request,
            page,
            text,
            b"".join(format_entry(e) for e in page.items),
            {"label": label, "offset": offset, "limit": min(limit, limits.max_slice)},
            "entries",
            [_entry_json(e) for e in page.items],
        )

    def _page(
        self,
        request: Request,
        page: Page[Entry] | Page[LabelInfo],
        text: bool,
        lines: bytes,
        document: dict[str, object],
        key: str,
        rows: list[dict[str, object]],
    ) -> Answer:
        """
        A window of a newest-first list: ``lines`` as text, or ``document``
        with ``capped`` and the ``rows`` under ``key`` as JSON; cacheable,
        dated by its newest row.
        """
        headers = {"Vary": "Accept"}
        if page.capped:
            headers["HALP-Capped-At"] = str(self.core.limits.max_slice)
        if text:
            answer = Answer(lines, _TEXT, headers=headers)
        else:
            body = _json({**document, "capped": page.capped, key: rows})
            answer = Answer(body, _JSON, headers=headers)
        newest = page.items[0].timestamp if page.items else None
        return conditional(request, answer, newest, LIST_MAX_AGE, self.core.now())

    async def _insert(self, request: Request, label: str) -> Answer:
        kind = (_header(request, "Content-Type") or _JSON).split(";")[0].strip().lower()
        if kind != _JSON:
            raise HTTPError(
                415, "unsupported-media-type", f"send the entry as {_JSON}, not {kind}"
            )
        raw = request.content.read() if request.content is not None else b""
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise HTTPError(400, ErrorCode.BAD_REQUEST.value, f"the body is not JSON: {e}") from None
        except RecursionError:
            # Valid JSON, nested deeper than Python's parser goes.
            raise HTTPError(
                400, ErrorCode.BAD_REQUEST.value, "the body is nested too deeply"
            ) from None
        limits = self.core.limits
        items = document if isinstance(document, list) else [document]
        if not items:
            raise HTTPError(400, ErrorCode.BAD_REQUEST.value, "no entry given")
        if len(items) > limits.max_insert_entries:
            raise HTTPError(
                400,
                ErrorCode.TOO_MANY_ENTRIES.value,
                f"at most {limits.max_insert_entries} entries per request",
            )
        now = self.core.now()
        candidates = [_parse_entry(item, now) for item in items]
        outcomes = await self.core.insert(
            [label], candidates, _client_host(request) or UNKNOWN_SOURCE
        )
        stored = [o for o in outcomes if isinstance(o, Stored)]
        refused = [o for o in outcomes if isinstance(o, Refused)]
        pending = [o for o in outcomes if isinstance(o, Pending)]
        body: dict[str, object] = {
            "label": label,
            "stored": [_entry_json(o.entry) for o in stored],
            "refused": [{"entry": o.raw, "reason": o.reason} for o in refused],
        }
        if pending:
            body["pending"] = [{"entry": o.raw, "reason": o.reason} for o in pending]
        if stored:
            return Answer(_json(body), _JSON)
        if pending:
            return Answer(_json(body), _JSON, status=202)
        malformed = any(isinstance(c, RejectedEntry) for c in candidates)
        raise HTTPError(
            400 if malformed else 422,
            ErrorCode.BAD_ENTRY.value,
            refused[0].reason if refused else "nothing stored",
            extra=body,
        )

    # -- /v1/labels ------------------------------------------------------------

    async def _labels(self, request: Request, path: list[str], job: _Job) -> Answer:
        limits = self.core.limits
        prefix = (_param(request, "prefix") or "").strip("/")
        if prefix:
            prefix = check_label(prefix)
        offset = _number(request, "offset", 0, 0)
        limit = _number(request, "limit", limits.max_slice, 1)
        text = _wants_text(request)
        page = await self.core.list_labels(prefix, Window(offset, offset + limit))
        return self._page(
            request,
            page,
            text,
            "".join(f"{row.timestamp} {row.name}\n" for row in page.items).encode("ascii"),
            {"prefix": prefix, "offset": offset, "limit": min(limit, limits.max_slice)},
            "labels",
            [_label_json(row) for row in page.items],
        )

    # -- /v1/hello, /v1/stats, /v1/peers -------------------------------------

    async def _hello(self, request: Request, path: list[str], job: _Job) -> Answer:
        return self._fields(request, self.core.hello())

    async def _stats(self, request: Request, path: list[str], job: _Job) -> Answer:
        return self._fields(request, self.core.stats_fields())

    def _fields(self, request: Request, fields: list[tuple[str, object]]) -> Answer:
        if _wants_text(request):
            return Answer(b"".join(format_field(k, v) for k, v in fields), _TEXT)
        document = {k: (str(v).split() if k in ("features", "http") else v) for k, v in fields}
        return Answer(_json(document), _JSON, headers={"Cache-Control": "no-cache"})

    async def _peers(self, request: Request, path: list[str], job: _Job) -> Answer:
        peers = [
            {"address": p.address, "state": p.state, "quality": p.quality, "pinned": p.pinned}
            for p in self.core.peers()
        ]
        return Answer(_json({"peers": peers}), _JSON, headers={"Cache-Control": "no-cache"})

    # -- /hostlist -----------------------------------------------------------

    async def _hostlist(self, request: Request, path: list[str], job: _Job) -> Answer:
        label = _param(request, "label")
        if label is not None:
            label = check_label(label)
        key = label or ""
        now = self.clock.seconds()
        cached = self._hostlists.get(key)
        if cached is not None:
            answer, built, generation, newest = cached
            age = now - built
            if age < HOSTLIST_MIN_AGE or (age < HOSTLIST_MAX_AGE and generation == self._generation):
                copy = Answer(answer.body, answer.content_type, headers=dict(answer.headers))
                return conditional(request, copy, newest, int(HOSTLIST_MIN_AGE), self.core.now())
        waiter: Deferred[tuple[Answer, int | None]] = Deferred()
        waiting = self._building.get(key)
        if waiting is not None:
            waiting.append(waiter)
        else:
            # One build per list at a time: requests that come meanwhile
            # wait for it rather than walk the store again.
            self._building[key] = [waiter]
            build = Deferred.fromCoroutine(self._build_hostlist(key, label, now))
            build.addBoth(self._built, key)
        answer, newest = await waiter
        copy = Answer(answer.body, answer.content_type, headers=dict(answer.headers))
        return conditional(request, copy, newest, int(HOSTLIST_MIN_AGE), self.core.now())

    def _built(self, result: tuple[Answer, int | None] | Failure, key: str) -> None:
        for waiter in self._building.pop(key):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _build_hostlist(
        self, key: str, label: str | None, now: float
    ) -> tuple[Answer, int | None]:
        generation = self._generation
        lines, newest, truncated = await self._hostlist_lines(label)
        headers = {"HALP-Truncated": "yes" if truncated else "no"}
        answer = Answer(b"".join(lines), _TEXT, headers=headers)
        # A bound on the ?label= lists kept; the full list is always kept.
        while len(self._hostlists) >= HOSTLISTS_KEPT and key not in self._hostlists:
            oldest = min(
                (k for k in self._hostlists if k), key=lambda k: self._hostlists[k][1]
            )
            del self._hostlists[oldest]
        self._hostlists[key] = (answer, now, generation, newest)
        return answer, newest

    async def _hostlist_lines(
        self, label: str | None
    ) -> tuple[list[bytes], int | None, bool]:
        """
        The host list's lines, newest labels first, as many whole lines as
        :data:`HOSTLIST_CAP` bytes hold; the newest confirmation in them;
        and whether lines were left out.
        """
        core = self.core
        widest = core.limits.max_entries
        since = core.oldest_served()
        lines: list[bytes] = []
        size = 0
        newest: int | None = None

        async def entries_of(name: str, prefix: bytes) -> bool:
            nonlocal size, newest
            start = 0
            while True:
                page = await core.store.get(name, start, start + min(widest, 1000), since)
                for entry in page:
                    line = prefix + format_entry(entry)
                    if size + len(line) > HOSTLIST_CAP:
                        return False
                    lines.append(line)
                    size += len(line)
                    newest = entry.timestamp if newest is None else max(newest, entry.timestamp)
                if len(page) < min(widest, 1000):
                    return True
                start += len(page)

        if label is not None:
            complete = await entries_of(label, b"")
            return lines, newest, not complete

        # Depth first through the label index, most recently active first.
        stack: list[Iterator[LabelInfo]] = []
        rows = await self._all_sublabels("", since)
        stack.append(iter(rows))
        while stack:
            row = next(stack[-1], None)
            if row is None:
                stack.pop()
                continue
            if not await entries_of(row.name, row.name.encode("ascii") + b" "):
                return lines, newest, True
            children = await self._all_sublabels(row.name, since)
            if children:
                stack.append(iter(children))
        return lines, newest, False

    async def _all_sublabels(self, parent: str, since: int) -> list[LabelInfo]:
        rows: list[LabelInfo] = []
        while True:
            page = await self.core.store.list_labels(parent, len(rows), len(rows) + 1000, since)
            rows.extend(page)
            if len(page) < 1000:
                return rows

    # -- /metrics ------------------------------------------------------------

    async def _metrics(self, request: Request, path: list[str], job: _Job) -> Answer:
        self._census = await self.core.store.census(self.core.oldest_served(), 0)
        encoder, content_type = choose_encoder(_header(request, "Accept") or "")
        body = encoder(self.registry)
        return Answer(body, content_type, headers={"Cache-Control": "no-cache", "Vary": "Accept"})

    # -- / -------------------------------------------------------------------

    async def _status_page(self, request: Request, path: list[str], job: _Job) -> Answer:
        census = await self.core.store.census(self.core.oldest_served(), STATUS_LABELS)
        page = render_status(self.core, census)
        return Answer(page.encode("utf-8"), _HTML, headers={"Cache-Control": "no-cache"})


@implementer(IPushProducer)
class _Drain:
    """
    Holds a request's ``finish()`` back until the transport has taken its
    body.

    twisted.web answers the next pipelined request as soon as one is
    finished, even while the client reads nothing; a client that sends a
    packet of ``GET /hostlist`` requests and never reads would make the
    server hold every answer.  While the channel says the transport's
    buffer is full, this producer keeps the request open, so a connection
    holds at most one answer in memory.
    """

    def __init__(self, request: Request, gone: list[Failure]) -> None:
        self.request = request
        self.gone = gone
        self.paused = False
        self.written = False
        self.finished = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.written:
            self.finish()

    def stopProducing(self) -> None:
        self.finished = True  # the connection is going away

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.gone or self.request.channel is None:
            return  # the client left; the request is over
        self.request.unregisterProducer()
        if not self.request.finished:
            self.request.finish()


def _write_then_finish(request: Request, body: bytes, gone: list[Failure]) -> None:
    drain = _Drain(request, gone)
    request.registerProducer(drain, True)
    request.write(body)
    drain.written = True
    # The channel pauses its request producer when the buffer fills; one
    # that was full before this answer started says so only in its state.
    if not drain.paused and not getattr(request.channel, "_waitingForTransport", False):
        drain.finish()


def _label_json(row: LabelInfo) -> dict[str, object]:
    return {"name": row.name, "timestamp": row.timestamp}


def _client_host(request: Request) -> str:
    return address_host(request.getClientAddress())


def _parse_entry(item: object, now: int) -> Entry | RejectedEntry:
    """An entry of a POST body, or why it is not one."""
    not_an_object = 'expected an object {"host": ..., "port": ...}'
    try:
        raw = json.dumps(item, sort_keys=True)[:200]
    except RecursionError:
        # json.loads took it, but dumping it again from deeper in the stack fails.
        return RejectedEntry("(nested too deeply)", not_an_object)
    if not isinstance(item, dict):
        return RejectedEntry(raw, not_an_object)
    host, port, timestamp = item.get("host"), item.get("port"), item.get("timestamp", now)
    if not isinstance(host, str):
        return RejectedEntry(raw, "host must be a string")
    if isinstance(port, bool) or not isinstance(port, int):
        return RejectedEntry(raw, "port must be a number")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        return RejectedEntry(raw, "timestamp must be a whole number of seconds")
    try:
        return Entry(check_timestamp(str(timestamp)), check_host(host), check_port(str(port)))
    except ProtocolError as e:
        return RejectedEntry(raw, e.message)


# -- metrics -------------------------------------------------------------------


class _Collector(Collector):
    """Reads the core's counters and the last census for the registry."""

    def __init__(self, resource: HALPResource) -> None:
        self.resource = resource

    def collect(self) -> Iterable[Metric]:
        core = self.resource.core
        traffic = core.traffic
        info = InfoMetricFamily("halp", "This HALP server")
        info.add_metric([], {"version": __version__, "node": core.node_id, "store": core.store.name})
        yield info
        yield GaugeMetricFamily(
            "halp_uptime_seconds", "Seconds since the server started", value=core.now() - core.started
        )
        requests = CounterMetricFamily(
            "halp_requests",
            "Requests answered, by front end (halp1, http), kind and result (ok, "
            "not-modified, or the error code)",
            labels=["frontend", "kind", "result"],
        )
        errors = CounterMetricFamily(
            "halp_errors", "Requests answered with an error, by front end and code",
            labels=["frontend", "code"],
        )
        by_code: dict[tuple[str, str], int] = {}
        for (frontend, kind, result), count in sorted(traffic.requests.items()):
            requests.add_metric([frontend, kind, result], count)
            if result not in OK_RESULTS:
                by_code[(frontend, result)] = by_code.get((frontend, result), 0) + count
        for (frontend, code), count in sorted(by_code.items()):
            errors.add_metric([frontend, code], count)
        yield requests
        yield errors
        connections = GaugeMetricFamily(
            "halp_connections", "Open client connections, by front end", labels=["frontend"]
        )
        for frontend in ("halp1", "http"):
            connections.add_metric([frontend], traffic.connections[frontend])
        yield connections
        census = self.resource._census
        if census is not None:
            store = core.store.name
            entries = GaugeMetricFamily(
                "halp_entries", "Entries stored (until the next purge, expired ones too)",
                labels=["store"],
            )
            entries.add_metric([store], census.entries)
            yield entries
            labels = GaugeMetricFamily("halp_labels", "Labels that hold entries", labels=["store"])
            labels.add_metric([store], census.labels)
            yield labels
        for name, doc in COUNTERS.items():
            metric = "halp_" + name.replace("-", "_")
            yield CounterMetricFamily(metric, doc[0].upper() + doc[1:], value=core.stats[name])
        peers = GaugeMetricFamily(
            "halp_peers", "Known peer servers, by state", labels=["state"]
        )
        states = {"trusted": 0, "untested": 0, "backoff": 0, "banned": 0}
        for peer in core.peers():
            states[peer.state] = states.get(peer.state, 0) + 1
        for state, count in states.items():
            peers.add_metric([state], count)
        yield peers


# -- the status page ---------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;
color:#1d2330;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:.8rem 1rem}
header h1{font-size:1.2rem;margin:0}
header p{margin:.2rem 0 0;opacity:.85;font-size:.9rem}
main{padding:.5rem 1rem 2rem;max-width:60rem;margin:auto}
section{margin-top:1.2rem}
h2{font-size:1.05rem;margin:.2rem 0 .4rem}
.cards{display:flex;flex-wrap:wrap;gap:.5rem}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.5rem .8rem;
min-width:8rem}
.card b{display:block;font-size:1.25rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e6e9ee;
vertical-align:top}
th{background:#eef1f5}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.trusted{color:#1b7a3a}.backoff{color:#9a6a00}.banned{color:#b42318}
.untested{color:#555}
.empty{color:#666;font-style:italic}
code{word-break:break-all}
footer{color:#666;font-size:.8rem;margin-top:2rem}
"""


def _ago(now: int, when: int) -> str:
    seconds = max(0, now - when)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _duration(seconds: int) -> str:
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s"


def render_status(core: HALPCore, census: Census) -> str:
    """The status page: plain HTML with a little CSS, readable on a phone."""
    e = html.escape
    now = core.now()
    limits = core.limits
    peers = core.peers()
    recent = list(reversed(core.traffic.recent))
    out: list[str] = []
    add = out.append
    add("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
    add('<meta name="viewport" content="width=device-width, initial-scale=1">')
    add(f"<title>HALP server status</title><style>{_STYLE}</style></head><body>")
    add("<header><h1>HALP server status</h1>")
    add(
        f"<p>halp {e(__version__)} &middot; node <code>{e(core.node_id)}</code>"
        f" &middot; {e(core.store.name)} store</p></header><main>"
    )
    add('<section id="summary"><div class="cards">')
    cards = [
        ("Uptime", _duration(now - core.started)),
        ("Labels", f"{census.labels:,}"),
        ("Entries", f"{census.entries:,}"),
        ("Peers", f"{sum(p.state == 'trusted' for p in peers)} trusted / {len(peers)}"),
        ("Connections", f"{sum(core.traffic.connections.values()):,}"),
    ]
    for name, value in cards:
        add(f'<div class="card">{e(name)}<b>{e(value)}</b></div>')
    add("</div>")
    add(
        f"<p>Entries are served for {e(_duration(limits.ttl))} after their last"
        f" confirmation; each label keeps its {limits.max_entries:,} newest."
        f" Server time {e(_iso(now))}.</p></section>"
    )

    add('<section id="labels"><h2>Labels</h2>')
    if census.busiest:
        shown = len(census.busiest)
        if census.labels > shown:
            add(f"<p>The {shown} most recently active of {census.labels:,}.</p>")
        add('<div class="scroll"><table><thead><tr><th>Label</th><th>Entries</th>'
            "<th>Newest confirmation</th></tr></thead><tbody>")
        for row in census.busiest:
            add(
                f'<tr><td><a href="/v1/labels/{e(row.name)}"><code>{e(row.name)}</code></a></td>'
                f'<td class="n">{row.entries:,}</td>'
                f'<td><time datetime="{_iso(row.active)}">{e(_ago(now, row.active))}</time></td></tr>'
            )
        add("</tbody></table></div>")
    else:
        add('<p class="empty">No entries yet.</p>')
    add("</section>")

    add('<section id="peers"><h2>Peer servers</h2>')
    if peers:
        add('<div class="scroll"><table><thead><tr><th>Server</th><th>State</th>'
            "<th>Quality</th></tr></thead><tbody>")
        for peer in peers:
            pinned = " (pinned)" if peer.pinned else ""
            add(
                f"<tr><td><code>{e(peer.address)}</code>{pinned}</td>"
                f'<td class="{e(peer.state)}">{e(peer.state)}</td>'
                f'<td class="n">{peer.quality:,}</td></tr>'
            )
        add("</tbody></table></div>")
    else:
        add('<p class="empty">No peer servers known (federation is off, or none was found yet).</p>')
    add("</section>")

    add('<section id="errors"><h2>Recent errors</h2>')
    if recent:
        add('<div class="scroll"><table><thead><tr><th>When</th><th>Client network</th>'
            "<th>Request</th><th>Error</th></tr></thead><tbody>")
        for error in recent:
            add(
                f'<tr><td><time datetime="{_iso(error.time)}">{e(_ago(now, error.time))}</time></td>'
                f"<td><code>{e(error.network)}</code></td>"
                f"<td>{e(error.frontend)}: <code>{e(error.request)}</code></td>"
                f"<td><b>{e(error.code)}</b> {e(error.message)}</td></tr>"
            )
        add("</tbody></table></div>")
    else:
        add('<p class="empty">No errors since the server started.</p>')
    add("</section>")
    add(
        '<footer><a href="/metrics">metrics</a> &middot; <a href="/hostlist">host list</a>'
        ' &middot; <a href="/v1/hello">hello</a> &middot; <a href="/v1/stats">counters</a>'
        "</footer></main></body></html>\n"
    )
    return "".join(out)


# -- the site ------------------------------------------------------------------


class _BodyLimitedRequest(Request):
    """
    A request that refuses a body longer than :data:`MAX_BODY`: one that
    is sent without a length (chunked) is cut off as soon as it grows past
    it.
    """

    _refused = False

    def gotLength(self, length: int | None) -> None:
        # A body is at most MAX_BODY bytes (more is refused), so it is kept
        # in memory.  twisted.web would spool one of unknown length
        # (chunked) or of 100,000 bytes or more to a temporary file.
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        if self.content is not None and self.content.tell() + len(data) > MAX_BODY:
            self._refused = True
            channel = self.channel
            if isinstance(channel, _Channel):
                channel.refuse_body()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)


class _Channel(http.HTTPChannel):
    """
    An HTTP/1.1 connection that answers an over-long body with 413 first,
    and a request that takes more than the site's ``request_timeout`` to
    arrive (headers and body, from the read that began it) with 408.
    """

    site: HALPSite
    #: Whether the connection was answered 413 or 408: nothing more is read.
    _refused = False
    #: Between a whole request and the end of its answer (no deadline runs).
    _answering = False
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.core.traffic.connected("http", 1)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._cancel_deadline()
        self.site.core.traffic.connected("http", -1)
        self.site.channel_closed(self)
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            # The request's body would go to a request that has none (no
            # gotLength()) and fail; the answer is sent, the connection
            # closing: the transport may still deliver what it had read.
            return
        if self._deadline is None and not self._answering:
            self._deadline = self.site.clock.callLater(
                self.site.request_timeout, self._request_late
            )
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        self._answering = True
        super().allContentReceived()

    def requestDone(self, request: http.Request) -> None:
        self._answering = False
        super().requestDone(request)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _request_late(self) -> None:
        """Answer 408 to a request that did not arrive in time (a slowloris)."""
        self._deadline = None
        if self._refused or self._answering:
            return
        timeout = self.site.request_timeout
        self._close_with(
            b"408 Request Timeout",
            "request-timeout",
            f"the request did not arrive within {timeout:g} s",
            kind="unknown",
            summary="(request not complete)",
        )

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > MAX_BODY:
            self.refuse_body()
            return
        super().allHeadersReceived()

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request line or header line over 16 KiB: 414 or 431, then close."""
        if getattr(self, "_HTTPChannel__first_line", True):
            self._close_with(
                b"414 URI Too Long",
                "too-large",
                "the request line is over 16384 bytes",
                kind="unknown",
                summary="(request line too long)",
            )
        else:
            self._close_with(
                b"431 Request Header Fields Too Large",
                "too-large",
                "a header line is over 16384 bytes",
                kind="unknown",
                summary="(header too long)",
            )

    def refuse_body(self) -> None:
        """Answer 413 and close, reading no more of the request."""
        self._close_with(
            b"413 Payload Too Large",
            "too-large",
            f"the request body is over {MAX_BODY} bytes",
            kind="insert",
            summary="(request body too large)",
            logged=f"over {MAX_BODY} bytes",
        )

    def _close_with(
        self,
        status: bytes,
        error: str,
        message: str,
        *,
        kind: str,
        summary: str,
        logged: str | None = None,
    ) -> None:
        """
        Answer ``status`` with a JSON error and close, reading nothing
        more; a peer that does not take the answer is cut off after
        ``abortTimeout``.
        """
        if self._refused:
            return
        self._refused = True
        self._cancel_deadline()
        transport = self.transport
        assert transport is not None
        transport.write(_error_response(status, error, message))
        core = self.site.core
        core.traffic.record(
            "http",
            kind,
            error,
            when=core.now(),
            peer=address_host(transport.getPeer()),
            request=summary,
            message=message if logged is None else logged,
        )
        self.loseConnection()
        if self.abortTimeout is not None and self._abortingCall is None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)


def _error_response(status: bytes, error: str, message: str, headers: bytes = b"") -> bytes:
    """A whole ``Connection: close`` response with a JSON error body."""
    body = _json({"error": error, "message": message})
    return (
        b"HTTP/1.1 %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n"
        b"%s"
        b"Connection: close\r\n\r\n%s" % (status, len(body), headers, body)
    )


class HALPSite(Site):
    """
    The :class:`~twisted.web.server.Site` of the HTTP face: the
    :class:`HALPResource`, a body limit, a request deadline, connection
    caps and counting, and request logging in the same form as the line
    protocol's.

    :param timeout: seconds of silence after which a connection is closed.
    :param request_timeout: seconds a request (headers and body) may take
        to arrive; a slower one is answered ``408``.
    :param abort_timeout: seconds a closing connection may take to drain
        before it is aborted.
    :param limiter: the connection caps, shared with the server's other
        listeners; by default one of its own with the default caps.  A
        connection over a cap is answered ``503`` and closed.
    """

    requestFactory = _BodyLimitedRequest
    protocol = _Channel  # type: ignore[assignment]
    noisy = False
    _log = Logger()

    def __init__(
        self,
        core: HALPCore,
        clock: IReactorTime,
        *,
        timeout: float = 60.0,
        request_timeout: float = 30.0,
        abort_timeout: float = 15.0,
        limiter: ConnectionLimiter | None = None,
        log_requests: bool = True,
    ) -> None:
        self.core = core
        self.clock = clock
        self.request_timeout = request_timeout
        self.abort_timeout = abort_timeout
        self.limiter = limiter if limiter is not None else ConnectionLimiter()
        self.log_requests = log_requests
        #: The limiter key of each admitted connection, until it closes.
        self._admitted: dict[_Channel, str | None] = {}
        super().__init__(HALPResource(core, clock), timeout=timeout, reactor=clock)

    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> Protocol | None:
        """
        A channel for a connection from ``addr`` that the :attr:`limiter`
        admits, else a :class:`~halp.connlimit.Refusal` that answers
        ``503``.
        """
        key, message = admit(self.core, self.limiter, self.clock, "http", addr)
        if message is not None:
            answer = _error_response(
                b"503 Service Unavailable",
                ErrorCode.BUSY.value,
                message,
                b"Retry-After: %d\r\n" % BUSY_RETRY,
            )
            return Refusal(answer, self.clock, self.abort_timeout)
        channel = cast(_Channel, super().buildProtocol(addr))
        channel.abortTimeout = self.abort_timeout  # type: ignore[assignment]  # int in the stubs
        self._admitted[channel] = key
        return channel

    def channel_closed(self, channel: _Channel) -> None:
        if channel in self._admitted:
            self.limiter.release(self._admitted.pop(channel))

    def log(self, request: http.Request) -> None:
        if not self.log_requests:
            return
        self._log.info(
            "{peer} {method} {uri} -> {code}",
            peer=describe_address(request.getClientAddress()),
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("ascii", "replace")[:200],
            code=request.code,
        )


def make_site(
    core: HALPCore,
    clock: IReactorTime,
    *,
    timeout: float = 60.0,
    request_timeout: float = 30.0,
    abort_timeout: float = 15.0,
    limiter: ConnectionLimiter | None = None,
    log_requests: bool = True,
) -> HALPSite:
    """The HTTP face of ``core``, ready to listen with (see :class:`HALPSite`)."""
    return HALPSite(
        core,
        clock,
        timeout=timeout,
        request_timeout=request_timeout,
        abort_timeout=abort_timeout,
        limiter=limiter,
        log_requests=log_requests,
    )
