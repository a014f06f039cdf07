"""
A real ``redis-server`` for tests: started on a free loopback port in a
temporary directory, stopped (or killed, or paused) on demand.

Tests that need one call :func:`require_redis` first: without the binary they
are skipped with a message that says how to install it, unless
``HALP_REQUIRE_REDIS=1`` (set by ``.ci/run``) makes them fail instead.
Nothing here sleeps: waiting for the server is a blocking connect and
``PING`` with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Callable, Sequence

__all__ = ["REDIS_SERVER", "RedisServer", "require_redis"]

#: The binary, if this machine has one.
REDIS_SERVER = shutil.which("redis-server") or shutil.which("valkey-server")

#: Seconds a redis-server may take to answer its first PING.
START_TIMEOUT = 20.0

INSTALL_HINT = (
    "redis-server not found: install it (Debian/Ubuntu: apt install redis-server;"
    " macOS: brew install redis) to run the Redis store tests"
)


def require_redis() -> str:
    """
    The ``redis-server`` binary, or raise :class:`unittest.SkipTest` (or,
    with ``HALP_REQUIRE_REDIS=1``, :class:`RuntimeError`).
    """
    if REDIS_SERVER is None:
        if os.environ.get("HALP_REQUIRE_REDIS") == "1":
            raise RuntimeError(INSTALL_HINT)
        from unittest import SkipTest

        raise SkipTest(INSTALL_HINT)
    return REDIS_SERVER


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """
    One ``redis-server`` process on ``127.0.0.1``.

    :param persistence: ``"aof"`` (append-only file, fsync always: what the
        deployment guide recommends), ``"rdb"`` (snapshots only) or
        ``"none"``.
    :param extra: more ``redis-server`` arguments, such as
        ``["--requirepass", "secret"]``.
    """

    def __init__(self, persistence: str = "aof", extra: Sequence[str] = ()) -> None:
        self.binary = require_redis()
        self.directory = tempfile.mkdtemp(prefix="halp-redis-")
        self.port = _free_port()
        self.persistence = persistence
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None
        #: Whether the server ever answered (a restart keeps its port).
        self.started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persist = {
            "aof": ["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            "rdb": ["--appendonly", "no", "--save", "3600 1"],
            "none": ["--appendonly", "no", "--save", ""],
        }[self.persistence]
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", self.directory,
            "--daemonize", "no",
            "--logfile", os.path.join(self.directory, "redis.log"),
            *persist,
            *self.extra,
        ]

    def start(self) -> RedisServer:
        """
        Start (or restart, on the same port and data) and wait for PING.  A
        first start that fails (another process took the port after it was
        found free) is tried again on another port.
        """
        for attempt in range(3):
            try:
                return self._start()
            except RuntimeError:
                if self.started or attempt == 2:
                    raise
                self.port = _free_port()
        raise AssertionError("unreachable")

    def _start(self) -> RedisServer:
        with open(os.path.join(self.directory, "redis.out"), "ab") as out:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at once:\n{self.log()}")
            if self.ping(timeout=max(0.05, min(1.0, deadline - time.monotonic()))):
                self.started = True
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING:\n{self.log()}")

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the server answers PING now (``-NOAUTH`` counts: it is up)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def call(self, *args: str) -> bytes:
        """Send one command (no password) and return the raw reply."""
        command = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(command)
            return sock.recv(1 << 20)

    def wait_for(self, condition: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Ask ``condition`` until it holds (each time a round trip to the
        server), or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server never got ready:\n{self.log()}")
            self.ping()

    def kill(self) -> None:
        """SIGKILL: the server dies without saving anything more."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    def log(self) -> str:
        """The tail of the server's log and of what it printed."""
        text = []
        for name in ("redis.out", "redis.log"):
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8", errors="replace") as f:
                    text.append(f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(text) or "(no log)"

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
