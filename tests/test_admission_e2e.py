"""
End to end: what a public ``twistd -n halp`` lets in, over real sockets.

The servers run with a public server's defaults (``public=True``) plus
``--allow-private`` where the test needs loopback addresses to stand for
hosts on the internet: 127.0.0.0/8 gives every test its own "hosts"
(127.0.0.2, 127.0.0.3, ...), and a client socket bound to one of them
stands for a client at that address.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.halpserver import HALPServer, StartServer, eventually

from halp.test.test_admission import GLOBAL, SPECIAL


class Target:
    """A TCP listener at ``host``:port that counts the connections it accepts."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target("127.0.0.2")
    yield t
    t.close()


def entries(server: HALPServer, label: str) -> list[str]:
    reply = server.reply(f"get {label}[0:100]\n".encode())
    assert reply.status.startswith("ok"), reply
    return reply.lines


def test_reflection_1000_inserts_serve_only_what_the_server_reached(
    start_server: StartServer, target: Target
) -> None:
    """
    1,000 inserts from 127.0.0.1 naming other hosts: a listening one
    (127.0.0.2), closed ports of 127.0.0.3, and 127.0.0.11 (whose text
    contains the sender's, the 1.2.3.4 / 11.2.3.45 near miss).  Nothing is
    served before the server's own probe, only the listening host is
    served after it, and each host is probed at most once (the interval
    is 60 s; the test takes a few).
    """
    server = start_server("--allow-private", "--insert-rate", "0", public=True)
    lines: list[str] = []
    with server.connect() as client:
        # The first insert names the listening target; nothing may be
        # served before the probe has connected.
        reply = client.reply(f"insert app\n{int(time.time())} 127.0.0.2 {target.port}\n\n".encode())
        assert reply.lines[0].startswith("pending: app ")
        assert reply.status == "ok 0 stored 0 failed 1 pending"
        served_before = entries(server, "app")
        probes_before = len(target.accepted)
        assert served_before == [] or probes_before >= 1
        batch = []
        for i in range(999):
            host = ("127.0.0.2", "127.0.0.3", "127.0.0.11")[i % 3]
            port = target.port if host == "127.0.0.2" else 1 + i % 50
            batch.append(f"insert app\n{int(time.time())} {host} {port}\n\n")
        for reply in client.replies("".join(batch).encode(), len(batch)):
            lines += reply.lines
    kinds = {line.split(" ")[0] for line in lines}
    assert kinds <= {"pending:", "failure:", "success:"}, kinds
    # Stored at once: only the host the server has reached (a confirmation
    # lets later claims in), and only after it reached it.
    stored = {line.split(" ", 3)[3] for line in lines if line.startswith("success:")}
    assert stored <= {f"127.0.0.2 {target.port}"}, stored
    assert stored == set() or len(target.accepted) == 1
    assert all("unreachable" in l or "busy" in l for l in lines if l.startswith("failure:")), [
        l for l in lines if l.startswith("failure:")
    ][:3]

    def settled() -> list[str] | None:
        served = entries(server, "app")
        return served if served else None

    served = eventually(settled, server)
    assert [line.split(" ", 1)[1] for line in served] == [f"127.0.0.2 {target.port}"]
    # The probe's time is the stored time, not the 0 that was sent.
    assert int(served[0].split(" ")[0]) > time.time() - 60
    assert len(target.accepted) == 1
    stats = dict(
        line.split(" ", 1) for line in server.reply(b"stats\n").lines
    )
    # One probe per host: 127.0.0.2, 127.0.0.3 and 127.0.0.11 (distinct
    # ports of one host share its probe slot).
    assert int(stats["verify-probes-sent"]) <= 3 + 0, stats
    assert int(stats["verify-probes-ok"]) == 1
    assert "Traceback" not in server.output()


def test_own_address_is_stored_at_once(start_server: StartServer, target: Target) -> None:
    server = start_server("--allow-private", public=True)
    with server.connect(source="127.0.0.5") as client:
        reply = client.reply(b"insert app\n%d 127.0.0.5 4000\n\n" % time.time())
    assert reply.status == "ok 1 stored 0 failed"
    assert entries(server, "app")[0].endswith(" 127.0.0.5 4000")
    assert target.accepted == []


def test_one_case_per_reserved_block_refused_and_global_accepted(
    start_server: StartServer,
) -> None:
    """48 special-purpose addresses refused with a reason, 50 global ones taken in."""
    server = start_server(public=True)
    now = int(time.time())
    body = "".join(f"{now} {host} 4000\n" for host in SPECIAL[:40])
    refused = server.reply(f"insert app\n{body}\n".encode())
    body = "".join(f"{now} {host} 4000\n" for host in SPECIAL[40:])
    refused_too = server.reply(f"insert app\n{body}\n".encode())
    assert refused.status == "ok 0 stored 40 failed"
    assert refused_too.status == f"ok 0 stored {len(SPECIAL) - 40} failed"
    for host, line in zip(SPECIAL, refused.lines + refused_too.lines):
        assert line.startswith(f"failure: app {now} {host} 4000 ; bad host: {host} is "), line
    accepted = []
    for start in range(0, 50, 25):
        body = "".join(f"{now} {host} 4000\n" for host in GLOBAL[start : start + 25])
        accepted.append(server.reply(f"insert app\n{body}\n".encode()))
    # Taken in: they name hosts other than the client, so they wait for
    # the server's own probe.
    for reply in accepted:
        assert reply.status == "ok 0 stored 0 failed 25 pending", reply
    assert "Traceback" not in server.output()


def test_insert_rate_per_address(start_server: StartServer) -> None:
    """
    ``--insert-rate 0.1 --insert-burst 20``: of 200 inserts from one
    address, the burst and what refills in the meantime are stored, the
    rest answered ``error busy``; another address is still served.
    """
    server = start_server(
        "--allow-private", "--insert-rate", "0.1", "--insert-burst", "20", "--group-share", "0", public=True
    )
    with server.connect(source="127.0.0.7") as client:
        started = time.monotonic()
        replies = client.replies(
            b"".join(b"insert app\n%d 127.0.0.7 %d\n\n" % (time.time(), 1000 + i) for i in range(200)), 200
        )
        took = time.monotonic() - started
    stored = [r for r in replies if r.status == "ok 1 stored 0 failed"]
    busy = [r for r in replies if r.status.startswith("error busy too many entries inserted from 127.0.0.7")]
    assert len(stored) + len(busy) == 200
    assert 20 <= len(stored) <= 20 + int(took * 0.1) + 1
    with server.connect(source="127.0.0.8") as other:
        assert other.reply(b"insert app\n%d 127.0.0.8 4000\n\n" % time.time()).status == "ok 1 stored 0 failed"


def test_http_insert_naming_another_host_is_accepted_202(
    start_server: StartServer, tmp_path: Path
) -> None:
    import json
    import urllib.request

    server = start_server("--allow-private", "--http", "tcp:0:interface=127.0.0.1", public=True)
    request = urllib.request.Request(
        server.http_url("/v1/labels/app"),
        data=json.dumps({"host": "127.0.0.3", "port": 4000}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        document = json.loads(response.read())
    assert document["stored"] == []
    assert document["pending"][0]["entry"].endswith(" 127.0.0.3 4000")
