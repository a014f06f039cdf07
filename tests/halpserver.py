"""
Run a real ``twistd --nodaemon halp`` process and talk HALP/1 to it over TCP.

:class:`HALPServer` owns one server process (and restarts it on the same
store), and knows the port of its HTTP face when it has one (``--http``);
:class:`LibhalpServer` owns a ``tests/libhalp_server.py`` process, a server
that speaks only the 2011 libhalp form; :class:`HALPClient` is one TCP
connection to a HALP/1 server, with helpers that read whole replies (data
lines and their status line) or everything up to the server's close.
Nothing here sleeps: every wait is a blocking read with a socket timeout, a
condition variable with a deadline, or ``Popen.wait(timeout)``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence, TypeVar

__all__ = [
    "GARBAGE_SERVER",
    "GarbageServer",
    "HALPClient",
    "HALPServer",
    "LIBHALP_SERVER",
    "LibhalpServer",
    "Reply",
    "ServerClosed",
    "StartLibhalpServer",
    "StartServer",
    "TEST_BED",
    "TWISTD",
    "eventually",
    "free_port",
    "is_status",
    "run_twistd",
]

#: The ``twistd`` of the virtualenv running the tests.
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

#: The admission options of a test bed: every address accepted, nothing
#: verified, no rate or network quotas (``docs/security.md``).
TEST_BED = ("--allow-private", "--verify", "none", "--insert-rate", "0", "--group-share", "0")

#: Seconds a server may take to print its listening line.
START_TIMEOUT = 30.0
#: Seconds a server may take to exit after SIGTERM or SIGKILL.
STOP_TIMEOUT = 30.0
#: Seconds a socket read may block before the test fails.
IO_TIMEOUT = 15.0
#: Lines of server output quoted in assertion messages (the whole output is
#: attached to the report of a failed test by ``conftest.py``).
QUOTED_LINES = 60

_LISTENING = re.compile(r"HALP/1 listening on 127\.0\.0\.1:(\d+)")
#: What the server prints once its (first) HTTP face listens; group 1 is the
#: port.
_HTTP_LISTENING = re.compile(r"HTTP listening on \S+:(\d+) \(")

T = TypeVar("T")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (for servers that
    must know their own port before they start, such as ``--public-address``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def eventually(
    check: Callable[[], T | None], pace: HALPServer, timeout: float = 60.0, step: float = 0.25
) -> T:
    """
    ``check()`` once it returns something other than ``None``; between
    tries, wait for ``pace`` to log something (or ``step`` seconds), so
    that nothing polls in a busy loop.  Fails the test after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        assert time.monotonic() < deadline, f"not settled in {timeout} s:\n{pace.output_tail()}"
        pace.wait_for_more_output(step)


def is_status(line: str) -> bool:
    """Whether ``line`` (without its LF) is a HALP/1 status line."""
    return line == "ok" or line.startswith("ok ") or line.startswith("error ")


def _lines(data: bytes) -> list[str]:
    """Split what a server sent into lines, insisting on ASCII and LF endings."""
    text = data.decode("ascii")
    assert text == "" or text.endswith("\n"), f"unterminated last line in {text!r}"
    lines = text.split("\n")[:-1]
    assert not any("\r" in line for line in lines), f"CR in server output {text!r}"
    return lines


@dataclass(frozen=True)
class Reply:
    """One response: its data lines and its status line (no line endings)."""

    lines: list[str]
    status: str


#: The type of the ``start_server`` fixture: ``start_server(*args, store=None)``.
StartServer = Callable[..., "HALPServer"]

#: The type of the ``start_libhalp_server`` fixture: ``start_libhalp_server(entries)``.
StartLibhalpServer = Callable[[Mapping[str, Sequence[tuple[int, str, int]]]], "LibhalpServer"]


class ServerClosed(AssertionError):
    """The server closed the connection while an answer was expected."""


