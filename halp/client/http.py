# -*- test-case-name: halp.test.test_client_http -*-
"""
HALP requests over a server's HTTP face (``docs/http.rst``), with treq.

:class:`HTTPExchange` turns the requests the client makes (``get``, label
listings, ``insert``, ``hello``, ``stats``) into HTTP requests and the
answers back into :class:`~halp.wire.Response` objects with the same data
lines a HALP/1 server sends, so that the client reads both kinds of
server with one set of rules.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet import error as net
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from halp.client.servers import ServerAddress
from halp.error import BadResponse, ClientError, ConnectionClosed
from halp.model import Entry, Window
from halp.wire import (
    Get,
    Hello,
    Insert,
    ListLabels,
    Request,
    Response,
    Stats,
    Status,
    format_failure,
    format_pending,
    format_success,
)

__all__ = ["HTTPExchange", "MAX_HTTP_ANSWER"]

#: The most bytes of one HTTP answer the client reads; a HALP answer is
#: far shorter (100 entries of at most 270 bytes in JSON).
MAX_HTTP_ANSWER = 1 << 20


class _URL(EncodedURL):
    """
    A URL that is ASCII already, as every URL made here is: treq turns
    URLs into URIs with :meth:`to_uri`, which IDNA-encodes the host and
    fails on an IPv6 literal (hyperlink issues 68 and 188).
    """

    def to_uri(self) -> EncodedURL:
        return self


class HTTPExchange:
    """
    Asks HALP servers' HTTP faces.

    :param http: the treq client to send with (tests pass one over a
        :class:`~treq.testing.RequestTraversalAgent`).
    """

    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    async def exchange(self, server: ServerAddress, requests: list[Request]) -> list[Response]:
        """
        Answer each request in turn; the first failure fails them all,
        with a :class:`~halp.error.ClientError` (or the connection error
        of a server that cannot be reached).
        """
        try:
            return [await self._one(server, request) for request in requests]
        except ResponseFailed as e:
            if any(r.check(CancelledError) for r in e.reasons):
                raise CancelledError() from None  # the timeout of the exchange
            raise _broken(e) from None
        except RequestTransmissionFailed as e:
            raise ConnectionClosed(f"sending the request failed: {_reason(e)}") from None

    async def _one(self, server: ServerAddress, request: Request) -> Response:
        base = server.url.rstrip("/")
        if isinstance(request, Get):
            query = _window(request.window) | {"format": "text"}
            url = f"{base}/v1/labels/{quote(request.label)}?{urlencode(query)}"
            return _lines(await self._get(url))
        if isinstance(request, ListLabels):
            query = _window(request.window) | {"format": "text"}
            if request.parent:
                query["prefix"] = request.parent
            response = _lines(await self._get(f"{base}/v1/labels?{urlencode(query)}"))
            # The HTTP listing names labels in full; HALP/1 lists the last
            # segment.
            return Response(
                tuple(_last_segment(line) for line in response.lines), response.status
            )
        if isinstance(request, Hello):
            return _lines(await self._get(f"{base}/v1/hello?format=text"))
        if isinstance(request, Stats):
            return _lines(await self._get(f"{base}/v1/stats?format=text"))
        if isinstance(request, Insert):
            return await self._insert(base, request)
        raise ClientError(f"{type(request).__name__.lower()} is not available over HTTP")

    async def _get(self, url: str) -> tuple[int, bytes, str]:
        headers: dict[bytes | str, bytes | str] = {"Accept": "text/plain"}
        # A redirect is not followed: the answer must come from the server
        # that is credited with it.
        response = await self.http.get(
            _URL.from_text(url), headers=headers, unbuffered=True, allow_redirects=False
        )
        return await _read(response)

    async def _insert(self, base: str, request: Insert) -> Response:
        body = [_entry_json(e) for e in request.entries if isinstance(e, Entry)]
        headers: dict[bytes | str, bytes | str] = {
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        lines: list[bytes] = []
        for label in request.labels:
            response = await self.http.post(
                _URL.from_text(f"{base}/v1/labels/{quote(label)}"),
                data=json.dumps(body).encode("utf-8"),
                headers=headers,
                unbuffered=True,
                allow_redirects=False,
            )
            code, content, kind = await _read(response)
            document = _document(code, content, kind)
            if code >= 300 and not (code in (400, 422) and "stored" in document):
                return _refusal(code, document)
            try:
                for stored in document.get("stored", []):
                    entry = Entry(int(stored["timestamp"]), str(stored["host"]), int(stored["port"]))
                    lines.append(format_success(label, entry).rstrip(b"\n"))
                for refused in document.get("refused", []):
                    line = format_failure(label, str(refused["entry"]), str(refused["reason"]))
                    lines.append(line.rstrip(b"\n"))
                for pending in document.get("pending", []):
                    line = format_pending(label, str(pending["entry"]), str(pending["reason"]))
                    lines.append(line.rstrip(b"\n"))
            except (KeyError, TypeError, ValueError, AttributeError, UnicodeEncodeError):
                raise BadResponse(f"not an insert answer: {content[:80]!r}") from None
        return Response(tuple(lines), Status(True, None, str(len(lines))))


def _window(window: Window | None) -> dict[str, str]:
    if window is None:
        return {}
    query = {"offset": str(window.start)}
    if window.stop is not None:
        query["limit"] = str(max(1, window.stop - window.start))
    return query


def _entry_json(entry: Entry) -> dict[str, object]:
    return {"timestamp": entry.timestamp, "host": entry.host, "port": entry.port}


def _last_segment(line: bytes) -> bytes:
    timestamp, _, name = line.partition(b" ")
    return timestamp + b" " + name.rpartition(b"/")[2]


class _Body(Protocol):
    """
    Reads the body of an answer, refusing one of more than
    :data:`MAX_HTTP_ANSWER` bytes; cancelling :attr:`done` (the timeout of
    the exchange) closes the connection rather than leaving it open.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._stop())
        self._stopped = False

    def _stop(self) -> None:
        self._stopped = True
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        self.size += len(data)
        if self.size > MAX_HTTP_ANSWER:
            self._stop()
            self.done.errback(BadResponse(f"an HTTP answer of more than {MAX_HTTP_ANSWER} bytes"))
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._stopped:
            return
        self._stopped = True
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.chunks))
        elif reason.check(PotentialDataLoss):
            # An answer without a length, ended by a close: it may be cut
            # short, and a cut entry line can still parse (a wrong port).
            self.done.errback(
                BadResponse("an HTTP answer without a length (it may be cut short)")
            )
        else:
            self.done.errback(reason)


