"""
A server that passes a HALP federation test and then answers garbage, for
the end-to-end tests of federation::

    python tests/garbage_server.py

It listens on a free port of 127.0.0.1 and prints
``garbage listening on 127.0.0.1:PORT``.  To ``hello`` it answers like a
HALP/1 server that federates; to any other request, one line far longer
than a HALP answer line may be.  It prints ``connection`` for every
connection it accepts, and runs until SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol

HELLO = (
    b"protocol HALP/1\n"
    b"server garbage/0\n"
    b"node 0badc0de0badc0de\n"
    b"features changes push stats peers\n"
    b"ok\n"
)
GARBAGE = b"\x00\xff garbage " * 4000 + b"\n"


class Garbage(Protocol):
    def connectionMade(self) -> None:
        print("connection", flush=True)
        self._buffer = b""
        self._answered = False

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip() == b"hello":
                self.transport.write(HELLO)  # type: ignore[union-attr]
            elif not self._answered:
                self._answered = True
                self.transport.write(GARBAGE)  # type: ignore[union-attr]


async def serve(reactor: Any) -> None:
    endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    listening = await endpoint.listen(Factory.forProtocol(Garbage))
    print(f"garbage listening on 127.0.0.1:{listening.getHost().port}", flush=True)
    await Deferred()  # until SIGTERM stops the reactor


def main(argv: list[str]) -> NoReturn:
    if len(argv) != 1:
        sys.exit(f"usage: {argv[0]}")
    from twisted.internet.task import react

    react(lambda reactor: Deferred.fromCoroutine(serve(reactor)))


if __name__ == "__main__":
    main(sys.argv)