class HALPServer:
    """
    A ``twistd --nodaemon --pidfile= halp`` process listening on a free port
    of 127.0.0.1.

    :param workdir: the process's working directory.
    :param store: the ``--store`` value.
    :param args: further ``twistd halp`` options.
    :param public: run with the defaults of a public server; otherwise
        (most tests) the options of a test bed, :data:`TEST_BED`, come
        first, so that documentation addresses can be inserted from
        127.0.0.1 without verification or quotas.
    """

    #: What the process prints once it listens; group 1 is the port.
    listening: re.Pattern[str] = _LISTENING
    #: What failure reports call it.
    name = "halp server"

    def __init__(
        self,
        workdir: Path,
        store: str,
        args: Sequence[str] = (),
        port: int = 0,
        public: bool = False,
    ) -> None:
        self.workdir = workdir
        self.store = store
        self.args = list(args) if public else [*TEST_BED, *args]
        #: The port asked for: 0 for any free one.
        self.fixed_port = port
        self.port: int | None = None
        #: The port of the (first) HTTP face, when ``args`` has ``--http``.
        self.http_port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self._cond = threading.Condition()
        self._output: list[str] = []
        self._eof = True
        self._run_start = 0
        self._reader: threading.Thread | None = None

    # -- the process ------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        return [
            TWISTD,
            "--nodaemon",
            "--pidfile=",
            "halp",
            "--port",
            f"tcp:{self.fixed_port}:interface=127.0.0.1",
            "--store",
            self.store,
            *self.args,
        ]

    def start(self) -> HALPServer:
        """Start the process and wait until it says which port it got."""
        assert self.process is None, "server already running"
        self.runs += 1
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self._cond:
            self._output.append(f"=== run {self.runs}: {' '.join(self.command)}")
            self._run_start = len(self._output)
            self._eof = False
        self.process = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._read_output,
            args=(self.process.stdout,),
            name=f"halp-server-output-{self.runs}",
            daemon=True,
        )
        self._reader.start()
        self.port = self._wait_for_port(self.listening)
        if self.serves_http:
            self.http_port = self._wait_for_port(_HTTP_LISTENING)
        return self

    def _wait_for_port(self, pattern: re.Pattern[str]) -> int:
        match = self._wait_for_output(pattern, START_TIMEOUT)
        if match is None:
            self._force_stop()
            raise AssertionError(
                f"the server did not report its port ({pattern.pattern!r}) within "
                f"{START_TIMEOUT} s (exit status {self.process_status()}); "
                f"output:\n{self.output()}"
            )
        return int(match.group(1))

    @property
    def serves_http(self) -> bool:
        """Whether the server was given an HTTP face (``--http``)."""
        return any(arg == "--http" or arg.startswith("--http=") for arg in self.args)

    def http_url(self, path: str = "/") -> str:
        """The URL of ``path`` (which starts with ``/``) on the HTTP face."""
        assert self.http_port is not None, "no HTTP face running"
        return f"http://127.0.0.1:{self.http_port}{path}"

    def stop(self) -> int:
        """Stop the server gracefully (SIGTERM) and return its exit status."""
        return self._end(signal.SIGTERM)

    def kill(self) -> int:
        """Kill the server at once (SIGKILL) and return its exit status."""
        return self._end(signal.SIGKILL)

    def stop_gracefully(self) -> None:
        """Stop the server with SIGTERM and check that it shut down cleanly:
        twistd ends its main loop, then exits by the signal it got (or 0)."""
        status = self.stop()
        output = self.run_output()
        assert status in (0, -signal.SIGTERM), f"exit status {status} on SIGTERM:\n{output}"
        assert "Server Shut Down." in output, f"no clean shutdown:\n{output}"
        assert "Traceback" not in output, output

    def restart(self) -> HALPServer:
        """Stop the server gracefully and start it again on the same store."""
        self.stop_gracefully()
        return self.start()

    def close(self) -> None:
        """Make sure the process is gone (for fixture teardown)."""
        if self.process is not None:
            self._force_stop()

    def process_status(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def _end(self, sig: signal.Signals) -> int:
        process = self.process
        assert process is not None, "server not running"
        if process.poll() is None:
            process.send_signal(sig)
        try:
            status = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._force_stop()
            raise AssertionError(
                f"the server did not exit within {STOP_TIMEOUT} s of {sig.name}; "
                f"output:\n{self.output()}"
            ) from None
        self._finish()
        return status

    def _force_stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        self._finish()

    def _finish(self) -> None:
        process, self.process, self.port, self.http_port = self.process, None, None, None
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT)
            self._reader = None
        if process is not None and process.stdout is not None:
            process.stdout.close()

    # -- its output -----------------------------------------------------------

    def _read_output(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self._output.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _wait_for_output(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """The first match of ``pattern`` in this run's output, waiting for it
        until the deadline or the end of the output."""
        deadline = time.monotonic() + timeout
        seen = self._run_start
        with self._cond:
            while True:
                for line in self._output[seen:]:
                    match = pattern.search(line)
                    if match is not None:
                        return match
                seen = len(self._output)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def wait_for_lines(
        self, pattern: str | re.Pattern[str], count: int = 1, timeout: float = IO_TIMEOUT
    ) -> list[re.Match[str]]:
        """
        The matches of ``pattern`` (searched in each line) in this run's
        output, once there are at least ``count``; fails the test if there
        are fewer when ``timeout`` runs out or the output ends.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [
                    m for line in self._output[self._run_start :] if (m := regex.search(line))
                ]
                remaining = deadline - time.monotonic()
                if len(matches) >= count or self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        assert len(matches) >= count, (
            f"{len(matches)} lines of {self.name} output match {regex.pattern!r}, "
            f"expected at least {count}; output:\n{self.output_tail()}"
        )
        return matches

    def wait_for_more_output(self, timeout: float) -> bool:
        """
        Block until this server prints another line, or ``timeout`` runs
        out; whether it printed.  What "eventually" checks pace themselves
        with: state changes show in the log, so a check is not repeated in
        a busy loop, and never waits long for a change that was not logged.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = len(self._output)
            while len(self._output) == seen and not self._eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return len(self._output) > seen

    def output(self) -> str:
        """Everything every run of this server printed, with run markers."""
        with self._cond:
            return "\n".join(self._output)

    def run_output(self) -> str:
        """What the current (or last) run printed."""
        with self._cond:
            return "\n".join(self._output[self._run_start :])

    def output_tail(self) -> str:
        with self._cond:
            return "\n".join(self._output[-QUOTED_LINES:])

    # -- talking to it -------------------------------------------------------------

    def connect(self, source: str | None = None) -> HALPClient:
        """A connection, from the loopback address ``source`` if given."""
        assert self.port is not None, "server not running"
        sock = socket.create_connection(
            ("127.0.0.1", self.port),
            timeout=IO_TIMEOUT,
            source_address=(source, 0) if source else None,
        )
        return HALPClient(sock, self)

    def request(self, data: bytes, replies: int = 1) -> list[str]:
        """Send ``data`` on a new connection and return the lines of the
        first ``replies`` replies (each ends with its status line)."""
        with self.connect() as client:
            return client.request(data, replies)

    def reply(self, data: bytes) -> Reply:
        """Send one request on a new connection and return its reply."""
        with self.connect() as client:
            return client.reply(data)


#: The standalone libhalp-only server script.
LIBHALP_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libhalp_server.py")


class LibhalpServer(HALPServer):
    """
    A ``tests/libhalp_server.py`` process: a server that speaks only the
    2011 libhalp form (:class:`halp.testing.LibhalpServerFactory`), on a
    free port of 127.0.0.1, pre-loaded with ``entries``.

    :param entries: label -> ``(timestamp, host, port)`` triples.
    """

    listening = re.compile(r"libhalp listening on 127\.0\.0\.1:(\d+)")
    name = "libhalp server"

    def __init__(
        self, workdir: Path, entries: Mapping[str, Sequence[tuple[int, str, int]]]
    ) -> None:
        super().__init__(workdir, store="")
        self.port_file = workdir / f"libhalp-{id(self)}.port"
        self.entries_file = workdir / f"libhalp-{id(self)}.json"
        self.entries_file.write_text(
            json.dumps({label: [list(e) for e in rows] for label, rows in entries.items()}),
            encoding="utf-8",
        )

    @property
    def command(self) -> list[str]:
        return [sys.executable, LIBHALP_SERVER, str(self.port_file), str(self.entries_file)]

    def start(self) -> LibhalpServer:
        super().start()
        written = self.port_file.read_text(encoding="ascii").strip()
        assert written == str(self.port), f"port file says {written!r}, output {self.port}"
        return self

    def queries(self, count: int) -> list[str]:
        """
        The requests of this run, as text, once at least ``count`` were
        answered (or would have crashed the 2011 server).
        """
        self.wait_for_lines(r"^(answer: |crash$)", count)
        return [ast.literal_eval(m.group(1)) for m in self.wait_for_lines(r"^query: (.*)$", count)]

    def crashes(self) -> int:
        """Requests of this run that would have crashed the 2011 server."""
        return self.run_output().splitlines().count("crash")


#: The standalone server that answers hello well and everything else with garbage.
GARBAGE_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "garbage_server.py")


class GarbageServer(HALPServer):
    """
    A ``tests/garbage_server.py`` process: it passes a federation test
    (``hello``) and answers every other request with garbage.
    """

    listening = re.compile(r"garbage listening on 127\.0\.0\.1:(\d+)")
    name = "garbage server"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, store="")

    @property
    def command(self) -> list[str]:
        return [sys.executable, GARBAGE_SERVER]

    def connections(self) -> int:
        """Connections accepted by this run so far."""
        return self.run_output().splitlines().count("connection")


