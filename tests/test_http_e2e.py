"""
End-to-end tests of the HTTP face (``twistd halp --http``): real servers on
loopback, spoken to by programs that are not HALP's code: **curl** for the
API, the host list and the metrics, and a **headless Chromium** for the
status page, whose phone-sized screenshot is kept as a test artifact
(in ``$HALP_ARTIFACTS``, else ``test-artifacts/`` of the checkout).

Without ``curl`` or ``chromium`` the tests that need them are skipped,
saying what to install; with ``HALP_REQUIRE_BROWSER=1`` (as CI sets it)
they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.halpserver import HALPServer, Reply, StartServer, eventually, free_port

pytestmark = pytest.mark.e2e

#: The checkout, whose ``test-artifacts/`` keeps screenshots by default.
REPO = Path(__file__).resolve().parent.parent

#: Seconds one curl run may take (a guard against hangs only).
CURL_TIMEOUT = 30.0
#: Seconds one Chromium run may take: it starts a whole browser, which on
#: a loaded 2-core machine can be slow (a guard against hangs only).
CHROMIUM_TIMEOUT = 120.0

#: Federation intervals of the two-server test, in seconds.
SYNC = 0.5
TEST = 0.2

#: The HTTP face on any free port of loopback.
HTTP = ("--http", "tcp:0:interface=127.0.0.1")

#: The largest request body the server reads (``halp.web.MAX_BODY``, which
#: these tests do not import: they check the server from outside).
MAX_BODY = 16 * 1024

#: The viewport of the screenshot: a phone (CSS pixels).
PHONE = (412, 915)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- the programs ----------------------------------------------------------------


def _program(name: str, package: str) -> str:
    """
    The path of ``name``; skips the test when it is not installed (fails
    it when ``HALP_REQUIRE_BROWSER=1``), saying which package to install.
    """
    found = shutil.which(name)
    if found is not None:
        return found
    message = (
        f"{name} is not installed: install Debian's {package} package "
        f"(apt-get install {package}) to run this test"
    )
    if os.environ.get("HALP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message}; HALP_REQUIRE_BROWSER=1 makes this a failure", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True, repr=False)
class Response:
    """One HTTP response, as curl received it."""

    status: int
    #: The final response's headers, names in lower case.
    headers: dict[str, str]
    body: bytes
    #: The curl command, for failure messages.
    command: str

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def __repr__(self) -> str:
        """The command and the whole response, for failure messages."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"\n{self.command}\n-> {self.status}\n{head}\n\n{self.body[:2000]!r}"


class Curl:
    """Runs ``curl`` (ignoring ``~/.curlrc`` and proxies) and parses what it got."""

    def __init__(self, program: str, workdir: Path) -> None:
        self.program = program
        self.workdir = workdir
        self._runs = 0

    def __call__(self, url: str, *options: str) -> Response:
        self._runs += 1
        body_file = self.workdir / f"curl-{self._runs}.body"
        command = [
            self.program,
            "-q",  # not ~/.curlrc
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            str(CURL_TIMEOUT),
            "--dump-header",
            "-",
            "--output",
            str(body_file),
            *options,
            url,
        ]
        shown = " ".join(command)
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CURL_TIMEOUT + 30,
        )
        assert done.returncode == 0, (
            f"{shown}\nexited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
        # Every response curl read (a 100 Continue first, maybe), each
        # ending with an empty line; the last is the answer.
        blocks = [b for b in done.stdout.decode("latin-1").split("\r\n\r\n") if b.strip()]
        assert blocks, f"{shown}\nno response headers: {done.stdout!r}"
        status_line, *lines = blocks[-1].split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        # curl writes no file for an empty body (a 304).
        body = body_file.read_bytes() if body_file.exists() else b""
        return Response(int(status_line.split()[1]), headers, body, shown)

    def get(self, url: str, *headers: str) -> Response:
        return self(url, *[o for h in headers for o in ("--header", h)])

    def post(self, url: str, document: object, *options: str) -> Response:
        """POST ``document`` (JSON, or bytes as they are) to ``url``."""
        self._runs += 1
        data = document if isinstance(document, bytes) else json.dumps(document).encode()
        data_file = self.workdir / f"curl-{self._runs}.request"
        data_file.write_bytes(data)
        return self(
            url,
            "--header",
            "Content-Type: application/json",
            "--data-binary",
            f"@{data_file}",
            *options,
        )


@pytest.fixture
def curl(tmp_path: Path) -> Curl:
    return Curl(_program("curl", "curl"), tmp_path)


class Chromium:
    """Runs a headless Chromium on one page, with a fresh profile each time."""

    def __init__(self, program: str, workdir: Path) -> None:
        self.program = program
        self.workdir = workdir

    def run(self, url: str, *options: str) -> bytes:
        """What Chromium printed on stdout, once it exited (with status 0)."""
        profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=self.workdir)
        out_path = Path(profile + ".stdout")
        err_path = Path(profile + ".stderr")
        command = [
            self.program,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers have a small /dev/shm
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            f"--user-data-dir={profile}",
            *options,
            url,
        ]
        # A home of its own: Chromium writes crash reports and settings
        # there, whatever --user-data-dir says.
        home = Path(profile + ".home")
        env = dict(
            os.environ,
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_CACHE_HOME=str(home / ".cache"),
        )
        # Output into files, not pipes: a helper process that outlived the
        # browser would hold a pipe open.  Its own session, so that every
        # process it started can be ended with it.
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                status: int | None = process.wait(timeout=CHROMIUM_TIMEOUT)
            except subprocess.TimeoutExpired:
                status = None
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        stderr = err_path.read_text(errors="replace")
        shown = " ".join(command)
        assert status is not None, f"{shown}\nran over {CHROMIUM_TIMEOUT} s:\n{stderr}"
        assert status == 0, f"{shown}\nexited {status}:\n{stderr}"
        return out_path.read_bytes()