async def _read(response: IResponse) -> tuple[int, bytes, str]:
    """The status, body and media type of an answer, refusing huge ones."""
    body = _Body()
    response.deliverBody(body)
    content = await body.done
    kinds = response.headers.getRawHeaders("content-type") or [""]
    kind = (kinds[-1].decode("latin-1") if isinstance(kinds[-1], bytes) else kinds[-1])
    return response.code, content, kind.split(";")[0].strip().lower()


def _reason(e: ResponseFailed | RequestTransmissionFailed) -> str:
    """The first reason a twisted.web client failure gives, on one line."""
    reasons: list[Failure] = e.reasons
    text = reasons[0].getErrorMessage() if reasons else ""
    return " ".join(text.split())[:120] or type(e).__name__


def _broken(e: ResponseFailed) -> ClientError:
    """
    A failure of twisted.web's client as the error to report: a server
    that closed (or whose TLS failed) before answering, or in the middle
    of its answer, or one that does not speak HTTP (a HALP/1 server, say).
    """
    closed = any(r.check(net.ConnectionClosed) for r in e.reasons)
    if isinstance(e, ResponseNeverReceived):
        if closed:
            return ConnectionClosed("the server closed the connection before answering")
        return ConnectionClosed(f"no HTTP answer: {_reason(e)}")
    if closed:
        return ConnectionClosed("the connection closed in the middle of the HTTP answer")
    return BadResponse(f"not an HTTP answer: {_reason(e)}")


def _document(code: int, content: bytes, kind: str) -> dict[str, Any]:
    if kind != "application/json":
        raise BadResponse(f"HTTP {code} with {kind or 'no content type'}, not a HALP answer")
    try:
        document = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadResponse(f"HTTP {code} with a body that is not JSON") from None
    if not isinstance(document, dict):
        raise BadResponse(f"HTTP {code} with JSON that is not an object")
    return document


def _refusal(code: int, document: dict[str, Any]) -> Response:
    """An error answer as a HALP/1 ``error`` status."""
    error = document.get("error")
    message = document.get("message")
    if not isinstance(error, str) or not isinstance(message, str):
        raise BadResponse(f"HTTP {code} without a HALP error")
    return Response((), Status(False, error, message))


def _lines(answer: tuple[int, bytes, str]) -> Response:
    code, content, kind = answer
    if code >= 300:
        return _refusal(code, _document(code, content, kind))
    if kind != "text/plain":
        raise BadResponse(f"HTTP {code} with {kind or 'no content type'}, not text/plain")
    lines = tuple(content.splitlines())
    return Response(lines, Status(True, None, str(len(lines))))