class HALPClient:
    """One TCP connection to a :class:`HALPServer`."""

    def __init__(self, sock: socket.socket, server: HALPServer) -> None:
        self.sock = sock
        self.server = server
        self._buffer = bytearray()
        self._received: list[str] = []
        self._closed_by_peer = False

    def __enter__(self) -> HALPClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        """Half-close: the server sees the end of its input."""
        self.sock.shutdown(socket.SHUT_WR)

    def _context(self) -> str:
        received = "\n".join(self._received[-QUOTED_LINES:])
        return (
            f"\n--- last lines received ---\n{received}"
            f"\n--- unterminated bytes ---\n{bytes(self._buffer)!r}"
            f"\n--- server output (tail) ---\n{self.server.output_tail()}"
        )

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(
                f"the server sent nothing for {IO_TIMEOUT} s" + self._context()
            ) from None
        except OSError as e:
            raise AssertionError(f"receiving failed: {e!r}" + self._context()) from None

    def read_line(self) -> str:
        """The next line the server sends, without its LF."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                (line,) = _lines(raw + b"\n")
                self._received.append(line)
                return line
            chunk = self._recv()
            if not chunk:
                self._closed_by_peer = True
                raise ServerClosed("the server closed the connection" + self._context())
            self._buffer += chunk

    def read_reply(self) -> Reply:
        """Data lines up to and including the next status line."""
        lines: list[str] = []
        while True:
            line = self.read_line()
            if is_status(line):
                return Reply(lines, line)
            lines.append(line)

    def replies(self, data: bytes, count: int) -> list[Reply]:
        """Send ``data`` and read ``count`` replies."""
        self.send(data)
        return [self.read_reply() for _ in range(count)]

    def reply(self, data: bytes) -> Reply:
        """Send one request and read its reply."""
        return self.replies(data, 1)[0]

    def request(self, data: bytes, replies: int = 1) -> list[str]:
        """Send ``data`` and return the lines of ``replies`` replies (data
        lines and status lines), without line endings."""
        lines: list[str] = []
        for reply in self.replies(data, replies):
            lines.extend(reply.lines)
            lines.append(reply.status)
        return lines

    def read_until_close(self) -> list[str]:
        """Every line the server sends until it closes the connection."""
        while not self._closed_by_peer:
            chunk = self._recv()
            if chunk:
                self._buffer += chunk
            else:
                self._closed_by_peer = True
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            lines = _lines(data)
        except (AssertionError, UnicodeDecodeError) as e:
            raise AssertionError(f"{e}" + self._context()) from None
        self._received.extend(lines)
        return lines


def run_twistd(args: Sequence[str], cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``twistd --nodaemon --pidfile= halp ARGS`` to completion (for
    option errors), with stderr merged into stdout."""
    return subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", "halp", "--port", "tcp:0:interface=127.0.0.1", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


#: The checkout holding these tests' ``halp``.
ROOT = str(Path(__file__).resolve().parent.parent)


def run_module(
    module: str, *args: str, cwd: Path, timeout: float, **env: str
) -> subprocess.CompletedProcess[str]:
    """
    Run ``python -m MODULE ARGS`` with this checkout's ``halp`` first on
    the path (and ``env`` added to the environment) to completion, its
    output captured.
    """
    path = os.environ.get("PYTHONPATH")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=dict(
            os.environ, PYTHONPATH=ROOT if not path else f"{ROOT}{os.pathsep}{path}", **env
        ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
