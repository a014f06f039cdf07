"""
The benchmark's baseline: the least a Twisted line server can do.

``python -m halp.bench.baseline TIMESTAMP`` listens on a free port of
127.0.0.1, prints ``baseline listening on 127.0.0.1:PORT`` and answers each
``get`` line with a fixed answer of the size and framing of HALP's (see
:func:`halp.bench.get_answer`), and each ``insert`` block, at its empty
line, with one ``success:`` line per entry and an ``ok N stored 0 failed``
status line: what HALP answers when every entry is stored.  Anything else
is answered with one ``error`` line.  When the client half-closes, the
connection is closed after the answers.  It runs until SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from halp.bench import get_answer

__all__ = ["BaselineFactory", "BaselineProtocol", "main"]


@implementer(IHalfCloseableProtocol)
class BaselineProtocol(LineOnlyReceiver):
    """One connection: every answer is written as soon as its request ends."""

    delimiter = b"\n"
    MAX_LENGTH = 1024
    transport: Any
    factory: BaselineFactory

    def __init__(self) -> None:
        self._label = b""
        self._block: list[bytes] | None = None

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        block = self._block
        if block is not None:
            if line:
                block.append(line)
                return
            prefix = b"success: " + self._label + b" "
            answer = [prefix + entry + b"\n" for entry in block]
            answer.append(b"ok %d stored 0 failed\n" % len(block))
            self.transport.writeSequence(answer)
            self._block = None
        elif line.startswith(b"get "):
            self.transport.write(self.factory.get_answer)
        elif line.startswith(b"insert "):
            self._label = line[7:].strip()
            self._block = []
        else:
            self.transport.write(b"error bad-request not a benchmark request\n")

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()


class BaselineFactory(Factory):
    """Builds :class:`BaselineProtocol` connections."""

    def __init__(self, timestamp: int) -> None:
        self.get_answer = get_answer(timestamp)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        proto = BaselineProtocol()
        proto.factory = self
        return proto


async def _serve(reactor: Any, timestamp: int) -> None:
    from twisted.internet.endpoints import serverFromString

    endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1:backlog=1024")
    port = await endpoint.listen(BaselineFactory(timestamp))
    print(f"baseline listening on 127.0.0.1:{port.getHost().port}", flush=True)
    await Deferred()  # until SIGTERM stops the reactor


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM; ``argv`` is ``[TIMESTAMP]``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit() or len(args[0]) != 10:
        sys.exit("usage: python -m halp.bench.baseline TIMESTAMP (10 digits)")
    from twisted.internet.task import react

    react(lambda reactor: Deferred.fromCoroutine(_serve(reactor, int(args[0]))))


if __name__ == "__main__":
    main()