@pytest.fixture
def chromium(tmp_path: Path) -> Chromium:
    return Chromium(_program("chromium", "chromium"), tmp_path)


def artifacts() -> Path:
    """Where test artifacts are kept: ``$HALP_ARTIFACTS``, else ``test-artifacts/``."""
    named = os.environ.get("HALP_ARTIFACTS")
    directory = Path(named) if named else REPO / "test-artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# -- helpers ------------------------------------------------------------------


def insert_block(labels: str, *entries: str) -> bytes:
    """A HALP/1 ``insert`` request: header, entry lines, empty line."""
    return ("insert %s\n%s\n" % (labels, "".join(e + "\n" for e in entries))).encode("ascii")


def fields(reply: Reply) -> dict[str, str]:
    return {key: value for key, _, value in (line.partition(" ") for line in reply.lines)}


def line_get(server: HALPServer, label: str) -> list[str]:
    """The entries of ``label`` over the line protocol, as ``TS HOST PORT`` lines."""
    reply = server.reply(f"get {label}[0:100]\n".encode())
    assert reply.status.startswith("ok "), reply
    return reply.lines


def as_lines(entries: list[dict[str, Any]]) -> list[str]:
    """JSON entries as the line protocol sends them."""
    return [f"{e['timestamp']} {e['host']} {e['port']}" for e in entries]


def requests_total(response: Response) -> dict[tuple[str, str, str], float]:
    """``halp_requests_total`` of a ``/metrics`` answer, by front end, kind and result."""
    assert response.status == 200, response
    assert response.headers["content-type"].startswith("text/plain"), response
    counts = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "halp_requests_total":
                key = (sample.labels["frontend"], sample.labels["kind"], sample.labels["result"])
                counts[key] = sample.value
    return counts


