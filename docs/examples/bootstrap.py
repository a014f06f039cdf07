"""Find peers for "myapp/v2" through HALP: python bootstrap.py HALP_SERVER"""
import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from halp.client import HALPClient, open_cache


async def main(reactor, seed, label="myapp/v2"):
    client = HALPClient(reactor, open_cache(reactor, "halp-cache"), [seed], close_cache=True)
    await client.announce(label, "127.0.0.1", 4000)  # where this program listens
    for peer in await client.lookup(label):  # newest first; the cache if offline
        print(peer.host, peer.port)
    await client.close()


react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1])))