def errors_total(response: Response) -> dict[tuple[str, str], float]:
    """``halp_errors_total`` of a ``/metrics`` answer, by front end and code."""
    return {
        (s.labels["frontend"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name == "halp_errors_total"
    }


def increase(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    """What grew between two scrapes, and by how much."""
    grown = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return {k: v for k, v in grown.items() if v}


# -- 1. the API with curl ---------------------------------------------------------


def test_post_with_curl_is_served_over_the_line_protocol(
    start_server: StartServer, curl: Curl
) -> None:
    server = start_server(*HTTP)
    url = server.http_url("/v1/labels/myapp/v2")
    before = int(time.time())
    answer = curl.post(url, {"host": "192.0.2.10", "port": 6881})
    after = int(time.time())
    assert answer.status == 200, answer
    document = answer.json()
    assert document["label"] == "myapp/v2" and document["refused"] == [], answer
    [stored] = document["stored"]
    assert (stored["host"], stored["port"]) == ("192.0.2.10", 6881), answer
    # Without a timestamp, an entry is confirmed now (the server's clock).
    assert before <= stored["timestamp"] <= after, answer
    # A list of entries; hosts come back in canonical form.
    answer = curl.post(
        url,
        [
            {"host": "2001:DB8:0::7", "port": 7000, "timestamp": before - 100},
            {"host": "Peer.Example.COM.", "port": 80, "timestamp": before - 200},
        ],
    )
    assert answer.status == 200, answer
    assert answer.json()["stored"] == [
        {"host": "2001:db8::7", "port": 7000, "timestamp": before - 100},
        {"host": "peer.example.com", "port": 80, "timestamp": before - 200},
    ], answer

    # The line protocol serves what curl posted, newest first.
    assert server.reply(b"get myapp/v2\n") == Reply(
        [
            f"{stored['timestamp']} 192.0.2.10 6881",
            f"{before - 100} 2001:db8::7 7000",
            f"{before - 200} peer.example.com 80",
        ],
        "ok 3",
    )
    assert server.reply(b"get myapp/\n") == Reply([f"{stored['timestamp']} v2"], "ok 1")
    assert "Traceback" not in server.output(), server.output()


def test_line_protocol_insert_is_served_to_curl_with_etags(
    start_server: StartServer, curl: Curl
) -> None:
    server = start_server(*HTTP)
    now = int(time.time())
    entries = [f"{now - 30} 198.51.100.7 6881", f"{now - 10} 2001:db8::1 7000"]
    assert server.reply(insert_block("myapp/v2", *entries)).status == "ok 2 stored 0 failed"
    newest_first = entries[::-1]
    url = server.http_url("/v1/labels/myapp/v2")

    # As JSON (the default) ...
    answer = curl.get(url)
    assert answer.status == 200, answer
    document = answer.json()
    assert document["label"] == "myapp/v2" and document["capped"] is False, answer
    assert as_lines(document["entries"]) == newest_first, answer
    etag = answer.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"'), answer
    assert "Accept" in answer.headers["vary"], answer

    # ... and as text, the line protocol's data lines.
    text = curl.get(url, "Accept: text/plain")
    assert text.status == 200, text
    assert text.headers["content-type"].startswith("text/plain"), text
    assert text.text.splitlines() == newest_first == line_get(server, "myapp/v2"), text
    assert text.headers["etag"] != etag, "the JSON and the text answer share an ETag"

    # A client that has the list is told so, with no body.
    fresh = curl.get(url, f"If-None-Match: {etag}")
    assert (fresh.status, fresh.body) == (304, b""), fresh
    assert fresh.headers["etag"] == etag, fresh
    # ... until it changes.
    assert server.reply(insert_block("myapp/v2", f"{now} 192.0.2.99 1")).status.startswith("ok 1 ")
    changed = curl.get(url, f"If-None-Match: {etag}")
    assert changed.status == 200, changed
    assert changed.headers["etag"] != etag, changed
    assert as_lines(changed.json()["entries"]) == [f"{now} 192.0.2.99 1", *newest_first]

    # Slices, and the label listing.
    sliced = curl.get(server.http_url("/v1/labels/myapp/v2?offset=1&limit=1"))
    assert as_lines(sliced.json()["entries"]) == newest_first[:1], sliced
    labels = curl.get(server.http_url("/v1/labels?prefix=myapp"))
    # (by their whole names, where the line protocol gives the last segment)
    assert labels.json()["labels"] == [{"name": "myapp/v2", "timestamp": now}], labels


def test_errors_are_json_with_4xx_statuses(start_server: StartServer, curl: Curl) -> None:
    server = start_server(*HTTP)
    bad = server.http_url("/v1/labels/my%21app")  # my!app

    answer = curl.get(bad)
    assert answer.status == 400, answer
    assert answer.json()["error"] == "bad-label", answer
    assert "my!app" in answer.json()["message"], answer
    answer = curl.post(bad, {"host": "192.0.2.1", "port": 1})
    assert (answer.status, answer.json()["error"]) == (400, "bad-label"), answer

    url = server.http_url("/v1/labels/big")
    # Over the limit: 413 whether curl sends the body at once, waits for
    # "100 Continue" first, or sends it in chunks; nothing is stored.
    big = [{"host": f"192.0.2.{i % 250 + 1}", "port": 1000 + i} for i in range(500)]
    body = json.dumps(big).encode()
    assert len(body) > MAX_BODY + 1024
    for options in [
        (),
        ("--header", "Expect: 100-continue"),
        ("--header", "Transfer-Encoding: chunked"),
    ]:
        answer = curl.post(url, body, *options)
        assert answer.status == 413, answer
        assert answer.json()["error"] == "too-large", answer
    # Just over the limit, by one byte.
    padded = json.dumps({"host": "192.0.2.1", "port": 1}).encode()
    answer = curl.post(url, padded + b" " * (MAX_BODY + 1 - len(padded)))
    assert (answer.status, answer.json()["error"]) == (413, "too-large"), answer
    # At the limit is fine.
    answer = curl.post(url, padded + b" " * (MAX_BODY - len(padded)))
    assert answer.status == 200, answer
    assert server.reply(b"get big\n").status == "ok 1"

    # Other mistakes.
    answer = curl.post(url, b"{not json")
    assert (answer.status, answer.json()["error"]) == (400, "bad-request"), answer
    answer = curl.post(url, {"host": "192.0.2.1", "port": 70000})
    assert (answer.status, answer.json()["error"]) == (400, "bad-entry"), answer
    answer = curl(url, "--data-binary", "x", "--header", "Content-Type: text/plain")
    assert answer.status == 415, answer
    answer = curl.get(server.http_url("/v2/nothing"))
    assert (answer.status, answer.json()["error"]) == (404, "not-found"), answer
    answer = curl(server.http_url("/metrics"), "--request", "POST")
    assert answer.status == 405 and answer.headers["allow"] == "GET, HEAD", answer
    answer = curl.get(server.http_url("/v1/labels/big?limit=x"))
    assert (answer.status, answer.json()["error"]) == (400, "bad-range"), answer

    # The server is fine, and served nothing it refused.
    assert server.reply(b"get big\n").status == "ok 1"
    assert curl.get(server.http_url("/v1/hello")).status == 200
    assert "Traceback" not in server.output(), server.output()


def test_hostlist_and_metrics_with_curl(start_server: StartServer, curl: Curl) -> None:
    server = start_server(*HTTP)
    now = int(time.time())
    first = curl.get(server.http_url("/metrics"))
    before, errors_before = requests_total(first), errors_total(first)

    # Requests of both front ends: over the line protocol ...
    with server.connect() as c:
        reply = c.reply(insert_block("myapp/v2 other", f"{now - 5} 192.0.2.1 4000"))
        assert reply.status == "ok 2 stored 0 failed", reply
        assert c.reply(b"get myapp/v2\n").status == "ok 1"
        assert c.reply(b"get other\n").status == "ok 1"
        assert c.reply(b"get bad!label\n").status.startswith("error bad-label ")
    # ... and over HTTP.
    posted = curl.post(server.http_url("/v1/labels/webapp"), {"host": "192.0.2.2", "port": 80})
    assert posted.status == 200, posted
    webapp = posted.json()["stored"][0]["timestamp"]
    got = curl.get(server.http_url("/v1/labels/myapp/v2"))
    assert got.status == 200, got
    assert curl.get(server.http_url("/v1/labels/other")).status == 200
    not_modified = curl.get(
        server.http_url("/v1/labels/myapp/v2"), f"If-None-Match: {got.headers['etag']}"
    )
    assert not_modified.status == 304, not_modified
    assert curl.get(server.http_url("/v1/labels/bad%21label")).status == 400

    # The host list: every entry, one per line, under its label.
    hostlist = curl.get(server.http_url("/hostlist"))
    assert hostlist.status == 200, hostlist
    assert hostlist.headers["content-type"].startswith("text/plain"), hostlist
    assert hostlist.headers["halp-truncated"] == "no", hostlist
    assert sorted(hostlist.text.splitlines()) == [
        f"myapp/v2 {now - 5} 192.0.2.1 4000",
        f"other {now - 5} 192.0.2.1 4000",
        f"webapp {webapp} 192.0.2.2 80",
    ], hostlist
    one = curl.get(server.http_url("/hostlist?label=myapp/v2"))
    assert one.text.splitlines() == line_get(server, "myapp/v2"), one

    # The metrics count what each front end answered.
    second = curl.get(server.http_url("/metrics"))
    grown = increase(before, requests_total(second))
    # The first scrape counts in the second; a scrape does not count itself.
    assert {k: v for k, v in grown.items() if k[2] in ("ok", "not-modified")} == {
        ("halp1", "insert", "ok"): 1,
        ("halp1", "get", "ok"): 2 + 1,  # line_get above
        ("http", "insert", "ok"): 1,
        ("http", "get", "ok"): 2,
        ("http", "get", "not-modified"): 1,
        ("http", "hostlist", "ok"): 2,
        ("http", "metrics", "ok"): 1,
    }, second.text
    assert {
        (frontend, result): n for (frontend, kind, result), n in grown.items()
        if result not in ("ok", "not-modified")
    } == {("halp1", "bad-label"): 1, ("http", "bad-label"): 1}, second.text
    assert increase(errors_before, errors_total(second)) == {
        ("halp1", "bad-label"): 1,
        ("http", "bad-label"): 1,
    }, second.text
    families = {f.name: f for f in text_string_to_metric_families(second.text)}
    [entries] = families["halp_entries"].samples
    assert entries.value == 3, second.text
    assert "halp_info" in families and "process_cpu_seconds" in families, second.text


def test_acknowledged_post_survives_kill_9(start_server: StartServer, curl: Curl) -> None:
    server = start_server(*HTTP)
    now = int(time.time())
    batch = [
        {"host": f"10.4.{i // 256}.{i % 256}", "port": 3000 + i, "timestamp": now - i}
        for i in range(100)
    ]
    answer = curl.post(server.http_url("/v1/labels/crash/many"), batch)
    assert answer.status == 200 and len(answer.json()["stored"]) == 100, answer
    answer = curl.post(server.http_url("/v1/labels/crash/one"), {"host": "192.0.2.5", "port": 5})
    assert answer.status == 200, answer
    [last] = answer.json()["stored"]
    # Right after the last acknowledgement.
    assert server.kill() == -signal.SIGKILL

    server.start()
    many = curl.get(server.http_url("/v1/labels/crash/many?limit=100"))
    assert many.status == 200, many
    assert many.json()["entries"] == batch, many
    one = curl.get(server.http_url("/v1/labels/crash/one"))
    assert one.json()["entries"] == [last], one
    assert line_get(server, "crash/one") == as_lines([last])


# -- 2. two servers, and the status page in Chromium -------------------------------


class StatusPage(HTMLParser):
    """
    What the status page shows: the cells of each table row (``td`` only)
    by section id, with the ``class`` of each cell, and the summary cards.
    """

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        #: section id -> rows -> (text, class) of each cell
        self.rows: dict[str, list[list[tuple[str, str]]]] = {}
        #: card name -> value
        self.cards: dict[str, str] = {}
        self._section = ""
        self._row: list[tuple[str, str]] | None = None
        self._cell: tuple[list[str], str] | None = None
        self._card: tuple[list[str], list[str]] | None = None
        self._in_b = False
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = attributes.get("class") or ""
        if tag == "section":
            self._section = attributes.get("id") or ""
            self.rows.setdefault(self._section, [])
        elif tag == "tr":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ([], classes)
        elif tag == "div" and "card" in classes.split():
            self._card = ([], [])
        elif tag == "b":
            self._in_b = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append(("".join(self._cell[0]).strip(), self._cell[1]))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.rows.setdefault(self._section, []).append(self._row)
            self._row = None
        elif tag == "b":
            self._in_b = False
        elif tag == "div" and self._card is not None:
            name, value = ("".join(part).strip() for part in self._card)
            self.cards[name] = value
            self._card = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)
        if self._card is not None:
            self._card[1 if self._in_b else 0].append(data)

    def table(self, section: str) -> dict[str, list[tuple[str, str]]]:
        """The rows of ``section``'s table by their first cell's text."""
        return {row[0][0]: row for row in self.rows.get(section, [])}


def png_size(data: bytes) -> tuple[int, int]:
    """The width and height of a PNG image (its IHDR chunk)."""
    assert data[:8] == _PNG_MAGIC and data[12:16] == b"IHDR", data[:32]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_two_servers_and_the_status_page_in_chromium(
    start_server: StartServer, curl: Curl, chromium: Chromium, tmp_path: Path
) -> None:
    a_port = free_port()
    b_port = next(p for p in iter(free_port, None) if p != a_port)

    def start(name: str, port: int, *args: str) -> HALPServer:
        return start_server(
            *HTTP,
            "--public-address", f"127.0.0.1:{port}",
            "--sync-interval", str(SYNC),
            "--peer-test-interval", str(TEST),
            *args,
            store=f"sqlite:{tmp_path / f'{name}.sqlite3'}",
            port=port,
        )

    a = start("a", a_port)
    b = start("b", b_port, "--peer", f"127.0.0.1:{a_port}")
    assert a.http_port is not None and b.http_port is not None
    a_url, b_url = a.http_url("/"), b.http_url("/")

    # hello announces the HTTP face, over HTTP and over the line protocol.
    hello = curl.get(a.http_url("/v1/hello"))
    assert hello.status == 200, hello
    assert hello.json()["http"] == [a_url], hello
    assert hello.json()["protocol"] == "HALP/1", hello
    assert fields(a.reply(b"hello\n"))["http"] == a_url

    # Entries on server A, over both front ends.
    now = int(time.time())
    assert a.reply(
        insert_block("myapp/v2", *(f"{now - i} 192.0.2.{i + 1} 6881" for i in range(3)))
    ).status == "ok 3 stored 0 failed"
    assert a.reply(insert_block("other/x", f"{now} 198.51.100.1 80")).status.startswith("ok 1 ")
    posted = curl.post(
        a.http_url("/v1/labels/webapp"),
        [{"host": "203.0.113.1", "port": 443}, {"host": "203.0.113.2", "port": 443}],
    )
    assert posted.status == 200, posted

    # B learns A's HTTP face from A (halp/http), and A learns B's.
    def http_faces(server: HALPServer) -> set[str] | None:
        answer = curl.get(server.http_url("/v1/labels/halp/http"))
        assert answer.status == 200, answer
        faces = {f"http://{e['host']}:{e['port']}/" for e in answer.json()["entries"]}
        return faces if faces == {a_url, b_url} else None

    # (Each check is paced by the other server's log: a server logs the
    # check's own request, which would wake a wait on its log at once.)
    eventually(lambda: http_faces(b), a)
    eventually(lambda: http_faces(a), b)
    # Both list both servers under halp, and A trusts B.
    servers = {f"127.0.0.1:{a_port}", f"127.0.0.1:{b_port}"}
    for server, other in ((a, b), (b, a)):
        eventually(
            lambda: {"%s:%s" % tuple(line.split()[1:3]) for line in line_get(server, "halp")}
            == servers or None,
            other,
        )

    def b_is_trusted() -> bool | None:
        answer = curl.get(a.http_url("/v1/peers"))
        assert answer.status == 200, answer
        states = {p["address"]: p["state"] for p in answer.json()["peers"]}
        return states.get(f"127.0.0.1:{b_port}") == "trusted" or None

    eventually(b_is_trusted, b)
    counts = {
        label: len(line_get(a, label))
        for label in ("myapp/v2", "other/x", "webapp", "halp", "halp/http")
    }
    assert counts == {"myapp/v2": 3, "other/x": 1, "webapp": 2, "halp": 2, "halp/http": 2}

    # The status page, as a browser renders it.
    started = time.monotonic()
    dom = chromium.run(a_url, "--dump-dom").decode("utf-8")
    dumped = time.monotonic() - started
    (artifacts() / "status-page.html").write_text(dom, encoding="utf-8")
    page = StatusPage(dom)
    assert "<title>HALP server status</title>" in dom, dom
    labels = page.table("labels")
    for label, count in counts.items():
        assert label in labels, f"{label} not on the status page:\n{dom}"
        assert labels[label][1][0] == str(count), f"{label}: {labels[label]}\n{dom}"
    peers = page.table("peers")
    b_address = f"127.0.0.1:{b_port}"
    row = next((r for name, r in peers.items() if name.startswith(b_address)), None)
    assert row is not None, f"{b_address} not among the peers {list(peers)}:\n{dom}"
    assert row[1] == ("trusted", "trusted"), row  # its state, and its colour
    assert page.cards["Peers"] == "1 trusted / 1", page.cards
    assert page.cards["Entries"] == str(sum(counts.values())), page.cards

    # A phone-sized screenshot, kept as an artifact.
    shot = tmp_path / "status-page-phone.png"
    started = time.monotonic()
    chromium.run(
        a_url, f"--screenshot={shot}", f"--window-size={PHONE[0]},{PHONE[1]}", "--hide-scrollbars"
    )
    shot_time = time.monotonic() - started
    data = shot.read_bytes() if shot.exists() else b""
    assert data[:8] == _PNG_MAGIC, f"no PNG at {shot}: {data[:32]!r}"
    assert len(data) > 5000, f"a {len(data)}-byte screenshot is too small to show the page"
    assert png_size(data) == PHONE
    kept = artifacts() / shot.name
    shutil.copyfile(shot, kept)
    print(
        f"\nChromium dumped the status page in {dumped:.1f} s and took its screenshot "
        f"({len(data):,} bytes) in {shot_time:.1f} s: {kept}"
    )
    for server in (a, b):
        assert "Traceback" not in server.output(), server.output()
